// Package sms is herald's model of a text message and the interface its
// senders share; sms/twilio sends through Twilio with
// github.com/twilio/twilio-go and sms/smstest fakes Twilio's Messages API
// for host apps' tests.
//
// Numbers are validated with github.com/nyaruka/phonenumbers and must be
// given in E.164 form ("+14155550123"); Segments tells what a body costs
// (GSM-7 or UCS-2, 160/153 or 70/67 characters per segment) before it is
// sent. Errors follow package push: sentinels for errors.Is and a *Error
// with the provider's status and code, numbers masked.
package sms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/nyaruka/phonenumbers"

	"github.com/heraldhq/herald/internal/redact"
)

// MaxBody is the longest body Twilio accepts, in characters.
const MaxBody = 1600

// Message is one text message.
type Message struct {
	// To is the recipient in E.164 form.
	To string
	// From is an E.164 number or an alphanumeric sender ID (1–11 letters,
	// digits and spaces, at least one letter). Or set MessagingServiceSID.
	From                string
	MessagingServiceSID string
	Body                string
	// StatusCallback is where the provider posts delivery statuses.
	StatusCallback string
	// ValidityPeriod drops the message if it is not sent in time (1s–36000s).
	ValidityPeriod time.Duration
	// IdempotencyKey identifies the message across retries.
	IdempotencyKey string
}

// Receipt is a provider's acceptance.
type Receipt struct {
	SID      string // the provider's message ID
	Status   string // e.g. queued
	Segments int
	At       time.Time
}

// Sender sends one message; implementations are safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, m *Message) (Receipt, error)
}

// Gone tells the host a number must not be messaged again (unsubscribed
// with STOP, or not a reachable handset).
type Gone struct {
	Number string // in full: do not log it
	Code   int
	Reason string
}

// GoneFunc is called when a provider says a recipient is gone.
type GoneFunc func(ctx context.Context, g Gone)

// The classes of failure, checked with errors.Is.
var (
	// ErrInvalidNumber: the number is malformed, not E.164, not valid, or
	// not able to receive SMS (Twilio 21211, 21614). Never retry.
	ErrInvalidNumber = errors.New("sms: invalid number")
	// ErrInvalidMessage: the message itself is refused (empty body, bad
	// sender, bad callback URL). Never retry as is.
	ErrInvalidMessage = errors.New("sms: invalid message")
	// ErrRecipientGone: the recipient opted out (Twilio 21610, STOP). Suppress.
	ErrRecipientGone = errors.New("sms: recipient gone")
	// ErrRejected: refused for good for another reason (region, policy).
	ErrRejected = errors.New("sms: rejected")
	// ErrRateLimited: too many requests (429, Twilio 20429). Retry later.
	ErrRateLimited = errors.New("sms: rate limited")
	// ErrUnavailable: the provider failed or could not be reached (5xx,
	// network). Retry with backoff.
	ErrUnavailable = errors.New("sms: provider unavailable")
	// ErrAuth: the provider refused our credentials (401, 20003).
	ErrAuth = errors.New("sms: authentication refused")
)

