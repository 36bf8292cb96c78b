// Package email is herald's model of an email message and the interface
// its senders share; email/smtp sends over SMTP with
// github.com/wneessen/go-mail and email/emailtest is a real SMTP server on
// loopback for host apps' tests.
//
// Validate refuses, before anything is sent or queued, what would let a
// message say something it should not: addresses that do not parse per
// RFC 5322, and any control character (CR, LF, NUL, ...) or Unicode line
// separator in a header value, which is how header injection works.
// Errors follow package push: sentinels to branch on with errors.Is and a
// *Error with the SMTP reply, recipients masked.
package email

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/redact"
)

// DefaultMaxSize caps a message's bodies and attachments: 10 MiB.
const DefaultMaxSize = 10 << 20

// maxAddress is RFC 5321's path limit; longer input never reaches the parser.
const maxAddress = 254

// Message is one email.
type Message struct {
	From    string   // "Name <addr@example.com>" or "addr@example.com"
	To      []string // at least one recipient in To, Cc or Bcc
	Cc      []string
	Bcc     []string
	ReplyTo string
	Subject string
	Text    string // at least one of Text and HTML
	HTML    string
	// Attachments are added as parts; Inline ones get a Content-ID.
	Attachments []Attachment
	// Headers are extra headers ("X-Campaign": "spring"). The headers the
	// message sets itself may not be given here.
	Headers map[string]string
	// Tags label the message for tracking (sent as X-Herald-Tags).
	Tags []string
	// ListUnsubscribe are the List-Unsubscribe URIs (mailto: or https:),
	// required by large mailbox providers on marketing mail (RFC 2369).
	ListUnsubscribe []string
	// OneClickUnsubscribe adds "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
	// (RFC 8058); it needs an https URI in ListUnsubscribe.
	OneClickUnsubscribe bool
	// IdempotencyKey derives the Message-ID, so a repeated send carries
	// the same ID and receivers can deduplicate.
	IdempotencyKey string
}

// Attachment is a file carried by a message.
type Attachment struct {
	Filename    string
	ContentType string // default application/octet-stream
	Data        []byte
	Inline      bool
	ContentID   string
}

// Receipt is an SMTP server's acceptance of a message.
type Receipt struct {
	MessageID string
	At        time.Time
}

// Sender sends one message. Implementations are safe for concurrent use.
// A message the server did not accept returns an error (a *Error wrapping
// a sentinel of this package).
type Sender interface {
	Send(ctx context.Context, m *Message) (Receipt, error)
}

// Gone tells the host that a recipient address does not exist, so it can
// suppress it.
type Gone struct {
	Address string // in full: do not log it
	Code    int
	Reason  string
}

// GoneFunc is called when a server says a recipient is gone.
type GoneFunc func(ctx context.Context, g Gone)

// The classes of failure, checked with errors.Is.
var (
	// ErrInvalidMessage: refused by Validate before anything was sent, or by
	// the server for its syntax (5.5.x). The error says which field.
	ErrInvalidMessage = errors.New("email: invalid message")
	// ErrRecipientGone: the mailbox does not exist (550/551/553 5.1.x). Suppress it.
	ErrRecipientGone = errors.New("email: recipient gone")
	// ErrRejected: refused for good (policy, spam, size: other 5xx).
	ErrRejected = errors.New("email: rejected")
	// ErrTooLarge: over the server's or Validate's size limit.
	ErrTooLarge = errors.New("email: message too large")
	// ErrRateLimited: deferred by the server (4.7.x, greylisting, 421
	// throttling). Retry later.
	ErrRateLimited = errors.New("email: rate limited")
	// ErrUnavailable: a temporary failure (other 4xx, network, timeouts). Retry.
	ErrUnavailable = errors.New("email: server unavailable")
	// ErrAuth: the server refused our credentials (535, 530, 534, 538).
	ErrAuth = errors.New("email: authentication refused")
)

