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
	"mime"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/internal/redact"
)

// DefaultMaxSize caps a message's bodies and attachments: 10 MiB.
const DefaultMaxSize = 10 << 20

// maxAddress is RFC 5321's path limit; longer input never reaches the parser.
const maxAddress = 254

// DefaultMaxRecipients caps To, Cc and Bcc together: 100, the number RFC
// 5321 (§4.5.3.1.8) requires every server to accept. Servers refuse more
// with 452 (or 550 5.5.3) after the envelope has started, which says
// nothing about their health.
const DefaultMaxRecipients = 100

// maxLine is RFC 5322's hard limit on a header line (§2.1.1), CRLF aside.
// Header values are folded at whitespace; a run without whitespace cannot
// be, so one longer than maxRun (the line minus the longest header name
// and ": ") is refused instead of going out as a line the server refuses
// for good.
const (
	maxLine     = 998
	maxRun      = maxLine - 80
	maxFilename = 255
)

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
	ErrInvalidMessage = delivery.Kind("email: invalid message", delivery.ErrInvalidMessage)
	// ErrRecipientGone: the mailbox does not exist (550/551/553 5.1.x). Suppress it.
	ErrRecipientGone = delivery.Kind("email: recipient gone", delivery.ErrGone)
	// ErrRejected: refused for good (policy, spam, size: other 5xx).
	ErrRejected = delivery.Kind("email: rejected", delivery.ErrRejected)
	// ErrTooLarge: over the server's or Validate's size limit.
	ErrTooLarge = delivery.Kind("email: message too large", delivery.ErrTooLarge)
	// ErrRateLimited: deferred by the server (4.7.x, greylisting, 421
	// throttling). Retry later.
	ErrRateLimited = delivery.Kind("email: rate limited", delivery.ErrRateLimited)
	// ErrUnavailable: a temporary failure (other 4xx, network, timeouts). Retry.
	ErrUnavailable = delivery.Kind("email: server unavailable", delivery.ErrUnavailable)
	// ErrAuth: the server refused our credentials (535, 530, 534, 538).
	ErrAuth = delivery.Kind("email: authentication refused", delivery.ErrAuth)
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
	// Recipient is true when the server refused the envelope's recipients
	// (RCPT TO), not the connection or the session: a mailbox full, a
	// greylisted or unknown address, too many recipients. It says nothing
	// about the server's health, so it never opens a circuit (AboutMessage).
	Recipient bool
	Err       error // the underlying network or TLS error, if any
}

// AboutMessage reports whether the refusal is about this message (its
// content, its recipients) rather than the server being unreachable,
// overloaded or refusing our credentials: such a refusal must not count
// toward a circuit breaker's view of the server.
func (e *Error) AboutMessage() bool { return delivery.AboutMessage(e) }

func (e *Error) Error() string {
	k := e.Kind.Error()
	if e.Field != "" {
		k += ": " + e.Field
	}
	return delivery.Format(k, e.Detail(), e.Err)
}

