// Package apns sends push notifications to Apple's APNs over HTTP/2 with
// github.com/sideshow/apns2, and classifies every APNs answer into the
// error classes of package push.
//
// Token auth (a .p8 key) and certificate auth are both supported. The
// provider JWT is made once per client, shared by every connection, and
// made again before Apple's one-hour limit (apns2 renews it after 50
// minutes) or when APNs answers ExpiredProviderToken (at most once per
// MinTokenRefresh, as Apple refuses renewals more often than every 20
// minutes). A client keeps Connections HTTP/2 connections and spreads
// requests over them; each carries many concurrent streams.
package apns

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/heraldhq/herald/internal/tlsguard"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/secret"
)

// Hosts of APNs.
const (
	HostProduction  = apns2.HostProduction
	HostDevelopment = apns2.HostDevelopment
)

// Payload limits in bytes.
const (
	MaxPayload     = 4096
	MaxVoIPPayload = 5120
)

// Config configures a Client. Set either AuthKey, KeyID and TeamID (token
// auth) or Certificate (certificate auth).
type Config struct {
	// AuthKey is the .p8 key file's content (PKCS#8 PEM, ECDSA P-256).
	AuthKey secret.Value
	KeyID   string
	TeamID  string
	// Certificate is the client certificate for certificate auth (load it
	// with tls.X509KeyPair, or apns2's certificate package for .p12), sealed
	// so that no rendering of the Config prints its private key:
	// secret.Seal(&cert).
	Certificate secret.Opaque[*tls.Certificate]
	// Topic is the default apns-topic (usually the bundle ID). Required
	// unless every notification sets APNsOverride.Topic.
	Topic string
	// Production selects api.push.apple.com; otherwise the development
	// (sandbox) host. Host, when set, wins (tests, proxies).
	Production bool
	Host       string
	// Connections is how many HTTP/2 connections to keep. Default 1: one
	// connection carries many concurrent streams (up to the server's limit,
	// 1,000 at Apple); add connections for throughput past one TLS stream.
	Connections int
	// Timeout bounds one request. Default 30s.
	Timeout time.Duration
	// TLSConfig adds trust roots or other settings (a private CA, a fake
	// APNs in tests). Certificates in it are replaced by Certificate.
	TLSConfig *tls.Config
	// HTTPClient, when set, carries every request instead of the client's
	// own HTTP/2 transports (a host behind a proxy, a custom dialer). It
	// must speak HTTP/2 (an http.Transport with ForceAttemptHTTP2 does);
	// Connections and TLSConfig are then unused, and with certificate auth
	// its TLS configuration must present the certificate. Its Timeout, if
	// zero, is set to Timeout on a copy.
	HTTPClient *http.Client
	// MinTokenRefresh is the least time between two forced JWT renewals.
	// Default 20 minutes, Apple's limit.
	MinTokenRefresh time.Duration
	// OnGone is called when APNs says a token is gone (410, BadDeviceToken,
	// DeviceTokenNotForTopic).
	OnGone push.GoneFunc
	// Logger receives operational messages; tokens are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fake is what a fake APNs hands its clients: pushtest.APNsServer is one.
// The client package defines it, so the fake imports no client.
type Fake interface {
	URL() string
	TLSConfig() *tls.Config
	AuthKey() (p8 secret.Value, keyID, teamID string)
}

// UseFake points cfg at f: its URL and trust roots, and its signing key
// unless cfg has credentials of its own. It returns cfg.
func (cfg *Config) UseFake(f Fake) *Config {
	cfg.Host = f.URL()
	cfg.TLSConfig = f.TLSConfig()
	if cfg.AuthKey.IsZero() && cfg.Certificate.IsZero() {
		cfg.AuthKey, cfg.KeyID, cfg.TeamID = f.AuthKey()
	}
	return cfg
}

// Client sends to APNs. It is safe for concurrent use. Its state (the
// signing key, the current JWT, the connections) is sealed: no rendering
// of a *Client, by fmt, slog, encoding/json or a reflective dumper, prints
// a credential.
type Client struct {
	st secret.Opaque[*client]
}

type client struct {
	cfg     Config
	conns   []*apns2.Client
	next    atomic.Uint32
	tok     *token.Token // nil with certificate auth
	refresh sync.Mutex
	lastRef time.Time
	// renewAt (unix seconds) and current mirror tok, so the send path reads
	// them without taking the token's lock.
	renewAt atomic.Int64
	current atomic.Pointer[string]
}

var _ push.Sender = (*Client)(nil)

// New returns a client. It parses the key or certificate now, so a bad
// credential fails here, before any send.
func New(cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("apns: New: missing config")
	}
	c := &client{cfg: *cfg}
	cc := &c.cfg
	cc.Connections = cmp.Or(cc.Connections, 1)
	cc.Timeout = cmp.Or(cc.Timeout, 30*time.Second)
	cc.MinTokenRefresh = cmp.Or(cc.MinTokenRefresh, 20*time.Minute)
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Now == nil {
		cc.Now = time.Now
	}
	if cc.Host == "" {
		cc.Host = HostDevelopment
		if cc.Production {
			cc.Host = HostProduction
		}
	}
	cert := cc.Certificate.Get()
	if err := validTopic(cc.Topic); cc.Topic != "" && err != nil {
		return nil, fmt.Errorf("apns: Config.Topic: %w", err)
	}
	switch {
	case !cc.AuthKey.IsZero() && cert != nil:
		return nil, errors.New("apns: Config: set AuthKey or Certificate, not both")
	case !cc.AuthKey.IsZero():
		key, err := token.AuthKeyFromBytes(cc.AuthKey.Bytes())
		if err != nil {
			// The parser's errors do not quote the key.
			return nil, fmt.Errorf("apns: Config.AuthKey is not a .p8 (PKCS#8 PEM ECDSA) key: %w", err)
		}
		if cc.KeyID == "" || cc.TeamID == "" {
			return nil, errors.New("apns: Config: token auth needs KeyID and TeamID")
		}
		c.tok = &token.Token{AuthKey: key, KeyID: cc.KeyID, TeamID: cc.TeamID}
		if err := c.ensureToken(); err != nil {
			return nil, err
		}
	case cert != nil:
		if len(cert.Certificate) == 0 {
			return nil, errors.New("apns: Config.Certificate holds no certificate")
		}
	default:
		return nil, errors.New("apns: Config: set AuthKey, KeyID and TeamID (token auth) or Certificate")
	}
	if cc.Connections < 0 || cc.Timeout < 0 {
		return nil, errors.New("apns: Config: Connections and Timeout must not be negative")
	}
	if cc.HTTPClient != nil {
		hc := *cc.HTTPClient
		hc.Timeout = cmp.Or(hc.Timeout, cc.Timeout)
		hc.Transport = headerCapture{cmp.Or[http.RoundTripper](hc.Transport, http.DefaultTransport)}
		ac := &apns2.Client{Host: cc.Host, Token: c.tok, HTTPClient: &hc}
		if cert != nil {
			ac.Certificate = *cert
		}
		c.conns = append(c.conns, ac)
		return &Client{st: secret.Seal(c)}, nil
	}
	for range cc.Connections {
		tlsCfg := &tls.Config{}
		if cc.TLSConfig != nil {
			tlsCfg = cc.TLSConfig.Clone()
		}
		if cert != nil {
			tlsCfg.Certificates = []tls.Certificate{*cert}
		}
		transport := &http2.Transport{
			TLSClientConfig: tlsCfg,
			ReadIdleTimeout: apns2.ReadIdleTimeout,
			DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
				d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: apns2.TLSDialTimeout, KeepAlive: apns2.TCPKeepAlive}, Config: cfg}
				return d.DialContext(ctx, network, addr)
			},
		}
		ac := &apns2.Client{
			Host:       cc.Host,
			Token:      c.tok,
			HTTPClient: &http.Client{Transport: headerCapture{transport}, Timeout: cc.Timeout},
		}
		if cert != nil {
			ac.Certificate = *cert
		}
		c.conns = append(c.conns, ac)
	}
	return &Client{st: secret.Seal(c)}, nil
}