// Error is a refusal: by Validate, or by the server with its reply.
type Error struct {
	Kind         error  // one of the sentinels
	Field        string // for Validate's refusals: the field at fault
	Code         int    // SMTP reply code
	EnhancedCode string // e.g. "5.1.1"
	Reason       string // what was wrong; addresses in it are masked
	// Recipients are the message's envelope recipients, masked.
	Recipients []string
	RetryAfter time.Duration
	Err        error // the underlying network or TLS error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Field != "" {
		fmt.Fprintf(&b, ": %s", e.Field)
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, " (%d", e.Code)
		if e.EnhancedCode != "" {
			fmt.Fprintf(&b, " %s", e.EnhancedCode)
		}
		b.WriteString(")")
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	if len(e.Recipients) > 0 {
		fmt.Fprintf(&b, " [to %s]", strings.Join(e.Recipients, ", "))
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

// IsRetryable reports whether err is worth retrying: an email error of a
// retryable class, or an error that is no email error at all.
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

// MaskAddress masks an address for logs: "a***@example.com".
func MaskAddress(addr string) string { return redact.Email(addr) }

// Classify maps an SMTP reply (code and enhanced code) onto a class.
func Classify(code int, enhanced string) error {
	switch {
	case code == 530 || code == 534 || code == 535 || code == 538 || strings.HasPrefix(enhanced, "5.7.8"):
		return ErrAuth
	case code == 552 && strings.HasPrefix(enhanced, "5.2.2"):
		return ErrUnavailable // mailbox full: RFC 5321 says treat as 452
	case code == 552 || strings.HasPrefix(enhanced, "5.3.4"):
		return ErrTooLarge
	case code == 550 || code == 551 || code == 553:
		if enhanced == "" || strings.HasPrefix(enhanced, "5.1.") {
			return ErrRecipientGone
		}
		return ErrRejected
	case code == 556:
		return ErrRecipientGone
	case code >= 500 && code <= 504 || strings.HasPrefix(enhanced, "5.5."):
		return ErrInvalidMessage
	case code >= 500:
		return ErrRejected
	case code == 421 || code == 450 || code == 451 && strings.HasPrefix(enhanced, "4.7.") || strings.HasPrefix(enhanced, "4.7."):
		return ErrRateLimited
	case code >= 400:
		return ErrUnavailable
	}
	return ErrUnavailable
}

// Options for Validate.
type Options struct {
	// MaxSize caps bodies plus attachments in bytes. Default DefaultMaxSize.
	MaxSize int
}

// Validate checks m and returns the parsed envelope sender and recipients.
// It refuses, with a *Error naming the field, addresses that do not parse,
// control characters and line separators in any header value, reserved
// header names, a message with no recipient or no body, and one over the
// size limit.
func Validate(m *Message, opts *Options) (from *mail.Address, rcpts []*mail.Address, err error) {
	bad := func(kind error, field, why string) error {
		return &Error{Kind: kind, Field: field, Reason: why}
	}
	maxSize := DefaultMaxSize
	if opts != nil && opts.MaxSize > 0 {
		maxSize = opts.MaxSize
	}
	from, err = parseAddress("From", m.From)
	if err != nil {
		return nil, nil, err
	}
	if m.ReplyTo != "" {
		if _, err := parseAddress("ReplyTo", m.ReplyTo); err != nil {
			return nil, nil, err
		}
	}
	for _, list := range []struct {
		name  string
		addrs []string
	}{{"To", m.To}, {"Cc", m.Cc}, {"Bcc", m.Bcc}} {
		for i, a := range list.addrs {
			p, err := parseAddress(fmt.Sprintf("%s[%d]", list.name, i), a)
			if err != nil {
				return nil, nil, err
			}
			rcpts = append(rcpts, p)
		}
	}
	if len(rcpts) == 0 {
		return nil, nil, bad(ErrInvalidMessage, "To", "no recipient in To, Cc or Bcc")
	}
	if err := headerValue("Subject", m.Subject); err != nil {
		return nil, nil, err
	}
	if m.Text == "" && m.HTML == "" {
		return nil, nil, bad(ErrInvalidMessage, "Text", "no body: set Text or HTML")
	}
	for k, v := range m.Headers {
		if err := headerName(k); err != nil {
			return nil, nil, err
		}
		if err := headerValue("Headers["+k+"]", v); err != nil {
			return nil, nil, err
		}
	}
	for i, t := range m.Tags {
		if err := headerValue(fmt.Sprintf("Tags[%d]", i), t); err != nil {
			return nil, nil, err
		}
		if strings.Contains(t, ",") {
			return nil, nil, bad(ErrInvalidMessage, fmt.Sprintf("Tags[%d]", i), "a tag may not contain a comma")
		}
	}
	httpsUnsub := false
	for i, u := range m.ListUnsubscribe {
		field := fmt.Sprintf("ListUnsubscribe[%d]", i)
		if err := headerValue(field, u); err != nil {
			return nil, nil, err
		}
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "mailto") || strings.ContainsAny(u, "<> ") {
			return nil, nil, bad(ErrInvalidMessage, field, "must be an https: or mailto: URI")
		}
		httpsUnsub = httpsUnsub || pu.Scheme == "https"
	}
	if m.OneClickUnsubscribe && !httpsUnsub {
		return nil, nil, bad(ErrInvalidMessage, "OneClickUnsubscribe", "one-click unsubscribe (RFC 8058) needs an https URI in ListUnsubscribe")
	}
	if err := headerValue("IdempotencyKey", m.IdempotencyKey); err != nil {
		return nil, nil, err
	}
	size := len(m.Text) + len(m.HTML)
	for i, a := range m.Attachments {
		field := fmt.Sprintf("Attachments[%d]", i)
		if a.Filename == "" {
			return nil, nil, bad(ErrInvalidMessage, field, "no filename")
		}
		for _, v := range []string{a.Filename, a.ContentType, a.ContentID} {
			if err := headerValue(field, v); err != nil {
				return nil, nil, err
			}
		}
		if strings.ContainsAny(a.Filename, `/\"`) {
			return nil, nil, bad(ErrInvalidMessage, field, `filename may not contain /, \ or "`)
		}
		size += len(a.Data)
	}
	if size > maxSize {
		return nil, nil, bad(ErrTooLarge, "size", fmt.Sprintf("%d bytes of bodies and attachments, over the limit of %d", size, maxSize))
	}
	return from, rcpts, nil
}