// Error is a refusal, local or by the provider.
type Error struct {
	Provider   string
	Kind       error
	Status     int    // HTTP status
	Code       int    // provider error code (Twilio's)
	Reason     string // what was wrong; never the body, numbers masked
	To         string // masked
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Provider != "" {
		fmt.Fprintf(&b, " (%s", e.Provider)
		if e.Status != 0 {
			fmt.Fprintf(&b, " status %d", e.Status)
		}
		if e.Code != 0 {
			fmt.Fprintf(&b, " code %d", e.Code)
		}
		b.WriteString(")")
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	if e.To != "" {
		fmt.Fprintf(&b, " [to %s]", e.To)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " retry after %s", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the class sentinel and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// RetryAfterHint lets the retry queue wait as asked.
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

// Retryable reports whether sending later may succeed.
func (e *Error) Retryable() bool {
	return errors.Is(e.Kind, ErrUnavailable) || errors.Is(e.Kind, ErrRateLimited)
}

// IsRetryable reports whether err is worth retrying: an sms error of a
// retryable class, or an error that is no sms error at all.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable()
	}
	return true
}

// MaskNumber masks a phone number for logs: "+44*******89".
func MaskNumber(n string) string { return redact.Phone(n) }

// ValidateNumber checks that n is a valid phone number written in E.164.
func ValidateNumber(n string) error {
	bad := func(why string) error { return &Error{Kind: ErrInvalidNumber, Reason: why, To: redact.Phone(n)} }
	if n == "" {
		return bad("empty number")
	}
	if n[0] != '+' || len(n) < 8 || len(n) > 16 {
		return bad("not E.164: a +, then 7 to 15 digits")
	}
	for _, c := range n[1:] {
		if c < '0' || c > '9' {
			return bad("not E.164: only digits after the +")
		}
	}
	if n[1] == '0' {
		return bad("not E.164: country codes do not start with 0")
	}
	p, err := phonenumbers.Parse(n, "")
	if err != nil || !phonenumbers.IsValidNumber(p) {
		return bad("not a valid number for its country")
	}
	if phonenumbers.Format(p, phonenumbers.E164) != n {
		return bad("not in canonical E.164 form")
	}
	return nil
}

// Validate checks m before anything is sent.
func Validate(m *Message) error {
	if err := ValidateNumber(m.To); err != nil {
		return err
	}
	bad := func(why string) error { return &Error{Kind: ErrInvalidMessage, Reason: why, To: redact.Phone(m.To)} }
	switch {
	case m.From == "" && m.MessagingServiceSID == "":
		return bad("set From or MessagingServiceSID")
	case m.From != "" && m.MessagingServiceSID != "":
		return bad("set From or MessagingServiceSID, not both")
	case m.MessagingServiceSID != "":
		if !validSID(m.MessagingServiceSID, "MG") {
			return bad("MessagingServiceSID must be MG followed by 32 hex digits")
		}
	case strings.HasPrefix(m.From, "+"):
		if err := ValidateNumber(m.From); err != nil {
			return bad("From is not a valid E.164 number")
		}
	default:
		if !validAlphanumericSender(m.From) {
			return bad("From must be an E.164 number or an alphanumeric sender ID (1–11 letters, digits or spaces, at least one letter)")
		}
	}
	if strings.TrimSpace(m.Body) == "" {
		return bad("empty body")
	}
	if n := len([]rune(m.Body)); n > MaxBody {
		return bad(fmt.Sprintf("body of %d characters, over %d", n, MaxBody))
	}
	if m.ValidityPeriod != 0 && (m.ValidityPeriod < time.Second || m.ValidityPeriod > 36000*time.Second) {
		return bad("ValidityPeriod must be between 1s and 10h")
	}
	if m.StatusCallback != "" && !strings.HasPrefix(m.StatusCallback, "https://") && !strings.HasPrefix(m.StatusCallback, "http://") {
		return bad("StatusCallback must be an http(s) URL")
	}
	return nil
}

func validSID(s, prefix string) bool {
	if len(s) != 34 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for _, c := range s[2:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func validAlphanumericSender(s string) bool {
	if len(s) == 0 || len(s) > 11 || strings.TrimSpace(s) != s {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			letter = true
		case '0' <= c && c <= '9', c == ' ':
		default:
			return false
		}
	}
	return letter
}

// Encoding is how a body is carried.
type Encoding string

// Encodings.
const (
	GSM7 Encoding = "GSM-7"
	UCS2 Encoding = "UCS-2"
)

// Segmentation is what a body costs.
type Segmentation struct {
	Encoding Encoding
	// Units are GSM-7 septets (extension characters count two) or UTF-16
	// code units (characters outside the BMP count two).
	Units int
	// Segments is how many messages the provider bills: one up to 160 GSM-7
	// septets or 70 UCS-2 units, else ceil(units / 153) or ceil(units / 67).
	Segments int
}

// gsmBasic and gsmExtended are the GSM 03.38 default alphabet and its
// extension table (each extension character takes an escape plus itself).
const (
	gsmBasic    = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsmExtended = "\f^{}\\[~]|€"
)

// Segments computes the encoding and segment count of body.
func Segments(body string) Segmentation {
	septets, gsm := 0, true
	for _, r := range body {
		switch {
		case strings.ContainsRune(gsmBasic, r):
			septets++
		case strings.ContainsRune(gsmExtended, r):
			septets += 2
		default:
			gsm = false
		}
		if !gsm {
			break
		}
	}
	if gsm {
		return Segmentation{Encoding: GSM7, Units: septets, Segments: count(septets, 160, 153)}
	}
	units := len(utf16.Encode([]rune(body)))
	return Segmentation{Encoding: UCS2, Units: units, Segments: count(units, 70, 67)}
}

func count(units, single, multi int) int {
	switch {
	case units == 0:
		return 0
	case units <= single:
		return 1
	}
	return (units + multi - 1) / multi
}
