// Package delivery is the one set of outcome classes every channel shares
// (push, email, sms, and the channels to come), and the one table that
// says what each class means to a sender: retry or not, is the provider
// down, is the recipient gone, are our credentials refused.
//
// Each channel names its own sentinels (push.ErrUnregistered,
// email.ErrRecipientGone, sms.ErrRecipientGone, ...) made with Kind, so
// errors.Is works on both levels:
//
//	errors.Is(err, push.ErrUnregistered) // the channel's own words
//	errors.Is(err, delivery.ErrGone)     // any channel's recipient gone
//
// and each channel's error type gives its provider's details through
// Detailer. A dispatcher classifies every channel through Of, AboutMessage
// and Answered, with no switch per channel: a new channel plugs in by
// making its sentinels with Kind and its error a Detailer.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Class is an outcome class. The classes are the package's Err values;
// compare with errors.Is, or read the traits of Of(err).
type Class struct {
	name         string
	retryable    bool // sending the same message later may succeed
	providerDown bool // the provider, not the message, is the problem
	gone         bool // the recipient no longer exists
	auth         bool // our credentials (or trust in the provider) are refused
}

func (c *Class) Error() string { return "delivery: " + strings.ReplaceAll(c.name, "_", " ") }

// Name is the class's name in tracking events and metrics:
// "recipient_gone", "rate_limited", ...
func (c *Class) Name() string { return c.name }

// Retryable reports whether sending the same message later may succeed.
func (c *Class) Retryable() bool { return c.retryable }

// ProviderDown reports whether the class says the provider (its
// availability, its rate limit, its view of our credentials) is the
// problem, not the message. Only such outcomes count toward a circuit.
func (c *Class) ProviderDown() bool { return c.providerDown }

// Gone reports whether the recipient no longer exists: suppress it.
func (c *Class) Gone() bool { return c.gone }

// Auth reports whether our credentials were refused (or the provider's
// certificate not trusted): a configuration error only a person fixes.
func (c *Class) Auth() bool { return c.auth }

// The classes.
var (
	// ErrGone: the recipient is gone (APNs 410, FCM UNREGISTERED, Web Push
	// 404/410, SMTP 5.1.1, Twilio 21610). Suppress it; never retry.
	ErrGone = &Class{name: "recipient_gone", gone: true}
	// ErrInvalidRecipient: the token, address or number is malformed or
	// not this provider's. Never retry as is.
	ErrInvalidRecipient = &Class{name: "invalid_recipient"}
	// ErrInvalidMessage: the message itself is refused (its content, its
	// headers, its shape). Never retry as is.
	ErrInvalidMessage = &Class{name: "invalid_message"}
	// ErrTooLarge: over a size limit. Never retry as is.
	ErrTooLarge = &Class{name: "too_large"}
	// ErrRejected: refused for good for another reason (policy, spam,
	// region).
	ErrRejected = &Class{name: "rejected"}
	// ErrForbidden: the destination is not allowed (an endpoint the SSRF
	// guard refuses).
	ErrForbidden = &Class{name: "forbidden"}
	// ErrRateLimited: the provider asks us to slow down. Retry after its
	// Retry-After.
	ErrRateLimited = &Class{name: "rate_limited", retryable: true, providerDown: true}
	// ErrUnavailable: the provider failed or could not be reached. Retry
	// with backoff.
	ErrUnavailable = &Class{name: "unavailable", retryable: true, providerDown: true}
	// ErrAuth: the provider refused our credentials, or we do not trust its
	// certificate. Keep the message; fix the configuration.
	ErrAuth = &Class{name: "auth", providerDown: true, auth: true}
	// ErrTimeout: no answer within the deadline (a context deadline outside
	// any channel's error).
	ErrTimeout = &Class{name: "timeout", retryable: true, providerDown: true}
	// ErrOther: an error no channel classed (a network error outside any
	// client): retried, and counted as the provider's.
	ErrOther = &Class{name: "other", retryable: true, providerDown: true}
)

// Classes lists every class, for documentation and metrics.
func Classes() []*Class {
	return []*Class{ErrGone, ErrInvalidRecipient, ErrInvalidMessage, ErrTooLarge, ErrRejected, ErrForbidden,
		ErrRateLimited, ErrUnavailable, ErrAuth, ErrTimeout, ErrOther}
}