// String renders the client without its credentials, as do GoString,
// Format, LogValue and MarshalJSON.
func (c *Client) String() string { return "apns.Client{[REDACTED]}" }

// GoString implements fmt.GoStringer.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter for every verb.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue implements slog.LogValuer.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes the client as its redacted name.
func (c *Client) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Validate checks m as Send would before any network call (token,
// payload, size, headers), so a host can refuse a bad message at the
// door. It implements push.Validator.
func (c *Client) Validate(m *push.Message) error { return c.st.Get().validate(m) }

// Send implements push.Sender: one request per call (a renewal after
// ExpiredProviderToken aside, which APNs answered before reading the
// notification).
func (c *Client) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	return c.st.Get().send(ctx, m)
}

// Build validates m and turns it into the apns2 notification Send would
// post, without any network call. Errors are *push.Error.
func (c *Client) Build(m *push.Message) (*apns2.Notification, error) { return c.st.Get().build(m) }

// CloseIdleConnections closes idle connections.
func (c *Client) CloseIdleConnections() { c.st.Get().closeIdle() }

// ensureToken makes the JWT if it is missing or near Apple's limit, with
// the error apns2's GenerateIfExpired would drop.
func (c *client) ensureToken() error {
	if c.tok == nil || time.Now().Unix() < c.renewAt.Load() {
		return nil
	}
	c.tok.Lock()
	defer c.tok.Unlock()
	if !c.tok.Expired() {
		c.mirror()
		return nil
	}
	if _, err := c.tok.Generate(); err != nil {
		return &push.Error{Provider: push.APNs, Kind: push.ErrAuth, Reason: "cannot sign provider token", Err: err}
	}
	c.mirror()
	return nil
}