// Detail implements delivery.Detailer.
func (e *Error) Detail() delivery.Detail {
	return delivery.Detail{Channel: "email", Provider: "smtp", Status: e.Code, Code: e.EnhancedCode, Reason: e.Reason,
		Recipient: strings.Join(e.Recipients, ", "), RetryAfter: e.RetryAfter, AboutRecipients: e.Recipient,
		Local: e.Code == 0 && e.Err == nil}
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
func (e *Error) Retryable() bool { return delivery.Of(e.Kind).Retryable() }

// IsRetryable reports whether err is worth retrying: an email error of a
// retryable class, or an error that is no email error at all.
func IsRetryable(err error) bool { return delivery.Retryable(err) }

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
	case code == 452 && strings.HasPrefix(enhanced, "4.5.3"):
		return ErrInvalidMessage // too many recipients: the same message will be refused again
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
	// MaxRecipients caps To, Cc and Bcc together. Default
	// DefaultMaxRecipients.
	MaxRecipients int
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
	maxSize, maxRcpts := DefaultMaxSize, DefaultMaxRecipients
	if opts != nil && opts.MaxSize > 0 {
		maxSize = opts.MaxSize
	}
	if opts != nil && opts.MaxRecipients > 0 {
		maxRcpts = opts.MaxRecipients
	}
	if n := len(m.To) + len(m.Cc) + len(m.Bcc); n > maxRcpts {
		return nil, nil, bad(ErrInvalidMessage, "To", fmt.Sprintf("%d recipients in To, Cc and Bcc, over the limit of %d (servers refuse more with 452)", n, maxRcpts))
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
	if err := foldable("Subject", m.Subject); err != nil {
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
		if err := foldable("Headers["+k+"]", v); err != nil {
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
	// Tags go out joined by commas, without spaces: one run.
	if n := len(strings.Join(m.Tags, ",")); n > maxRun {
		return nil, nil, bad(ErrInvalidMessage, "Tags", fmt.Sprintf("%d bytes joined, over the %d that fit a header line (RFC 5322: 998 per line)", n, maxRun))
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
	cids := map[string]bool{}
	for i, a := range m.Attachments {
		field := fmt.Sprintf("Attachments[%d]", i)
		if a.Filename == "" {
			return nil, nil, bad(ErrInvalidMessage, field+".Filename", "no filename")
		}
		for _, v := range []struct{ name, v string }{{".Filename", a.Filename}, {".ContentType", a.ContentType}, {".ContentID", a.ContentID}} {
			if err := headerValue(field+v.name, v.v); err != nil {
				return nil, nil, err
			}
		}
		if strings.ContainsAny(a.Filename, `/\"`) {
			return nil, nil, bad(ErrInvalidMessage, field+".Filename", `filename may not contain /, \ or "`)
		}
		if len(a.Filename) > maxFilename {
			return nil, nil, bad(ErrInvalidMessage, field+".Filename", fmt.Sprintf("filename of %d bytes, over %d", len(a.Filename), maxFilename))
		}
		if r, ok := bidiControl(a.Filename); ok {
			return nil, nil, bad(ErrInvalidMessage, field+".Filename", fmt.Sprintf("bidirectional control %U in a filename (it can disguise report.exe as report.pdf)", r))
		}
		if a.ContentType != "" {
			if err := contentType(a.ContentType); err != nil {
				return nil, nil, bad(ErrInvalidMessage, field+".ContentType", err.Error())
			}
		}
		if a.ContentID != "" {
			if !a.Inline {
				return nil, nil, bad(ErrInvalidMessage, field+".ContentID", "only inline attachments have a Content-ID")
			}
			if err := contentID(a.ContentID); err != nil {
				return nil, nil, bad(ErrInvalidMessage, field+".ContentID", err.Error())
			}
			if cids[a.ContentID] {
				return nil, nil, bad(ErrInvalidMessage, field+".ContentID", "used by an earlier attachment")
			}
			cids[a.ContentID] = true
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
	if r, ok := bidiControl(a.Name); ok {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: fmt.Sprintf("bidirectional control %U in a display name (it can disguise who the mail is from)", r)}
	}
	if len(a.Name) > maxRun {
		return nil, &Error{Kind: ErrInvalidMessage, Field: field, Reason: "display name too long for a header line"}
	}
	return a, nil
}

// foldable refuses a header value that cannot be folded into lines of
// RFC 5322's 998 characters: a run without whitespace longer than maxRun.
// (Non-ASCII text is sent as encoded words, which fold by themselves.)
func foldable(field, v string) error {
	run := 0
	for i := 0; i < len(v); i++ {
		switch b := v[i]; {
		case b == ' ' || b == '\t':
			run = 0
		case b >= 0x80:
			return nil // encoded as RFC 2047 words, folded by the writer
		default:
			run++
			if run > maxRun {
				return &Error{Kind: ErrInvalidMessage, Field: field, Reason: fmt.Sprintf("over %d characters without a space: the header line would pass RFC 5322's 998", maxRun)}
			}
		}
	}
	return nil
}

// bidiControl returns the first Unicode bidirectional control in s (the
// embeddings, overrides and isolates U+202A–U+202E and U+2066–U+2069,
// the marks U+200E, U+200F and U+061C).
func bidiControl(s string) (rune, bool) {
	for _, r := range s {
		if r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c {
			return r, true
		}
	}
	return 0, false
}

// contentType checks an attachment's media type: type/subtype of RFC 2045
// tokens, parameters that parse, and no multipart or message type (which
// would open a MIME structure of its own inside the message).
func contentType(ct string) error {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("not a media type (type/subtype): %v", err)
	}
	if !strings.Contains(mt, "/") {
		return errors.New("not a media type (type/subtype)")
	}
	if strings.HasPrefix(mt, "multipart/") || strings.HasPrefix(mt, "message/") {
		return fmt.Errorf("%s would be a MIME container, not an attachment", mt)
	}
	if len(ct) > 200 {
		return errors.New("over 200 bytes")
	}
	return nil
}

// contentID checks an inline part's Content-ID (without angle brackets):
// RFC 2392's addr-spec-like "left@right", or a single token, of
// printable ASCII without spaces, brackets or quotes, at most 250 bytes.
func contentID(id string) error {
	if len(id) > 250 {
		return errors.New("over 250 bytes")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`<>()[]\,;:"`, c) >= 0 {
			return fmt.Errorf("character %q is not allowed (give it without angle brackets: part1@example.com)", c)
		}
	}
	if strings.Count(id, "@") > 1 || strings.HasPrefix(id, "@") || strings.HasSuffix(id, "@") {
		return errors.New("not of the form left@right")
	}
	return nil
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

// reserved are headers the message sets itself, and headers that only
// the sending system and the servers on the way may write: trace headers
// (Received, Return-Path, Resent-*), signatures and authentication
// results (DKIM, ARC), which a caller setting would forge.
var reserved = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "reply-to": true, "subject": true, "date": true,
	"message-id": true, "mime-version": true, "content-type": true, "content-transfer-encoding": true,
	"content-disposition": true, "content-id": true, "content-description": true,
	"list-unsubscribe": true, "list-unsubscribe-post": true, "sender": true, "return-path": true,
	"received": true, "dkim-signature": true, "domainkey-signature": true, "authentication-results": true,
	"arc-seal": true, "arc-message-signature": true, "arc-authentication-results": true,
	"received-spf": true, "delivered-to": true, "x-herald-tags": true,
}

// reservedPrefixes are header families no caller may set.
var reservedPrefixes = []string{"resent-", "arc-", "x-original-"}

func headerName(k string) error {
	if k == "" {
		return &Error{Kind: ErrInvalidMessage, Field: "Headers", Reason: "empty header name"}
	}
	for _, r := range k {
		if r <= 0x20 || r >= 0x7f || r == ':' {
			return &Error{Kind: ErrInvalidMessage, Field: "Headers", Reason: "header name has a character outside printable ASCII or a colon"}
		}
	}
	if len(k) > 76 {
		return &Error{Kind: ErrInvalidMessage, Field: "Headers", Reason: "header name over 76 characters"}
	}
	l := strings.ToLower(k)
	if reserved[l] {
		return &Error{Kind: ErrInvalidMessage, Field: "Headers[" + k + "]", Reason: "set by the message itself or by the servers on the way; use its field"}
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(l, p) {
			return &Error{Kind: ErrInvalidMessage, Field: "Headers[" + k + "]", Reason: "a trace or signature header only the sending system writes"}
		}
	}
	return nil
}