// kind is a channel's sentinel: its own text, wrapping a class.
type kind struct {
	text  string
	class *Class
}

func (k *kind) Error() string { return k.text }
func (k *kind) Unwrap() error { return k.class }

// Kind makes a channel's sentinel: an error whose text is the channel's
// and which wraps class, so errors.Is finds both.
func Kind(text string, class *Class) error { return &kind{text: text, class: class} }

// Of returns err's class: the class a channel error wraps, ErrTimeout for
// a context deadline, ErrOther for anything else. It is nil for nil.
func Of(err error) *Class {
	if err == nil {
		return nil
	}
	var c *Class
	switch {
	case errors.As(err, &c):
		return c
	case errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	}
	return ErrOther
}

// Detail is a provider's answer, as every channel's error gives it: who
// answered, with which status and code, what it said, when to come back,
// and to whom (masked).
type Detail struct {
	Channel  string // push, email, sms
	Provider string // apns, fcm, webpush, smtp, twilio
	// Status is the provider's status (HTTP status, SMTP reply code); 0
	// when there was no answer (refused locally, or the network failed).
	Status int
	// Code is the provider's own code: an APNs reason, an FCM error code,
	// an SMTP enhanced code, a Twilio error code.
	Code       string
	Reason     string
	Recipient  string // masked
	RetryAfter time.Duration
	// AboutRecipients marks a refusal of this message's recipients (an
	// SMTP server refusing RCPT TO), which says nothing about the
	// provider whatever its class.
	AboutRecipients bool
	// Local marks a refusal before any request (validation).
	Local bool
}

// Detailer is implemented by every channel's error type.
type Detailer interface {
	error
	Detail() Detail
}

// DetailOf returns the detail of the first channel error in err's chain.
func DetailOf(err error) (Detail, bool) {
	var d Detailer
	if errors.As(err, &d) {
		return d.Detail(), true
	}
	return Detail{}, false
}

// AboutMessage reports whether err is a refusal of the message itself
// (its recipients, content or headers) rather than the provider being
// unreachable, overloaded or refusing our credentials: such a refusal
// must not count toward a circuit breaker's view of the provider.
func AboutMessage(err error) bool {
	if err == nil {
		return false
	}
	if d, ok := DetailOf(err); ok && d.AboutRecipients {
		return true
	}
	var c *Class
	return errors.As(err, &c) && !c.providerDown
}

// ProviderDown reports whether err counts against the provider: a class
// that says so, and not a refusal about the message.
func ProviderDown(err error) bool {
	return err != nil && Of(err).providerDown && !AboutMessage(err)
}

// Retryable reports whether sending the same message later may succeed:
// its class says so, or it is no channel's error at all. False for nil.
func Retryable(err error) bool { return err != nil && Of(err).retryable }

// Answered reports whether err carries the provider's own answer (a
// status): the provider is up, whatever it said.
func Answered(err error) bool {
	d, ok := DetailOf(err)
	return ok && d.Status != 0
}

// NotSent reports whether err says the provider certainly did not take
// the message: it answered no, or the message was refused before any
// request. An error without either (a connection broken after the
// request left) is an outcome nobody can know.
func NotSent(err error) bool {
	d, ok := DetailOf(err)
	return ok && (d.Status != 0 || d.Local)
}

// Format renders a channel error the one way every channel does:
// "<kind>[ (status[, code])][: reason][ to <recipient>][ retry after d][: err]".
func Format(kindText string, d Detail, cause error) string {
	var b strings.Builder
	b.WriteString(kindText)
	switch {
	case d.Status != 0 && d.Code != "":
		fmt.Fprintf(&b, " (status %d, %s)", d.Status, d.Code)
	case d.Status != 0:
		fmt.Fprintf(&b, " (status %d)", d.Status)
	case d.Code != "":
		fmt.Fprintf(&b, " (%s)", d.Code)
	}
	if d.Reason != "" {
		fmt.Fprintf(&b, ": %s", d.Reason)
	}
	if d.Recipient != "" {
		fmt.Fprintf(&b, " [to %s]", d.Recipient)
	}
	if d.RetryAfter > 0 {
		fmt.Fprintf(&b, " retry after %s", d.RetryAfter)
	}
	if cause != nil {
		fmt.Fprintf(&b, ": %v", cause)
	}
	return b.String()
}