// mirror copies the token's state for the lock-free send path; c.tok must
// be locked. It renews a minute before apns2 would.
func (c *client) mirror() {
	b := c.tok.Bearer
	c.current.Store(&b)
	c.renewAt.Store(c.tok.IssuedAt + token.TokenTimeout - 60)
}

// forceRefresh renews the JWT after ExpiredProviderToken, unless bearer
// was already replaced by another request or the last forced renewal was
// less than MinTokenRefresh ago. It reports whether a retry may help.
func (c *client) forceRefresh(bearer string) bool {
	c.refresh.Lock()
	defer c.refresh.Unlock()
	if *c.current.Load() != bearer {
		return true // renewed meanwhile
	}
	now := c.cfg.Now()
	if !c.lastRef.IsZero() && now.Sub(c.lastRef) < c.cfg.MinTokenRefresh {
		return false
	}
	c.lastRef = now
	c.tok.Lock()
	defer c.tok.Unlock()
	_, err := c.tok.Generate()
	c.mirror()
	return err == nil
}

func (c *client) bearer() string {
	if c.tok == nil {
		return ""
	}
	return *c.current.Load()
}

func (c *client) validate(m *push.Message) error {
	_, err := c.build(m)
	return err
}

func (c *client) send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	n, err := c.build(m)
	if err != nil {
		return push.Receipt{}, err
	}
	for attempt := 0; ; attempt++ {
		if err := c.ensureToken(); err != nil {
			return push.Receipt{}, err
		}
		bearer := c.bearer()
		conn := c.conns[int(c.next.Add(1))%len(c.conns)]
		hdr := &capturedHeaders{}
		res, err := conn.PushWithContext(context.WithValue(ctx, headerKey{}, hdr), n)
		if err != nil {
			return push.Receipt{}, transportError(ctx, err, m.Token)
		}
		if res.StatusCode == http.StatusOK {
			return push.Receipt{Provider: push.APNs, ID: res.ApnsID, At: c.cfg.Now()}, nil
		}
		if res.Reason == apns2.ReasonExpiredProviderToken && c.tok != nil && attempt == 0 && c.forceRefresh(bearer) {
			continue
		}
		perr := c.classify(res, hdr, m.Token)
		if errors.Is(perr, push.ErrUnregistered) && c.cfg.OnGone != nil {
			c.cfg.OnGone(ctx, push.Gone{Provider: push.APNs, Token: m.Token, Reason: res.Reason, At: perr.Timestamp})
		}
		c.cfg.Logger.Debug("apns: refused", "status", res.StatusCode, "reason", res.Reason, "token", push.MaskToken(m.Token))
		return push.Receipt{}, perr
	}
}

// transportError classes an error that came before any APNs answer: a
// request the transport refused to build (a header it would not send)
// is the message's fault, a server certificate we do not trust is our
// configuration's, and anything else (refused, reset, timed out) is the
// network's: the provider is unavailable.
func transportError(ctx context.Context, err error, tok string) *push.Error {
	e := &push.Error{Provider: push.APNs, Kind: push.ErrUnavailable, Token: push.MaskToken(tok), Err: networkError(ctx, err)}
	switch {
	case tlsguard.Untrusted(err):
		e.Kind, e.Reason = push.ErrAuth, "server certificate not trusted"
	case tlsguard.LocalRequestError(err):
		e.Kind, e.Reason = push.ErrInvalidMessage, "the HTTP/2 transport refused the request"
	}
	return e
}

