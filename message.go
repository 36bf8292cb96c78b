package herald

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/sms"
)

// Channel is how a message reaches its recipient.
type Channel string

// Channels.
const (
	Push  Channel = "push"
	Email Channel = "email"
	SMS   Channel = "sms"
	// InApp messages wait in the store until the user's app or page asks
	// what to show (Dispatcher.ShowInApp); eligibility and caps are decided
	// then, at display time.
	InApp Channel = "inapp"
)

// Lane returns the queue lane of a message: one per class and route,
// "transactional.apns", "campaign.email", ... (routes: apns, fcm, webpush,
// email, sms). Transactional messages never wait behind a campaign's
// backlog, and a provider that fails or hangs holds only its own lanes'
// workers: email keeps flowing while APNs is down.
func Lane(transactional bool, route string) string {
	if transactional {
		return "transactional." + route
	}
	return "campaign." + route
}

// route names the provider a message goes through: "apns", "email", ...,
// or "apns@<app>" for one of Config.Apps.
func (m *Message) route() string {
	r := ""
	switch m.Channel() {
	case Push:
		r = string(m.Push.Provider)
	case Email:
		r = "email"
	case SMS:
		r = "sms"
	default:
		return ""
	}
	if m.App != "" {
		r += "@" + m.App
	}
	return r
}

// JobKind is the retry job kind of a message.
const JobKind = "herald.send"

// Errors of Send, checked with errors.Is.
var (
	// ErrInvalid: the message was refused at the door (a *FieldError says
	// which field and why). Nothing was stored; do not retry as is.
	ErrInvalid = errors.New("herald: invalid message")
	// ErrNotAccepted: the store could not make the message durable, so it
	// was not accepted. Retrying with the same idempotency key is safe.
	ErrNotAccepted = errors.New("herald: not accepted; retry with the same idempotency key")
	// ErrConflict: the idempotency key was already used for a different
	// message (another body, recipient or channel). Nothing was stored; a
	// service answers it as 409. Use a new key for new content.
	ErrConflict = errors.New("herald: idempotency key already used for a different message")
)

// Limits of the door.
const (
	// DefaultMinTTL is the shortest TTL Send takes unless Config.MinTTL
	// says otherwise: a message that expires sooner could hardly reach any
	// provider, only be recorded as expired.
	DefaultMinTTL = time.Second
	// DefaultMaxTTL is the longest TTL Send takes unless Config.MaxTTL
	// says otherwise: 28 days, what FCM and the Web Push services keep a
	// message at most.
	DefaultMaxTTL = 28 * 24 * time.Hour
	// DefaultMaxSchedule is how far ahead SendAt may be unless
	// Config.MaxSchedule says otherwise: 366 days.
	DefaultMaxSchedule = 366 * 24 * time.Hour
)

// FieldError names the field of a refused message. It wraps ErrInvalid
// and, when a channel's validation refused it, that channel's error.
type FieldError struct {
	Field  string
	Reason string
	Err    error // the channel's own error (a *push.Error, *email.Error, ...), if any
}

