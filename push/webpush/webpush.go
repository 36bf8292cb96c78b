// Package webpush sends Web Push notifications (RFC 8030) with payloads
// encrypted per RFC 8291 (aes128gcm) and VAPID authentication (RFC 8292),
// over github.com/SherClockHolmes/webpush-go, and classifies every push
// service answer into the error classes of package push.
//
// A subscription's endpoint comes from a browser, so from anyone: before
// any request the endpoint must be https on a known push service (or a
// host the operator added), and at connect time every address it resolves
// to must be public, checked on the socket itself so DNS rebinding cannot
// get around it. Redirects are never followed.
package webpush

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"

	"github.com/heraldhq/herald/internal/tlsguard"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/secret"
)

// MaxPayload is the largest plaintext that fits one 4096-byte aes128gcm
// record (4096 − 16 tag − 86 header − 1 delimiter).
const MaxPayload = 3993

// DefaultTTL applies when a notification sets no TTL or expiry: RFC 8030
// lets a push service drop a TTL-0 message for an offline device.
const DefaultTTL = 28 * 24 * time.Hour

// ErrInvalidVAPIDKeys is returned by New for keys that do not parse or do
// not pair.
var ErrInvalidVAPIDKeys = errors.New("webpush: invalid VAPID keys")

// Config configures a Client.
type Config struct {
	// VAPIDPublicKey is the application server key browsers subscribed with
	// (base64url, 65 bytes uncompressed P-256).
	VAPIDPublicKey string
	// VAPIDPrivateKey is its private half (base64url, 32 bytes).
	VAPIDPrivateKey secret.Value
	// Subscriber is the contact in the VAPID JWT: an email address
	// (without "mailto:") or an https URL.
	Subscriber string
	// AllowedHosts adds push services: "host" (port 443) or "host:port".
	AllowedHosts []string
	// AllowLoopback lets endpoints resolve to loopback addresses: for tests
	// against a local fake only.
	AllowLoopback bool
	// TLSConfig adds trust roots (tests).
	TLSConfig *tls.Config
	// Timeout bounds one request. Default 30s.
	Timeout time.Duration
	// LookupIP resolves host names (tests). Default: the system resolver.
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// OnGone is called when a push service says a subscription is gone (404, 410).
	OnGone push.GoneFunc
	// Logger receives operational messages; endpoints are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fake is what a fake push service hands its clients:
// pushtest.WebPushServer is one. The client package defines it, so the
// fake imports no client.
type Fake interface {
	URL() string
	TLSConfig() *tls.Config
}

// UseFake lets cfg reach f: it trusts f's certificate, adds f's host and
// port to AllowedHosts and allows loopback (for a fake only). It returns
// cfg.
func (cfg *Config) UseFake(f Fake) *Config {
	cfg.TLSConfig = f.TLSConfig()
	cfg.AllowLoopback = true
	cfg.AllowedHosts = append(cfg.AllowedHosts, strings.TrimPrefix(f.URL(), "https://"))
	return cfg
}

// Client sends Web Push notifications. It is safe for concurrent use. Its
// state (the VAPID private key) is sealed: no rendering of a *Client
// prints it.
type Client struct {
	st secret.Opaque[*client]
}

type client struct {
	cfg   Config
	guard *guard
	http  *http.Client
	priv  secret.Value // VAPID private key, base64url, for webpush-go
}

// String renders the client without its credentials, as do GoString,
// Format, LogValue and MarshalJSON.
func (c *Client) String() string { return "webpush.Client{[REDACTED]}" }

// GoString implements fmt.GoStringer.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter for every verb.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue implements slog.LogValuer.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes the client as its redacted name.
func (c *Client) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Validate checks m as Send would before any network call (the
// subscription, its endpoint against the client's rules — without the DNS
// lookup Send makes —, the payload and its size), so a host can refuse a
// bad message at the door. It implements push.Validator.
func (c *Client) Validate(m *push.Message) error {
	_, _, _, err := c.st.Get().check(m)
	return err
}

// ParseSubscription decodes and checks a subscription's JSON and its
// endpoint against the client's rules. Errors are *push.Error with
// ErrInvalidToken or ErrForbiddenEndpoint.
func (c *Client) ParseSubscription(s string) (*Subscription, error) {
	return c.st.Get().parseSubscription(s)
}

// Send implements push.Sender: one request per call. m.Token is the
// subscription's JSON.
func (c *Client) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	return c.st.Get().send(ctx, m)
}

// CloseIdleConnections closes idle connections.
func (c *Client) CloseIdleConnections() { c.st.Get().http.CloseIdleConnections() }

var _ push.Sender = (*Client)(nil)

// GenerateVAPIDKeys makes a new VAPID key pair: the public key to give
// browsers (base64url) and the private key to keep.
func GenerateVAPIDKeys() (public string, private secret.Value, err error) {
	priv, pub, err := webpushgo.GenerateVAPIDKeys()
	if err != nil {
		return "", secret.Value{}, fmt.Errorf("webpush: %w", err)
	}
	return pub, secret.String(priv), nil
}

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	return base64.RawURLEncoding.DecodeString(s)
}

