// Package twilio sends SMS through Twilio's Messages API with
// github.com/twilio/twilio-go, classifies Twilio's error codes into the
// error classes of package sms, and verifies and decodes Twilio's status
// callbacks (StatusHandler).
package twilio

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	twiliogo "github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/heraldhq/herald/internal/redact"
	"github.com/heraldhq/herald/internal/tlsguard"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms"
)

// Config configures a Client.
type Config struct {
	AccountSID string
	AuthToken  secret.Value
	// BaseURL replaces https://api.twilio.com (tests point it at smstest).
	BaseURL string
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
	// HTTPClient's transport carries every request (a host behind a proxy,
	// with a private CA). Default: a transport of its own with TLSConfig.
	// Its redirect policy and timeout are replaced: redirects are never
	// followed, and Timeout is a context per call.
	HTTPClient *http.Client
	// TLSConfig adds trust roots when HTTPClient is nil.
	TLSConfig *tls.Config
	// Numbers is the validation policy: the cost guard (premium-rate,
	// shared-cost and satellite numbers refused unless allowed; allowed
	// countries), the segment cap, callbacks. Default: sms.Options' zero
	// value.
	Numbers sms.Options
	// OnGone is called when Twilio says a recipient opted out (21610).
	OnGone sms.GoneFunc
	// Logger receives operational messages; numbers are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fake is what a fake Twilio hands its clients: smstest.Server is one.
// The client package defines it, so the fake imports no client.
type Fake interface {
	URL() string
	AccountSID() string
	AuthToken() secret.Value
}

// UseFake points cfg at f, with f's credentials unless cfg has its own.
// It returns cfg.
func (cfg *Config) UseFake(f Fake) *Config {
	cfg.BaseURL = f.URL()
	if cfg.AccountSID == "" {
		cfg.AccountSID = f.AccountSID()
	}
	if cfg.AuthToken.IsZero() {
		cfg.AuthToken = f.AuthToken()
	}
	return cfg
}

// Client sends SMS through Twilio. It is safe for concurrent use. Its
// state (the auth token) is sealed: no rendering of a *Client prints it.
type Client struct {
	st secret.Opaque[*client]
}

type client struct {
	cfg   Config
	base  *url.URL // nil: Twilio itself
	trans http.RoundTripper
}

var _ sms.Sender = (*Client)(nil)

// New returns a client. Twilio requires alphanumeric credentials; New
// checks them so a typo fails here rather than on every send.
func New(cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("twilio: New: missing config")
	}
	c := &client{cfg: *cfg}
	cc := &c.cfg
	if cc.HTTPClient != nil && cc.HTTPClient.Transport != nil {
		c.trans = cc.HTTPClient.Transport
	} else if cc.HTTPClient != nil {
		c.trans = http.DefaultTransport
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cc.TLSConfig != nil {
			t.TLSClientConfig = cc.TLSConfig.Clone()
		}
		c.trans = t
	}
	cc.Timeout = cmp.Or(cc.Timeout, 10*time.Second)
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Now == nil {
		cc.Now = time.Now
	}
	if !alnum(cc.AccountSID) || !strings.HasPrefix(cc.AccountSID, "AC") {
		return nil, errors.New("twilio: Config.AccountSID must be AC followed by letters and digits")
	}
	if cc.AuthToken.IsZero() || !alnum(cc.AuthToken.Reveal()) {
		return nil, errors.New("twilio: Config.AuthToken must be non-empty letters and digits")
	}
	if cc.BaseURL != "" {
		u, err := url.Parse(cc.BaseURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("twilio: Config.BaseURL %q is not a URL", cc.BaseURL)
		}
		c.base = u
	}
	if cc.Timeout < 0 || cc.Numbers.MaxSegments < 0 {
		return nil, errors.New("twilio: Config: Timeout and Numbers.MaxSegments must not be negative")
	}
	return &Client{st: secret.Seal(c)}, nil
}

// String renders the client without its credentials, as do GoString,
// Format, LogValue and MarshalJSON.
func (c *Client) String() string { return "twilio.Client{[REDACTED]}" }