func (e *FieldError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("herald: invalid message: %s: %s: %v", e.Field, e.Reason, e.Err)
	}
	return fmt.Sprintf("herald: invalid message: %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalid and the channel's error.
func (e *FieldError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// ConflictError is Send's answer to an idempotency key already used for
// a different message. It wraps ErrConflict. The key itself is not
// repeated (the caller has it, and logs need not).
type ConflictError struct {
	Field string // "IdempotencyKey", or "[i].IdempotencyKey" in a batch
	ID    int64  // the first message's job ID, when the store knows it
}

func (e *ConflictError) Error() string {
	return "herald: " + e.Field + ": already used for a different message (nothing was stored; use a new key for new content)"
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Message is one message to one recipient on one channel: set exactly one
// of Push, Email, SMS and InApp (or only Inbox).
type Message struct {
	// IdempotencyKey identifies the message. A second Send with the same
	// key (within the queue's KeyRetention) returns the first message's
	// ID and sends nothing, so a caller may retry any failed call. It
	// also derives the collapse identifiers and the email Message-ID, so a
	// repeat after a crash replaces the first notification instead of
	// doubling it. Required.
	IdempotencyKey string

	// User is the recipient's ID in the host's terms (not an address): the
	// subject of capping and of tracking events. Required for capping.
	User string
	// Device is the recipient's device, for per-device caps.
	Device string
	// TimeZone is the user's IANA time zone, for calendar caps and quiet
	// hours. Default: the limiter's default (UTC).
	TimeZone string
	// Transactional messages (receipts, codes, alerts the user asked for)
	// run in their own lane and are exempt from caps unless a rule
	// includes them.
	Transactional bool
	Campaign      string
	Automation    string
	Labels        []string
	// App picks the senders of one of Config.Apps for the message's
	// channel (another APNs bundle ID and key, another Firebase project,
	// another SMTP sender); empty: the default senders. An app has its
	// own lanes and circuit.
	App string `json:",omitempty"`
	// Category is what kind of message this is in the user's eyes
	// ("promotions", "order-updates"): the topic a user opts out of, and
	// the one an email's one-click unsubscribe link names.
	Category string

	// TTL is how long the message stays worth sending: not sent by then,
	// it is dropped and recorded as expired, never delivered late. Zero:
	// Config.DefaultTTL.
	TTL time.Duration
	// SendAt delays the first attempt. Zero: now.
	SendAt time.Time

	Push  *PushMessage   `json:",omitempty"`
	Email *email.Message `json:",omitempty"`
	SMS   *sms.Message   `json:",omitempty"`
	// InApp is a message shown inside the user's app or page when its
	// client next asks (inbox.Handler's GET inapp), if it is still
	// eligible then: not expired (SendAt+TTL), not opted out, within the
	// caps (the display counts), and the host's predicate content with
	// the user's attributes at that moment. Written in the same durable
	// write that accepts it, like an Inbox item. User is required.
	InApp *InAppMessage `json:",omitempty"`
	// Inbox, when set, also puts the message in the user's Inbox
	// (Config.Inbox), written in the same durable write that accepts it:
	// a provider or tracking outage, or a crash, never leaves the Inbox
	// without it. A message with Inbox and no channel is Inbox-only.
	Inbox *InboxItem `json:",omitempty"`
}

// InboxItem is what a message shows in the Inbox.
type InboxItem struct {
	Title, Body string
	Data        map[string]string
	// Expires removes the item; zero: Config.InboxRetention from now.
	Expires time.Time
}

// InAppMessage is what an in-app message shows; the host's client
// renders it (Data carries its layout, image, buttons, deep links).
type InAppMessage struct {
	Title, Body string
	Data        map[string]string `json:",omitempty"`
}

// PushMessage is a push notification and the provider that carries it.
type PushMessage struct {
	Provider push.Provider
	push.Message
}

// Channel returns the message's channel, or "" when not exactly one is set.
func (m *Message) Channel() Channel {
	var c Channel
	n := 0
	if m.Push != nil {
		c, n = Push, n+1
	}
	if m.Email != nil {
		c, n = Email, n+1
	}
	if m.SMS != nil {
		c, n = SMS, n+1
	}
	if m.InApp != nil {
		c, n = InApp, n+1
	}
	if n != 1 {
		return ""
	}
	return c
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// subject is m as capping sees it.
func (m *Message) subject() capping.Subject {
	return capping.Subject{
		User: m.User, Device: m.Device, TimeZone: m.TimeZone, Channel: string(m.Channel()),
		Labels: m.Labels, Automation: m.Automation, Transactional: m.Transactional,
	}
}

// detachable reports whether detached can copy m.
func (m *Message) detachable() bool {
	if m.Email != nil || m.InApp != nil || m.Inbox != nil {
		return false
	}
	if p := m.Push; p != nil {
		n := &p.Notification
		if n.APNs != nil && n.APNs.Custom != nil || n.WebPush != nil && n.WebPush.Actions != nil {
			return false
		}
	}
	return true
}

// detached returns a copy of m that shares no memory with the caller's
// (Send may not keep the caller's maps and slices), for the queue to hand
// to the worker as Job.Decoded instead of a JSON round trip. Messages with
// parts it does not copy (free-form APNs custom values, Web Push actions,
// email, in-app, Inbox) return false and are decoded from the payload.
func (m *Message) detached() (*Message, bool) {
	if !m.detachable() {
		return nil, false
	}
	c := *m
	c.Labels = slices.Clone(m.Labels)
	if m.Push != nil {
		p := *m.Push
		n := &p.Notification
		n.Data = maps.Clone(n.Data)
		if n.Badge != nil {
			b := *n.Badge
			n.Badge = &b
		}
		if n.APNs != nil {
			a := *n.APNs
			n.APNs = &a
		}
		if n.FCM != nil {
			f := *n.FCM
			f.Data = maps.Clone(f.Data)
			n.FCM = &f
		}
		if n.WebPush != nil {
			w := *n.WebPush
			n.WebPush = &w
		}
		c.Push = &p
	}
	if m.SMS != nil {
		s := *m.SMS
		c.SMS = &s
	}
	return &c, true
}
