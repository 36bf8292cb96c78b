package push

import (
	"errors"
	"strings"
	"time"

	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/internal/redact"
)

// The classes of failure, checked with errors.Is. Each provider client maps
// its provider's answers onto these once, in its own package. Each wraps
// one of package delivery's classes (errors.Is(err, delivery.ErrGone)
// holds for ErrUnregistered, on every channel alike).
var (
	// ErrUnregistered: the recipient is gone (APNs 410, FCM UNREGISTERED,
	// Web Push 404/410). Forget the token; never retry.
	ErrUnregistered = delivery.Kind("push: recipient unregistered", delivery.ErrGone)
	// ErrInvalidToken: the token or subscription is malformed or belongs to
	// another app or environment. Refused before any network call when it
	// can be seen locally. Never retry.
	ErrInvalidToken = delivery.Kind("push: invalid token", delivery.ErrInvalidRecipient)
	// ErrPayloadTooLarge: the notification is over the provider's limit.
	// Refused before any network call. Never retry as is.
	ErrPayloadTooLarge = delivery.Kind("push: payload too large", delivery.ErrTooLarge)
	// ErrInvalidMessage: the provider (or local validation) refused the
	// message itself: missing topic, bad headers, bad priority. Never
	// retry as is.
	ErrInvalidMessage = delivery.Kind("push: invalid message", delivery.ErrInvalidMessage)
	// ErrRateLimited: too many requests (429). Retry after RetryAfter.
	ErrRateLimited = delivery.Kind("push: rate limited", delivery.ErrRateLimited)
	// ErrUnavailable: the provider failed or could not be reached (5xx,
	// network errors, timeouts). Retry with backoff.
	ErrUnavailable = delivery.Kind("push: provider unavailable", delivery.ErrUnavailable)
	// ErrAuth: the provider refused our credentials (APNs 403, FCM
	// THIRD_PARTY_AUTH_ERROR, VAPID 401/403). A configuration error: pause
	// the channel and fix the credentials; the message itself may be kept.
	ErrAuth = delivery.Kind("push: authentication refused", delivery.ErrAuth)
	// ErrForbiddenEndpoint: a Web Push endpoint is not an allowed push
	// service, or resolves to a private address (SSRF guard).
	ErrForbiddenEndpoint = delivery.Kind("push: endpoint not allowed", delivery.ErrForbidden)
)

// Error is a provider's refusal, or a local one before the network. It
// wraps one of the sentinels (Kind).
type Error struct {
	Provider Provider
	Kind     error  // one of the package's sentinels
	Status   int    // HTTP status; 0 when refused locally or for network errors
	Reason   string // the provider's reason code (APNs reason, FCM error code, ...)
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Timestamp is APNs 410's: when the token stopped being valid.
	Timestamp time.Time
	// Token is the recipient, masked (see MaskToken).
	Token string
	// Err is the underlying error (network, library), if any. Its text
	// never includes tokens or payloads.
	Err error
}

func (e *Error) Error() string {
	return delivery.Format("push: "+string(e.Provider)+": "+strings.TrimPrefix(e.Kind.Error(), "push: "), e.Detail(), e.Err)
}

// Detail implements delivery.Detailer.
func (e *Error) Detail() delivery.Detail {
	return delivery.Detail{Channel: "push", Provider: string(e.Provider), Status: e.Status, Code: e.Reason, Recipient: e.Token,
		RetryAfter: e.RetryAfter, Local: e.Status == 0 && e.Err == nil}
}

// Unwrap returns the class sentinel and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// RetryAfterHint returns RetryAfter, so the retry queue waits as the
// provider asked (see retry.RetryAfter).
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

// AboutMessage reports whether the refusal is about this message (its
// token, its content, its headers) rather than the provider being
// unreachable, overloaded or refusing our credentials: such a refusal
// must not count toward a circuit breaker's view of the provider.
func (e *Error) AboutMessage() bool { return delivery.AboutMessage(e) }

// Retryable reports whether sending the same message later may succeed.
func (e *Error) Retryable() bool { return delivery.Of(e.Kind).Retryable() }

// IsRetryable reports whether err is a failure worth retrying: a push
// error of a retryable class, or an error that is no push error at all (a
// context deadline, say). It is false for nil.
func IsRetryable(err error) bool { return delivery.Retryable(err) }

// IsRecipientGone reports whether err says the recipient no longer exists.
func IsRecipientGone(err error) bool { return errors.Is(err, ErrUnregistered) }

// MaskToken shortens a token for logs and errors: its first and last four
// characters and its length. Short tokens are fully masked.
func MaskToken(tok string) string { return redact.Token(tok) }

// ParseRetryAfter reads a Retry-After header value: delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3), relative to now. It returns 0 for an empty,
// malformed or past value.
func ParseRetryAfter(v string, now time.Time) time.Duration { return redact.RetryAfter(v, now) }
