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
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

	"github.com/heraldhq/herald/delivery"
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
	ErrInvalidNumber = delivery.Kind("sms: invalid number", delivery.ErrInvalidRecipient)
	// ErrInvalidMessage: the message itself is refused (empty body, bad
	// sender, bad callback URL). Never retry as is.
	ErrInvalidMessage = delivery.Kind("sms: invalid message", delivery.ErrInvalidMessage)
	// ErrRecipientGone: the recipient opted out (Twilio 21610, STOP). Suppress.
	ErrRecipientGone = delivery.Kind("sms: recipient gone", delivery.ErrGone)
	// ErrRejected: refused for good for another reason (region, policy).
	ErrRejected = delivery.Kind("sms: rejected", delivery.ErrRejected)
	// ErrRateLimited: too many requests (429, Twilio 20429). Retry later.
	ErrRateLimited = delivery.Kind("sms: rate limited", delivery.ErrRateLimited)
	// ErrUnavailable: the provider failed or could not be reached (5xx,
	// network). Retry with backoff.
	ErrUnavailable = delivery.Kind("sms: provider unavailable", delivery.ErrUnavailable)
	// ErrAuth: the provider refused our credentials (401, 20003).
	ErrAuth = delivery.Kind("sms: authentication refused", delivery.ErrAuth)
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

func (e *Error) Error() string { return delivery.Format(e.Kind.Error(), e.Detail(), e.Err) }

// Detail implements delivery.Detailer.
func (e *Error) Detail() delivery.Detail {
	d := delivery.Detail{Channel: "sms", Provider: e.Provider, Status: e.Status, Reason: e.Reason, Recipient: e.To,
		RetryAfter: e.RetryAfter, Local: e.Status == 0 && e.Err == nil}
	if e.Code != 0 {
		d.Code = strconv.Itoa(e.Code)
	}
	return d
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

// AboutMessage reports whether the refusal is about this message (its
// number, its body) rather than the provider being unreachable,
// overloaded or refusing our credentials: such a refusal must not count
// toward a circuit breaker's view of the provider.
func (e *Error) AboutMessage() bool { return delivery.AboutMessage(e) }

// Retryable reports whether sending later may succeed.
func (e *Error) Retryable() bool { return delivery.Of(e.Kind).Retryable() }

// IsRetryable reports whether err is worth retrying: an sms error of a
// retryable class, or an error that is no sms error at all.
func IsRetryable(err error) bool { return delivery.Retryable(err) }

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

// NumberType is a kind of phone number, as libphonenumber classes it.
type NumberType string

// Number types the cost guard knows.
const (
	Mobile      NumberType = "mobile"
	FixedLine   NumberType = "fixed_line"
	TollFree    NumberType = "toll_free"
	PremiumRate NumberType = "premium_rate"
	SharedCost  NumberType = "shared_cost"
	VoIP        NumberType = "voip"
	Personal    NumberType = "personal"
	Pager       NumberType = "pager"
	UAN         NumberType = "uan"
	Voicemail   NumberType = "voicemail"
	// Satellite and international networks: country codes +870 (Inmarsat),
	// +881 (global mobile satellite systems), +882 and +883 (international
	// networks), billed at rates that SMS-pumping fraud lives on.
	Satellite NumberType = "satellite"
	Unknown   NumberType = "unknown"
)

// DefaultRefusedTypes are the number types the cost guard refuses unless
// Options.AllowTypes names them: premium-rate, shared-cost and
// satellite numbers, where SMS-pumping fraud bills the sender.
var DefaultRefusedTypes = []NumberType{PremiumRate, SharedCost, Satellite}

// DefaultMaxSegments caps the segments one message may cost: 10.
const DefaultMaxSegments = 10

// Options tune Validate's checks. The zero value is the default policy.
type Options struct {
	// AllowCountries, when set, lists the ISO 3166 region codes ("US",
	// "GB") the To number must belong to; others are refused.
	AllowCountries []string
	// AllowTypes re-allows number types the cost guard refuses by default
	// (DefaultRefusedTypes).
	AllowTypes []NumberType
	// MaxSegments caps what one message may cost. Default
	// DefaultMaxSegments.
	MaxSegments int
	// AllowInsecureCallbacks lets StatusCallback be http:// or a loopback
	// or private host: for tests against a local fake only.
	AllowInsecureCallbacks bool
}

// TypeOf returns the kind of a valid E.164 number (Unknown when it does
// not parse).
func TypeOf(n string) NumberType {
	p, err := phonenumbers.Parse(n, "")
	if err != nil {
		return Unknown
	}
	switch p.GetCountryCode() {
	case 870, 881, 882, 883:
		return Satellite
	}
	switch phonenumbers.GetNumberType(p) {
	case phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE:
		return Mobile
	case phonenumbers.FIXED_LINE:
		return FixedLine
	case phonenumbers.TOLL_FREE:
		return TollFree
	case phonenumbers.PREMIUM_RATE:
		return PremiumRate
	case phonenumbers.SHARED_COST:
		return SharedCost
	case phonenumbers.VOIP:
		return VoIP
	case phonenumbers.PERSONAL_NUMBER:
		return Personal
	case phonenumbers.PAGER:
		return Pager
	case phonenumbers.UAN:
		return UAN
	case phonenumbers.VOICEMAIL:
		return Voicemail
	}
	return Unknown
}

// checkCost refuses numbers the policy does not let a message cost money on.
func (o *Options) checkCost(to string) error {
	bad := func(why string) error { return &Error{Kind: ErrInvalidNumber, Reason: why, To: redact.Phone(to)} }
	if len(o.AllowCountries) > 0 {
		p, _ := phonenumbers.Parse(to, "")
		region := phonenumbers.GetRegionCodeForNumber(p)
		ok := false
		for _, c := range o.AllowCountries {
			ok = ok || strings.EqualFold(c, region)
		}
		if !ok {
			return bad(fmt.Sprintf("number of region %q, not in Options.AllowCountries", region))
		}
	}
	t := TypeOf(to)
	for _, r := range DefaultRefusedTypes {
		if t != r {
			continue
		}
		for _, a := range o.AllowTypes {
			if a == t {
				return nil
			}
		}
		return bad(fmt.Sprintf("a %s number: refused by the cost guard (SMS-pumping fraud bills the sender; allow it with Options.AllowTypes)", t))
	}
	return nil
}

// visible reports whether body has a character a person would see: not
// only spaces, zero-width and format characters, or controls.
func visible(body string) bool {
	for _, r := range body {
		if unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) || unicode.IsControl(r) || r == 0x2800 || r == 0x3164 || r == 0x115f || r == 0x1160 || r == 0xffa0 {
			continue // 0x2800 Braille blank, Hangul fillers: drawn as nothing
		}
		if unicode.IsPrint(r) || unicode.IsGraphic(r) {
			return true
		}
	}
	return false
}