// networkError drops the request URL (which holds the device token) from
// the transport's error.
func networkError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// reasons maps every APNs reason to a class.
var reasons = map[string]error{
	apns2.ReasonBadCollapseID:               push.ErrInvalidMessage,
	apns2.ReasonBadDeviceToken:              push.ErrUnregistered,
	apns2.ReasonBadExpirationDate:           push.ErrInvalidMessage,
	apns2.ReasonBadMessageID:                push.ErrInvalidMessage,
	apns2.ReasonBadPriority:                 push.ErrInvalidMessage,
	apns2.ReasonBadTopic:                    push.ErrInvalidMessage,
	apns2.ReasonDeviceTokenNotForTopic:      push.ErrUnregistered,
	apns2.ReasonDuplicateHeaders:            push.ErrInvalidMessage,
	apns2.ReasonIdleTimeout:                 push.ErrUnavailable,
	"InvalidPushType":                       push.ErrInvalidMessage,
	apns2.ReasonMissingDeviceToken:          push.ErrInvalidToken,
	apns2.ReasonMissingTopic:                push.ErrInvalidMessage,
	apns2.ReasonPayloadEmpty:                push.ErrInvalidMessage,
	apns2.ReasonTopicDisallowed:             push.ErrInvalidMessage,
	apns2.ReasonBadCertificate:              push.ErrAuth,
	apns2.ReasonBadCertificateEnvironment:   push.ErrAuth,
	apns2.ReasonExpiredProviderToken:        push.ErrAuth,
	apns2.ReasonForbidden:                   push.ErrAuth,
	apns2.ReasonInvalidProviderToken:        push.ErrAuth,
	apns2.ReasonMissingProviderToken:        push.ErrAuth,
	"BadEnvironmentKeyInToken":              push.ErrAuth,
	"UnrelatedKeyIdInToken":                 push.ErrAuth,
	apns2.ReasonBadPath:                     push.ErrInvalidMessage,
	apns2.ReasonMethodNotAllowed:            push.ErrInvalidMessage,
	"ExpiredToken":                          push.ErrUnregistered,
	apns2.ReasonUnregistered:                push.ErrUnregistered,
	apns2.ReasonPayloadTooLarge:             push.ErrPayloadTooLarge,
	apns2.ReasonTooManyProviderTokenUpdates: push.ErrRateLimited,
	apns2.ReasonTooManyRequests:             push.ErrRateLimited,
	apns2.ReasonInternalServerError:         push.ErrUnavailable,
	apns2.ReasonServiceUnavailable:          push.ErrUnavailable,
	apns2.ReasonShutdown:                    push.ErrUnavailable,
}

func (c *client) classify(res *apns2.Response, hdr *capturedHeaders, tok string) *push.Error {
	kind, ok := reasons[res.Reason]
	if !ok {
		switch {
		case res.StatusCode == http.StatusTooManyRequests:
			kind = push.ErrRateLimited
		case res.StatusCode >= 500:
			kind = push.ErrUnavailable
		case res.StatusCode == http.StatusGone:
			kind = push.ErrUnregistered
		case res.StatusCode == http.StatusForbidden:
			kind = push.ErrAuth
		case res.StatusCode == http.StatusRequestEntityTooLarge:
			kind = push.ErrPayloadTooLarge
		default:
			kind = push.ErrInvalidMessage
		}
	}
	e := &push.Error{Provider: push.APNs, Kind: kind, Status: res.StatusCode, Reason: res.Reason, Token: push.MaskToken(tok)}
	if kind == push.ErrUnregistered && !res.Timestamp.IsZero() {
		e.Timestamp = res.Timestamp.Time
	}
	if e.Retryable() {
		e.RetryAfter = push.ParseRetryAfter(hdr.retryAfter(), c.cfg.Now())
	}
	return e
}