// New returns a client. It checks the VAPID keys now: they must decode and
// the private key must match the public one.
func New(cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("webpush: New: missing config")
	}
	c := &client{cfg: *cfg}
	cc := &c.cfg
	cc.Timeout = cmp.Or(cc.Timeout, 30*time.Second)
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Now == nil {
		cc.Now = time.Now
	}
	if cc.LookupIP == nil {
		cc.LookupIP = defaultLookup
	}
	pub, err := decodeB64(cc.VAPIDPublicKey)
	if err != nil || len(pub) != 65 {
		return nil, fmt.Errorf("%w: VAPIDPublicKey must be base64url of a 65-byte P-256 point", ErrInvalidVAPIDKeys)
	}
	privBytes, err := decodeB64(cc.VAPIDPrivateKey.Reveal())
	if err != nil || len(privBytes) != 32 {
		return nil, fmt.Errorf("%w: VAPIDPrivateKey must be base64url of a 32-byte P-256 scalar", ErrInvalidVAPIDKeys)
	}
	key, err := ecdh.P256().NewPrivateKey(privBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: VAPIDPrivateKey is not a valid P-256 key", ErrInvalidVAPIDKeys)
	}
	if !bytes.Equal(key.PublicKey().Bytes(), pub) {
		return nil, fmt.Errorf("%w: VAPIDPrivateKey does not match VAPIDPublicKey", ErrInvalidVAPIDKeys)
	}
	c.priv = secret.String(base64.RawURLEncoding.EncodeToString(privBytes))
	cc.Subscriber = strings.TrimPrefix(cc.Subscriber, "mailto:")
	if cc.Subscriber == "" {
		return nil, errors.New("webpush: Config.Subscriber is required (an email address or https URL)")
	}
	if strings.ContainsAny(cc.Subscriber, "\r\n") {
		return nil, errors.New("webpush: Config.Subscriber has a line break")
	}
	g := &guard{allowLoopback: cc.AllowLoopback, lookup: cc.LookupIP}
	for _, h := range cc.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, "/@?#% \t\r\n") {
			return nil, fmt.Errorf("webpush: Config.AllowedHosts: %q is not a host or host:port", h)
		}
		g.allowed = append(g.allowed, h)
	}
	c.guard = g
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cc.TLSConfig != nil {
		tlsCfg = cc.TLSConfig.Clone()
	}
	c.http = &http.Client{
		Transport: &http.Transport{
			DialContext:           g.dial,
			TLSClientConfig:       tlsCfg,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cc.Timeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
		},
		Timeout: cc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // never follow a push service elsewhere
		},
	}
	return &Client{st: secret.Seal(c)}, nil
}

// Subscription is a browser's PushSubscription.
type Subscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256dh string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