func parseAddress(field, s string) (*mail.Address, error) {
	if s == "" {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: "empty address"}
	}
	if len(s) > maxAddress+200 {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: "address too long"}
	}
	if err := headerValue(field, s); err != nil {
		return nil, err
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: "not an RFC 5322 address"}
	}
	if len(a.Address) > maxAddress {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: "address over 254 bytes"}
	}
	if err := headerValue(field, a.Name); err != nil {
		return nil, err
	}
	return a, nil
}

// headerValue refuses ASCII controls (CR, LF, NUL, ...) except tab, DEL,
// and the Unicode line and paragraph separators.
func headerValue(field, v string) error {
	for _, r := range v {
		if (r < 0x20 && r != '\t') || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u0085' {
			return &Error{Kind: ErrInvalidMessage, Field: field, Reason: fmt.Sprintf("control character %U in a header value (header injection)", r)}
		}
	}
	return nil
}

// reserved are headers the message sets itself.
var reserved = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "reply-to": true, "subject": true, "date": true,
	"message-id": true, "mime-version": true, "content-type": true, "content-transfer-encoding": true,
	"list-unsubscribe": true, "list-unsubscribe-post": true, "sender": true, "return-path": true,
}

func headerName(k string) error {
	if k == "" {
		return &Error{Kind: ErrInvalidMessage, Field: "Headers", Reason: "empty header name"}
	}
	for _, r := range k {
		if r <= 0x20 || r >= 0x7f || r == ':' {
			return &Error{Kind: ErrInvalidMessage, Field: "Headers", Reason: "header name has a character outside printable ASCII or a colon"}
		}
	}
	if reserved[strings.ToLower(k)] {
		return &Error{Kind: ErrInvalidMessage, Field: "Headers[" + k + "]", Reason: "set by the message itself; use its field"}
	}
	return nil
}