func (c *client) build(m *push.Message) (*apns2.Notification, error) {
	bad := func(kind error, reason string) error {
		return &push.Error{Provider: push.APNs, Kind: kind, Reason: reason, Token: push.MaskToken(m.Token)}
	}
	if err := ValidToken(m.Token); err != nil {
		return nil, bad(push.ErrInvalidToken, err.Error())
	}
	nt := &m.Notification
	ov := nt.APNs
	if ov == nil {
		ov = &push.APNsOverride{}
	}
	topic := cmp.Or(ov.Topic, c.cfg.Topic)
	if topic == "" {
		return nil, bad(push.ErrInvalidMessage, "missing topic: set Config.Topic or APNsOverride.Topic")
	}
	if err := validTopic(topic); err != nil {
		return nil, bad(push.ErrInvalidMessage, "APNsOverride.Topic: "+err.Error())
	}
	pushType := apns2.EPushType(ov.PushType)
	if pushType == "" {
		pushType = apns2.PushTypeAlert
		if nt.Silent {
			pushType = apns2.PushTypeBackground
		}
	}
	switch pushType {
	case apns2.PushTypeVOIP:
		topic = withSuffix(topic, ".voip")
	case apns2.PushTypeLiveActivity:
		topic = withSuffix(topic, ".push-type.liveactivity")
	case apns2.PushTypeComplication:
		topic = withSuffix(topic, ".complication")
	case apns2.PushTypePushToTalk:
		topic = withSuffix(topic, ".voip-ptt")
	case apns2.PushTypeAlert, apns2.PushTypeBackground, apns2.PushTypeLocation, apns2.PushTypeFileProvider, apns2.PushTypeMDM:
	default:
		return nil, bad(push.ErrInvalidMessage, fmt.Sprintf("unknown push type %q", ov.PushType))
	}
	priority := ov.Priority
	if priority == 0 {
		switch {
		case nt.Silent || pushType == apns2.PushTypeBackground:
			priority = apns2.PriorityLow // Apple requires 5 for background pushes
		case nt.Priority == push.PriorityLow:
			priority = 1
		case nt.Priority == push.PriorityNormal:
			priority = apns2.PriorityLow
		default:
			priority = apns2.PriorityHigh
		}
	}
	if priority != 1 && priority != 5 && priority != 10 {
		return nil, bad(push.ErrInvalidMessage, fmt.Sprintf("priority %d (APNs takes 1, 5 or 10)", priority))
	}
	collapse := push.CollapseKeyFor(m)
	if len(collapse) > 64 {
		return nil, bad(push.ErrInvalidMessage, "collapse ID over 64 bytes")
	}
	if !headerSafe(collapse) {
		return nil, bad(push.ErrInvalidMessage, "collapse ID has a control or non-ASCII character (it is sent as the apns-collapse-id header)")
	}
	body, err := Payload(nt)
	if err != nil {
		return nil, bad(push.ErrInvalidMessage, err.Error())
	}
	limit := MaxPayload
	if pushType == apns2.PushTypeVOIP {
		limit = MaxVoIPPayload
	}
	if len(body) > limit {
		return nil, bad(push.ErrPayloadTooLarge, fmt.Sprintf("%d bytes, over APNs' %d", len(body), limit))
	}
	return &apns2.Notification{
		DeviceToken: m.Token,
		Topic:       topic,
		PushType:    pushType,
		Priority:    priority,
		CollapseID:  collapse,
		Expiration:  nt.ExpiryAt(c.cfg.Now()),
		Payload:     body,
	}, nil
}

// validTopic checks a topic (a bundle ID, with a suffix for some push
// types): it is sent as the apns-topic header, so it must be printable
// ASCII without spaces, and Apple's bundle IDs are at most 155 bytes.
func validTopic(t string) error {
	if len(t) > 200 {
		return fmt.Errorf("topic of %d bytes, over 200", len(t))
	}
	for i := 0; i < len(t); i++ {
		if b := t[i]; b <= ' ' || b >= 0x7f {
			return errors.New("topic has a space, control or non-ASCII character (it is sent as the apns-topic header)")
		}
	}
	return nil
}

// headerSafe reports whether v can be sent as an HTTP/2 header value as
// it is: printable ASCII and spaces, nothing the transport would refuse.
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' || b >= 0x7f {
			return false
		}
	}
	return true
}

func withSuffix(topic, suffix string) string {
	if strings.HasSuffix(topic, suffix) {
		return topic
	}
	return topic + suffix
}