// GoString implements fmt.GoStringer.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter for every verb.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue implements slog.LogValuer.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes the client as its redacted name.
func (c *Client) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Validate checks m as Send would before any request (sms.ValidateWith
// with Config.Numbers), so a host refuses at the door what Twilio would
// refuse or what would cost it money it did not mean to spend.
func (c *Client) Validate(m *sms.Message) error { return sms.ValidateWith(m, &c.st.Get().cfg.Numbers) }

// Send implements sms.Sender: one request per call.
func (c *Client) Send(ctx context.Context, m *sms.Message) (sms.Receipt, error) {
	return c.st.Get().send(ctx, m)
}

func alnum(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// callTransport carries one call's context (twilio-go takes none), points
// requests at BaseURL, and keeps the Retry-After header twilio-go drops.
type callTransport struct {
	ctx  context.Context
	base *url.URL
	next http.RoundTripper

	mu         sync.Mutex
	retryAfter string
}

func (t *callTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(t.ctx)
	if t.base != nil {
		r.URL.Scheme, r.URL.Host, r.Host = t.base.Scheme, t.base.Host, t.base.Host
	}
	res, err := t.next.RoundTrip(r)
	if err == nil {
		t.mu.Lock()
		t.retryAfter = res.Header.Get("Retry-After")
		t.mu.Unlock()
	}
	return res, err
}

func (c *client) send(ctx context.Context, m *sms.Message) (sms.Receipt, error) {
	if err := sms.ValidateWith(m, &c.cfg.Numbers); err != nil {
		return sms.Receipt{}, err
	}
	// The timeout is a context, not http.Client.Timeout: twilio-go does not
	// always close response bodies, which would strand the client's timer
	// goroutine; cancelling the context ends everything of this call.
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	ct := &callTransport{ctx: ctx, base: c.base, next: c.trans}
	base := &twiliogo.Client{
		Credentials: twiliogo.NewCredentials(c.cfg.AccountSID, c.cfg.AuthToken.Reveal()),
		HTTPClient: &http.Client{Transport: ct,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	base.SetAccountSid(c.cfg.AccountSID)
	params := (&api.CreateMessageParams{}).SetTo(m.To).SetBody(m.Body)
	if m.MessagingServiceSID != "" {
		params.SetMessagingServiceSid(m.MessagingServiceSID)
	} else {
		params.SetFrom(m.From)
	}
	if m.StatusCallback != "" {
		params.SetStatusCallback(m.StatusCallback)
	}
	if m.ValidityPeriod > 0 {
		params.SetValidityPeriod(int(m.ValidityPeriod.Seconds()))
	}
	res, err := api.NewApiServiceWithClient(base).CreateMessage(params)
	masked := redact.Phone(m.To)
	if err != nil {
		ct.mu.Lock()
		ra := ct.retryAfter
		ct.mu.Unlock()
		e := c.classify(err, ra, masked)
		if errors.Is(e, sms.ErrRecipientGone) && c.cfg.OnGone != nil {
			c.cfg.OnGone(ctx, sms.Gone{Number: m.To, Code: e.Code, Reason: e.Reason})
		}
		c.cfg.Logger.Debug("twilio: refused", "status", e.Status, "code", e.Code, "to", masked)
		return sms.Receipt{}, e
	}
	r := sms.Receipt{At: c.cfg.Now(), Segments: sms.Segments(m.Body).Segments}
	if res.Sid != nil {
		r.SID = *res.Sid
	}
	if res.Status != nil {
		r.Status = *res.Status
	}
	return r, nil
}

// codes maps Twilio error codes onto classes.
var codes = map[int]error{
	21211: sms.ErrInvalidNumber,  // invalid 'To' number
	21614: sms.ErrInvalidNumber,  // 'To' is not a mobile number
	21635: sms.ErrInvalidNumber,  // 'To' is a landline
	21610: sms.ErrRecipientGone,  // unsubscribed (STOP)
	20429: sms.ErrRateLimited,    // too many requests
	20003: sms.ErrAuth,           // authentication failed
	20500: sms.ErrUnavailable,    // internal error
	20503: sms.ErrUnavailable,    // service unavailable
	21408: sms.ErrRejected,       // region not enabled
	21606: sms.ErrInvalidMessage, // 'From' not a valid number for this account
	21602: sms.ErrInvalidMessage, // body required
	21617: sms.ErrInvalidMessage, // body too long
	21608: sms.ErrRejected,       // unverified number on a trial account
}

func (c *client) classify(err error, retryAfter, masked string) *sms.Error {
	e := &sms.Error{Provider: "twilio", To: masked}
	var te *twiliogo.TwilioRestError
	if !errors.As(err, &te) {
		// Network, timeout, or a non-JSON body. Drop any URL: it names the account.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		e.Kind, e.Err = sms.ErrUnavailable, err
		if tlsguard.Untrusted(err) {
			e.Kind, e.Reason = sms.ErrAuth, "server certificate not trusted"
		}
		return e
	}
	e.Status, e.Code = te.Status, te.Code
	e.Reason = redact.PhoneNumbers(te.Message)
	kind, ok := codes[te.Code]
	switch {
	case ok:
	case te.Status == http.StatusTooManyRequests:
		kind = sms.ErrRateLimited
	case te.Status >= 500:
		kind = sms.ErrUnavailable
	case te.Status == http.StatusUnauthorized || te.Status == http.StatusForbidden:
		kind = sms.ErrAuth
	default:
		kind = sms.ErrRejected
	}
	e.Kind = kind
	if e.Retryable() {
		e.RetryAfter = redact.RetryAfter(retryAfter, c.cfg.Now())
	}
	return e
}