func (c *client) check(m *push.Message) (*Subscription, []byte, webpushgo.Urgency, error) {
	sub, err := c.parseSubscription(m.Token)
	if err != nil {
		return nil, nil, "", err
	}
	bad := func(kind error, why string) error {
		return &push.Error{Provider: push.WebPush, Kind: kind, Reason: why, Token: maskEndpoint(sub.Endpoint)}
	}
	n := &m.Notification
	body, err := BuildPayload(n)
	if err != nil {
		return nil, nil, "", bad(push.ErrInvalidMessage, err.Error())
	}
	if len(body) > MaxPayload {
		return nil, nil, "", bad(push.ErrPayloadTooLarge, fmt.Sprintf("%d bytes, over the %d that fit one record", len(body), MaxPayload))
	}
	urg, err := urgency(n)
	if err != nil {
		return nil, nil, "", bad(push.ErrInvalidMessage, err.Error())
	}
	return sub, body, urg, nil
}

func (c *client) parseSubscription(s string) (*Subscription, error) {
	bad := func(why string) error {
		return &push.Error{Provider: push.WebPush, Kind: push.ErrInvalidToken, Reason: why}
	}
	if len(s) > 8192 {
		return nil, bad("subscription over 8 KiB")
	}
	var sub Subscription
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&sub); err != nil {
		return nil, bad("subscription is not JSON of {endpoint, keys: {p256dh, auth}}")
	}
	if sub.Endpoint == "" {
		return nil, bad("subscription has no endpoint")
	}
	p, err := decodeB64(sub.Keys.P256dh)
	if err != nil || len(p) != 65 {
		return nil, bad("subscription's p256dh is not a base64url 65-byte P-256 key")
	}
	if _, err := ecdh.P256().NewPublicKey(p); err != nil {
		return nil, bad("subscription's p256dh is not a point on P-256")
	}
	if a, err := decodeB64(sub.Keys.Auth); err != nil || len(a) != 16 {
		return nil, bad("subscription's auth is not a base64url 16-byte secret")
	}
	if err := c.guard.checkEndpoint(sub.Endpoint); err != nil {
		return nil, err
	}
	return &sub, nil
}

// Payload is the JSON the service worker receives.
type Payload struct {
	Title   string              `json:"title,omitempty"`
	Body    string              `json:"body,omitempty"`
	Icon    string              `json:"icon,omitempty"`
	Image   string              `json:"image,omitempty"`
	URL     string              `json:"url,omitempty"`
	Tag     string              `json:"tag,omitempty"`
	Badge   *int                `json:"badge,omitempty"`
	Silent  bool                `json:"silent,omitempty"`
	Data    map[string]string   `json:"data,omitempty"`
	Actions []map[string]string `json:"actions,omitempty"`
}

