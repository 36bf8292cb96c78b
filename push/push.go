// Package push is the cross-platform model of a push notification and
// the interface its senders share: push/apns (Apple, over
// github.com/sideshow/apns2), push/fcm (Firebase Cloud Messaging, over
// HTTP v1 over net/http) and push/webpush (RFC 8030/8291/8292, over
// github.com/SherClockHolmes/webpush-go). push/pushtest has fake servers
// for all three that the real clients talk to, for host apps' tests.
//
// Every provider answer that is not a success is an error: a *Error with
// the provider's status and reason that wraps one of the sentinels below,
// so callers branch with errors.Is and read details with errors.As:
//
//	_, err := sender.Send(ctx, msg)
//	switch {
//	case errors.Is(err, push.ErrUnregistered):  // forget the token
//	case push.IsRetryable(err):                // retry later (err carries RetryAfter)
//	case err != nil:                           // permanent for this message
//	}
package push

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"time"
)

// Provider names a push service.
type Provider string

// The providers herald speaks to.
const (
	APNs    Provider = "apns"
	FCM     Provider = "fcm"
	WebPush Provider = "webpush"
)

// Priority is how urgently the provider should deliver.
type Priority int

// Priorities. The zero value means high for visible notifications and
// normal for silent ones.
const (
	PriorityDefault Priority = iota
	PriorityLow              // APNs 1, FCM normal, Web Push low
	PriorityNormal           // APNs 5, FCM normal, Web Push normal
	PriorityHigh             // APNs 10, FCM high, Web Push high
)

// InterruptionLevel is iOS's interruption level (aps.interruption-level).
type InterruptionLevel string

// Interruption levels.
const (
	InterruptionPassive       InterruptionLevel = "passive"
	InterruptionActive        InterruptionLevel = "active"
	InterruptionTimeSensitive InterruptionLevel = "time-sensitive"
	InterruptionCritical      InterruptionLevel = "critical"
)

// Notification is what the user sees (or, silent, what the app receives),
// described once for every platform. Overrides adjust one platform.
type Notification struct {
	Title    string
	Subtitle string // iOS only
	Body     string
	Badge    *int // nil leaves the badge alone; 0 clears it
	Sound    string
	// Data is delivered to the app as key/value strings (FCM requires strings).
	Data     map[string]string
	Category string // iOS category / Android click action
	ThreadID string // iOS thread / Android tag
	ImageURL string
	// URL opens when the user taps (Web Push link, FCM web link, "url" in
	// APNs custom data).
	URL string
	// CollapseKey makes a later notification with the same key replace an
	// earlier one (apns-collapse-id, FCM collapse_key, Web Push Topic).
	// Empty: derived from Message.IdempotencyKey when there is one.
	CollapseKey string
	Priority    Priority
	// TTL is how long the provider keeps trying; Expiry is the same as an
	// absolute time and wins when set. Both zero: the provider's default
	// (Web Push: 4 weeks, since a zero TTL there means "drop if offline").
	TTL               time.Duration
	Expiry            time.Time
	Silent            bool // background / content-available, no alert
	MutableContent    bool // iOS notification service extension
	InterruptionLevel InterruptionLevel

	APNs    *APNsOverride
	FCM     *FCMOverride
	WebPush *WebPushOverride
}

// APNsOverride adjusts the APNs request.
type APNsOverride struct {
	Topic    string // default: the client's topic
	PushType string // alert (default), background, voip, liveactivity, complication, fileprovider, mdm, location, pushtotalk
	Priority int    // 1, 5 or 10
	// Custom keys merged into the payload beside "aps".
	Custom map[string]any
	// RelevanceScore, ContentState etc. can be set through Custom.
}

// FCMOverride adjusts the FCM message.
type FCMOverride struct {
	AndroidChannelID string
	// AndroidPriority "high" or "normal".
	AndroidPriority string
	// Data is merged over Notification.Data.
	Data map[string]string
}

// WebPushOverride adjusts the Web Push request.
type WebPushOverride struct {
	Urgency string // very-low, low, normal, high
	Icon    string
	// Actions are passed through to the service worker's payload.
	Actions []map[string]string
}

// Message is one notification to one recipient.
type Message struct {
	// Token addresses the device: an APNs device token (hex), an FCM
	// registration token, or a Web Push subscription (its JSON, as the
	// browser's PushSubscription.toJSON() gives it).
	Token string
	// Topic and Condition address FCM topics instead of a token.
	Topic     string
	Condition string
	// IdempotencyKey identifies the message across retries; it derives the
	// collapse identifiers when Notification.CollapseKey is empty, so a
	// repeated send replaces the first notification instead of doubling it.
	IdempotencyKey string
	Notification   Notification
}

// Receipt is a provider's acceptance of a message.
type Receipt struct {
	Provider Provider
	// ID is the provider's identifier: apns-id, the FCM message name, or
	// the Web Push message Location.
	ID string
	At time.Time
}

// Sender sends one message. Implementations are safe for concurrent use.
// A message the provider did not accept returns an error (a *Error
// wrapping a sentinel of this package), never a Receipt with a reason.
type Sender interface {
	Send(ctx context.Context, m *Message) (Receipt, error)
}

// Validator is a Sender that can check a message without sending it, as
// its Send would before any network call. The clients of push/apns,
// push/fcm and push/webpush implement it.
type Validator interface {
	Validate(m *Message) error
}

// Gone tells the host that a recipient no longer exists for a provider, so
// it can prune the token or subscription.
type Gone struct {
	Provider Provider
	// Token is the full token or subscription endpoint: the hook is the one
	// place it is handed back, so the host can find it. Do not log it.
	Token  string
	Reason string
	// At is when the provider says the token stopped being valid (APNs
	// 410's timestamp); zero when the provider does not say. Keep a token
	// that was registered again after At.
	At time.Time
}

// GoneFunc is called when a provider reports a recipient gone. It runs on
// the sending goroutine: keep it fast.
type GoneFunc func(ctx context.Context, g Gone)

// CollapseID derives a collapse identifier from an idempotency key: 22
// base64url characters (the first 128 bits of its SHA-256), which fits APNs'
// 64-byte collapse ID, FCM's collapse key and Web Push's 32-character Topic.
func CollapseID(idempotencyKey string) string {
	sum := sha256.Sum256([]byte(idempotencyKey))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// CollapseKeyFor returns the collapse identifier for m: its
// Notification.CollapseKey, or one derived from its IdempotencyKey.
func CollapseKeyFor(m *Message) string {
	if m.Notification.CollapseKey != "" {
		return m.Notification.CollapseKey
	}
	if m.IdempotencyKey != "" {
		return CollapseID(m.IdempotencyKey)
	}
	return ""
}

// TopicFor turns a collapse key into a Web Push Topic (at most 32
// characters of the base64url alphabet, RFC 8030 §5.4): the key itself when
// it qualifies, else its CollapseID.
func TopicFor(collapse string) string {
	if collapse == "" {
		return ""
	}
	if len(collapse) <= 32 {
		ok := true
		for _, r := range collapse {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				ok = false
				break
			}
		}
		if ok {
			return collapse
		}
	}
	return CollapseID(collapse)
}

// ExpiryAt returns when n stops mattering, from Expiry or now+TTL; zero
// when neither is set.
func (n *Notification) ExpiryAt(now time.Time) time.Time {
	if !n.Expiry.IsZero() {
		return n.Expiry
	}
	if n.TTL > 0 {
		return now.Add(n.TTL)
	}
	return time.Time{}
}