// checkCallback requires an absolute https URL on a public host name (not
// an IP literal, localhost or an internal name): the provider posts every
// status there, so a hostile one would make it probe the host's network.
func (o *Options) checkCallback(raw string) error {
	if len(raw) > 2048 {
		return errors.New("StatusCallback over 2,048 bytes")
	}
	for _, r := range raw {
		if r <= ' ' || r >= 0x7f {
			return errors.New("StatusCallback has a space, control or non-ASCII character (percent-encode it; use the host's punycode form)")
		}
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("StatusCallback must be an absolute URL")
	}
	if u.User != nil {
		return errors.New("StatusCallback may not carry credentials (user info)")
	}
	if o.AllowInsecureCallbacks {
		if u.Scheme != "https" && u.Scheme != "http" {
			return errors.New("StatusCallback must be an http(s) URL (insecure callbacks are allowed)")
		}
		return nil
	}
	if u.Scheme != "https" {
		return errors.New("StatusCallback must be https")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if _, err := netip.ParseAddr(host); err == nil || strings.Contains(u.Host, "%") {
		return errors.New("StatusCallback host is an IP address; use a public host name")
	}
	if !strings.Contains(host, ".") || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return errors.New("StatusCallback host is not a public host name")
	}
	for _, suffix := range []string{".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp", ".localdomain"} {
		if strings.HasSuffix(host, suffix) {
			return errors.New("StatusCallback host is an internal name")
		}
	}
	return nil
}

// Validate checks m with the default policy (Options' zero value) before
// anything is sent.
func Validate(m *Message) error { return ValidateWith(m, nil) }

// ValidateWith checks m before anything is sent: the numbers, the cost
// guard, the body (not empty, something visible, within the segment cap),
// the validity period and the status callback.
func ValidateWith(m *Message, o *Options) error {
	if o == nil {
		o = &Options{}
	}
	if err := ValidateNumber(m.To); err != nil {
		return err
	}
	if err := o.checkCost(m.To); err != nil {
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
	if !utf8.ValidString(m.Body) {
		return bad("body is not valid UTF-8")
	}
	if strings.ContainsRune(m.Body, 0) {
		return bad("body has a NUL character")
	}
	if !visible(m.Body) {
		return bad("body has no visible character (only spaces, zero-width or format characters)")
	}
	if n := len([]rune(m.Body)); n > MaxBody {
		return bad(fmt.Sprintf("body of %d characters, over %d", n, MaxBody))
	}
	maxSeg := cmp.Or(o.MaxSegments, DefaultMaxSegments)
	if seg := Segments(m.Body); seg.Segments > maxSeg {
		return bad(fmt.Sprintf("body costs %d %s segments, over the cap of %d (Options.MaxSegments)", seg.Segments, seg.Encoding, maxSeg))
	}
	if m.ValidityPeriod != 0 && (m.ValidityPeriod < time.Second || m.ValidityPeriod > 36000*time.Second) {
		return bad("ValidityPeriod must be between 1s and 10h")
	}
	if m.StatusCallback != "" {
		if err := o.checkCallback(m.StatusCallback); err != nil {
			return bad(err.Error())
		}
	}
	if len(m.IdempotencyKey) > 255 {
		return bad("IdempotencyKey over 255 bytes")
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