// BuildPayload renders n as the service worker's JSON payload.
func BuildPayload(n *push.Notification) ([]byte, error) {
	p := Payload{Title: n.Title, Body: n.Body, Image: n.ImageURL, URL: n.URL, Tag: n.ThreadID, Badge: n.Badge, Silent: n.Silent, Data: n.Data}
	if n.WebPush != nil {
		p.Icon, p.Actions = n.WebPush.Icon, n.WebPush.Actions
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func urgency(n *push.Notification) (webpushgo.Urgency, error) {
	if n.WebPush != nil && n.WebPush.Urgency != "" {
		switch u := webpushgo.Urgency(n.WebPush.Urgency); u {
		case webpushgo.UrgencyVeryLow, webpushgo.UrgencyLow, webpushgo.UrgencyNormal, webpushgo.UrgencyHigh:
			return u, nil
		}
		return "", fmt.Errorf("urgency %q (want very-low, low, normal or high)", n.WebPush.Urgency)
	}
	switch n.Priority {
	case push.PriorityLow:
		return webpushgo.UrgencyLow, nil
	case push.PriorityNormal:
		return webpushgo.UrgencyNormal, nil
	}
	if n.Silent {
		return webpushgo.UrgencyNormal, nil
	}
	return webpushgo.UrgencyHigh, nil
}

func (c *client) send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	sub, body, urg, err := c.check(m)
	if err != nil {
		return push.Receipt{}, err
	}
	masked := maskEndpoint(sub.Endpoint)
	bad := func(kind error, why string) error {
		return &push.Error{Provider: push.WebPush, Kind: kind, Reason: why, Token: masked}
	}
	n := &m.Notification
	now := c.cfg.Now()
	ttl := DefaultTTL
	if exp := n.ExpiryAt(now); !exp.IsZero() {
		ttl = exp.Sub(now)
		if ttl <= 0 {
			return push.Receipt{}, bad(push.ErrInvalidMessage, "notification already expired")
		}
	}
	res, err := webpushgo.SendNotificationWithContext(ctx, body, &webpushgo.Subscription{
		Endpoint: sub.Endpoint,
		Keys:     webpushgo.Keys{P256dh: sub.Keys.P256dh, Auth: sub.Keys.Auth},
	}, &webpushgo.Options{
		HTTPClient:      c.http,
		Subscriber:      c.cfg.Subscriber,
		Topic:           push.TopicFor(push.CollapseKeyFor(m)),
		TTL:             max(int(ttl.Seconds()), 1),
		Urgency:         urg,
		VAPIDPublicKey:  c.cfg.VAPIDPublicKey,
		VAPIDPrivateKey: c.priv.Reveal(),
	})
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the URL: it is the subscription
		}
		if errors.Is(err, push.ErrForbiddenEndpoint) {
			return push.Receipt{}, &push.Error{Provider: push.WebPush, Kind: push.ErrForbiddenEndpoint, Reason: "endpoint resolves to a non-public address", Token: masked, Err: err}
		}
		if errors.Is(err, webpushgo.ErrMaxPadExceeded) {
			return push.Receipt{}, bad(push.ErrPayloadTooLarge, err.Error())
		}
		if tlsguard.Untrusted(err) {
			return push.Receipt{}, &push.Error{Provider: push.WebPush, Kind: push.ErrAuth, Reason: "push service certificate not trusted", Token: masked, Err: err}
		}
		if tlsguard.LocalRequestError(err) {
			return push.Receipt{}, &push.Error{Provider: push.WebPush, Kind: push.ErrInvalidMessage, Reason: "the HTTP transport refused the request", Token: masked, Err: err}
		}
		return push.Receipt{}, &push.Error{Provider: push.WebPush, Kind: push.ErrUnavailable, Token: masked, Err: err}
	}
	defer res.Body.Close()
	reason, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return push.Receipt{Provider: push.WebPush, ID: res.Header.Get("Location"), At: now}, nil
	}
	e := &push.Error{Provider: push.WebPush, Status: res.StatusCode, Reason: firstLine(reason), Token: masked}
	switch s := res.StatusCode; {
	case s == http.StatusNotFound || s == http.StatusGone:
		e.Kind = push.ErrUnregistered
	case s == http.StatusRequestEntityTooLarge:
		e.Kind = push.ErrPayloadTooLarge
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		e.Kind = push.ErrAuth
	case s == http.StatusTooManyRequests || s == http.StatusNotAcceptable: // 406: Windows' rate limit
		e.Kind = push.ErrRateLimited
	case s >= 500:
		e.Kind = push.ErrUnavailable
	case s >= 300 && s < 400:
		e.Kind, e.Reason = push.ErrInvalidMessage, "redirect not followed"
	default:
		e.Kind = push.ErrInvalidMessage
	}
	if e.Retryable() {
		e.RetryAfter = push.ParseRetryAfter(res.Header.Get("Retry-After"), now)
	}
	if e.Kind == push.ErrUnregistered && c.cfg.OnGone != nil {
		c.cfg.OnGone(ctx, push.Gone{Provider: push.WebPush, Token: m.Token, Reason: http.StatusText(res.StatusCode)})
	}
	c.cfg.Logger.Debug("webpush: refused", "status", res.StatusCode, "endpoint", masked)
	return push.Receipt{}, e
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