// ValidToken checks the shape of an APNs device token: hexadecimal, an
// even number of digits, 64 to 200 of them.
func ValidToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty device token")
	case len(tok) < 64 || len(tok) > 200 || len(tok)%2 != 0:
		return fmt.Errorf("device token of %d characters (want 64 to 200 hex digits)", len(tok))
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return errors.New("device token is not hexadecimal")
		}
	}
	return nil
}

// Payload renders n as the APNs JSON payload:
//
//	{"aps":{"alert":{"title":…,"subtitle":…,"body":…},"badge":1,"sound":"default",
//	 "category":…,"thread-id":…,"mutable-content":1,"content-available":1,
//	 "interruption-level":…}, <Data>, "url":…, "image":…, <APNsOverride.Custom>}
//
// Keys beside "aps" come in sorted order.
func Payload(n *push.Notification) ([]byte, error) {
	a := apsJSON{Badge: n.Badge, Category: n.Category, ThreadID: n.ThreadID, InterruptionLevel: string(n.InterruptionLevel)}
	if n.Silent {
		a.ContentAvailable = 1
	} else {
		if n.Title != "" || n.Subtitle != "" || n.Body != "" {
			a.Alert = &alertJSON{Title: n.Title, Subtitle: n.Subtitle, Body: n.Body}
		}
		a.Sound = n.Sound
	}
	if n.MutableContent || n.ImageURL != "" {
		a.MutableContent = 1
	}
	var buf bytes.Buffer
	buf.Grow(256)
	buf.WriteString(`{"aps":`)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&a); err != nil {
		return nil, err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	extra := len(n.Data)
	if n.APNs != nil {
		extra += len(n.APNs.Custom)
	}
	if extra > 0 || n.URL != "" || n.ImageURL != "" {
		root := make(map[string]any, extra+2)
		for k, v := range n.Data {
			root[k] = v
		}
		if n.URL != "" {
			root["url"] = n.URL
		}
		if n.ImageURL != "" {
			root["image"] = n.ImageURL
		}
		if n.APNs != nil {
			for k, v := range n.APNs.Custom {
				root[k] = v
			}
		}
		if _, ok := root["aps"]; ok {
			return nil, errors.New(`the "aps" key is reserved (set by Data or APNsOverride.Custom)`)
		}
		keys := make([]string, 0, len(root))
		for k := range root {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			buf.WriteByte(',')
			if err := enc.Encode(k); err != nil {
				return nil, err
			}
			buf.Truncate(buf.Len() - 1)
			buf.WriteByte(':')
			if err := enc.Encode(root[k]); err != nil {
				return nil, err
			}
			buf.Truncate(buf.Len() - 1)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

type apsJSON struct {
	Alert             *alertJSON `json:"alert,omitempty"`
	Badge             *int       `json:"badge,omitempty"`
	Sound             string     `json:"sound,omitempty"`
	Category          string     `json:"category,omitempty"`
	ThreadID          string     `json:"thread-id,omitempty"`
	ContentAvailable  int        `json:"content-available,omitempty"`
	MutableContent    int        `json:"mutable-content,omitempty"`
	InterruptionLevel string     `json:"interruption-level,omitempty"`
}

type alertJSON struct {
	Title    string `json:"title,omitempty"`
	Subtitle string `json:"subtitle,omitempty"`
	Body     string `json:"body,omitempty"`
}

// PublicKey returns the public half of a .p8 key, for a fake APNs that
// checks JWT signatures.
func PublicKey(p8 []byte) (*ecdsa.PublicKey, error) {
	key, err := token.AuthKeyFromBytes(p8)
	if err != nil {
		return nil, err
	}
	return &key.PublicKey, nil
}

// headerCapture records the response headers apns2 does not expose
// (Retry-After) for the request's context.
type headerCapture struct{ base http.RoundTripper }

type headerKey struct{}

type capturedHeaders struct {
	mu sync.Mutex
	ra string
}

func (h *capturedHeaders) retryAfter() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ra
}

func (t headerCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(r)
	if err == nil {
		if h, ok := r.Context().Value(headerKey{}).(*capturedHeaders); ok {
			h.mu.Lock()
			h.ra = res.Header.Get("Retry-After")
			h.mu.Unlock()
		}
	}
	return res, err
}

func (c *client) closeIdle() {
	for _, conn := range c.conns {
		if t, ok := conn.HTTPClient.Transport.(headerCapture).base.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
}
