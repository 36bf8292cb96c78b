// Package fcm sends push notifications through Firebase Cloud Messaging's
// HTTP v1 API over net/http, with OAuth 2 tokens from
// golang.org/x/oauth2/google, and classifies every FCM answer into the
// error classes of package push.
//
// Credentials come from a service-account file or its bytes (secret.Value)
// or any oauth2.TokenSource. Every Send is exactly one request to FCM (and,
// when the access token is missing or stale, one to the token endpoint):
// nothing retries underneath the caller, so the retry queue and the
// circuit breaker above it see every attempt and decide alone when to try
// again, with the Retry-After this package reads from the answer. (The
// Firebase Admin SDK retried 500 and 503 and network errors itself, up to
// four times inside one call, and pulled gRPC and the Cloud SDKs into
// every binary that imported it; see ARCHITECTURE.md.)
//
// SendEach sends up to 500 messages, one request each as FCM v1 requires,
// with a result each.
package fcm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/heraldhq/herald/internal/tlsguard"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/secret"
)

// MaxPayload is FCM's limit on a message's notification and data, in bytes.
const MaxPayload = 4096

// MaxBatch is the most messages SendEach takes.
const MaxBatch = 500

// DefaultEndpoint is FCM's HTTP v1 base URL.
const DefaultEndpoint = "https://fcm.googleapis.com/v1"

// Scope is the OAuth 2 scope FCM's HTTP v1 API needs.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// Config configures a Client. Set ProjectID and one credential source.
type Config struct {
	ProjectID string
	// CredentialsFile is a service-account JSON file.
	CredentialsFile string
	// CredentialsJSON is a service-account JSON document.
	CredentialsJSON secret.Value
	// TokenSource supplies OAuth2 tokens directly.
	TokenSource oauth2.TokenSource
	// Endpoint overrides FCM's base URL (DefaultEndpoint); tests point it
	// at a fake.
	Endpoint string
	// HTTPClient carries every request, to FCM and to the token endpoint
	// (a host behind a proxy, with a private CA, a custom dialer). Default:
	// a client of its own with TLSConfig. Its Timeout, if zero, is Timeout
	// on a copy; redirects are never followed.
	HTTPClient *http.Client
	// TLSConfig adds trust roots when HTTPClient is nil.
	TLSConfig *tls.Config
	// Timeout bounds one request. Default 30s.
	Timeout time.Duration
	// OnGone is called when FCM says a token is gone (UNREGISTERED,
	// SENDER_ID_MISMATCH).
	OnGone push.GoneFunc
	// Logger receives operational messages; tokens are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fake is what a fake FCM hands its clients: pushtest.FCMServer is one.
// The client package defines it, so the fake imports no client.
type Fake interface {
	URL() string
	ProjectID() string
	TokenSource() oauth2.TokenSource
}

// UseFake points cfg at f: its endpoint and project, and its token
// source unless cfg has credentials of its own. It returns cfg.
func (cfg *Config) UseFake(f Fake) *Config {
	cfg.Endpoint = f.URL() + "/v1"
	cfg.ProjectID = f.ProjectID()
	if cfg.CredentialsFile == "" && cfg.CredentialsJSON.IsZero() && cfg.TokenSource == nil {
		cfg.TokenSource = f.TokenSource()
	}
	return cfg
}

// Client sends to FCM. It is safe for concurrent use. Its state (the
// token source and its cached access token) is sealed: no rendering of a
// *Client prints a credential.
type Client struct {
	st secret.Opaque[*client]
}

type client struct {
	cfg    Config
	http   *http.Client
	tokens oauth2.TokenSource
	url    string // the messages:send URL
}

var _ push.Sender = (*Client)(nil)

// New returns a client. It parses the credentials now, so a malformed
// service account fails here; ctx is unused (kept for the API's shape).
func New(_ context.Context, cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("fcm: New: missing config")
	}
	c := &client{cfg: *cfg}
	cc := &c.cfg
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Now == nil {
		cc.Now = time.Now
	}
	cc.Timeout = cmp.Or(cc.Timeout, 30*time.Second)
	if cc.Timeout < 0 {
		return nil, errors.New("fcm: Config.Timeout must not be negative")
	}
	if cc.ProjectID == "" {
		return nil, errors.New("fcm: Config.ProjectID is required")
	}
	if strings.ContainsAny(cc.ProjectID, "/?#% \t\r\n") {
		return nil, errors.New("fcm: Config.ProjectID has a character a project ID cannot have")
	}
	if cc.HTTPClient != nil {
		hc := *cc.HTTPClient
		hc.Timeout = cmp.Or(hc.Timeout, cc.Timeout)
		hc.CheckRedirect = noRedirects
		c.http = &hc
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cc.TLSConfig != nil {
			t.TLSClientConfig = cc.TLSConfig.Clone()
		}
		t.ForceAttemptHTTP2 = true
		t.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: t, Timeout: cc.Timeout, CheckRedirect: noRedirects}
	}
	sources := 0
	var sa []byte
	if cc.CredentialsFile != "" {
		b, err := os.ReadFile(cc.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: Config.CredentialsFile: %w", err)
		}
		sa = b
		sources++
	}
	if !cc.CredentialsJSON.IsZero() {
		sa = cc.CredentialsJSON.Bytes()
		sources++
	}
	if cc.TokenSource != nil {
		c.tokens = cc.TokenSource
		sources++
	}
	if sources != 1 {
		return nil, fmt.Errorf("fcm: Config: set exactly one of CredentialsFile, CredentialsJSON and TokenSource (%d set)", sources)
	}
	if sa != nil {
		jc, err := google.JWTConfigFromJSON(sa, Scope)
		if err != nil {
			// The parser's errors name fields, never their values.
			return nil, fmt.Errorf("fcm: credentials are not a service-account key: %w", err)
		}
		// The token source keeps this context for its requests: it carries
		// the client's transport, so token requests go where FCM's do.
		c.tokens = jc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, c.http))
	}
	base := strings.TrimRight(cmp.Or(cc.Endpoint, DefaultEndpoint), "/")
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("fcm: Config.Endpoint %q is not an http(s) URL", cc.Endpoint)
	}
	c.url = base + "/projects/" + cc.ProjectID + "/messages:send"
	return &Client{st: secret.Seal(c)}, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// String renders the client without its credentials, as do GoString,
// Format, LogValue and MarshalJSON.
func (c *Client) String() string { return "fcm.Client{[REDACTED]}" }

// GoString implements fmt.GoStringer.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter for every verb.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue implements slog.LogValuer.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes the client as its redacted name.
func (c *Client) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Validate checks m as Send would before any network call (target, token
// shape, topic, header-bound values, reserved keys, payload size), so a
// host can refuse a bad message at the door. It implements push.Validator.
func (c *Client) Validate(m *push.Message) error {
	_, err := Build(m)
	return err
}

// Send implements push.Sender: one request to FCM.
func (c *Client) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	fm, err := Build(m)
	if err != nil {
		return push.Receipt{}, err
	}
	return c.st.Get().send(ctx, m, fm)
}

// Result is one message's outcome in SendEach.
type Result struct {
	Receipt push.Receipt
	Err     error
}

// sendEachConcurrency bounds SendEach's requests in flight.
const sendEachConcurrency = 16

// SendEach sends up to MaxBatch messages (concurrently, one request each,
// as FCM v1 requires) and returns a result per message, in order. A
// message refused locally gets its error without a request; a partial
// failure is not an error of SendEach.
func (c *Client) SendEach(ctx context.Context, ms []*push.Message) ([]Result, error) {
	if len(ms) > MaxBatch {
		return nil, fmt.Errorf("fcm: SendEach: %d messages, over FCM's %d", len(ms), MaxBatch)
	}
	out := make([]Result, len(ms))
	sem := make(chan struct{}, sendEachConcurrency)
	var wg sync.WaitGroup
	for i, m := range ms {
		if m == nil {
			out[i].Err = &push.Error{Provider: push.FCM, Kind: push.ErrInvalidMessage, Reason: "nil message"}
			continue
		}
		fm, err := Build(m)
		if err != nil {
			out[i].Err = err
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].Receipt, out[i].Err = c.st.Get().send(ctx, m, fm)
		}()
	}
	wg.Wait()
	return out, nil
}

func (c *client) send(ctx context.Context, m *push.Message, fm *Message) (push.Receipt, error) {
	masked := maskIf(m.Token)
	tok, err := c.tokens.Token()
	if err != nil {
		e := classifyTokenError(err)
		e.Token = masked
		c.cfg.Logger.Debug("fcm: no access token", "reason", e.Reason, "kind", e.Kind)
		return push.Receipt{}, e
	}
	body, err := json.Marshal(struct {
		Message *Message `json:"message"`
	}{fm})
	if err != nil {
		return push.Receipt{}, &push.Error{Provider: push.FCM, Kind: push.ErrInvalidMessage, Reason: "cannot encode the message", Token: masked}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return push.Receipt{}, &push.Error{Provider: push.FCM, Kind: push.ErrInvalidMessage, Reason: "cannot build the request", Token: masked}
	}
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	tok.SetAuthHeader(req)
	res, err := c.http.Do(req)
	if err != nil {
		return push.Receipt{}, transportError(ctx, err, masked)
	}
	defer res.Body.Close()
	raw, rerr := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	now := c.cfg.Now()
	if res.StatusCode == http.StatusOK {
		// FCM took the message: a body we cannot read does not change that.
		var ok struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &ok)
		return push.Receipt{Provider: push.FCM, ID: ok.Name, At: now}, nil
	}
	e := Classify(res.StatusCode, res.Header, raw, now)
	if rerr != nil && e.Err == nil {
		e.Err = fmt.Errorf("reading the answer: %w", rerr)
	}
	e.Token = masked
	if errors.Is(e, push.ErrUnregistered) && c.cfg.OnGone != nil && m.Token != "" {
		c.cfg.OnGone(ctx, push.Gone{Provider: push.FCM, Token: m.Token, Reason: e.Reason})
	}
	c.cfg.Logger.Debug("fcm: refused", "status", e.Status, "reason", e.Reason, "token", masked)
	return push.Receipt{}, e
}

// transportError classes an error that came before any answer: a server
// certificate we do not trust is our configuration's fault (ErrAuth),
// anything else the network's (ErrUnavailable). URLs are dropped (they
// name only the project, but stay out of errors all the same).
func transportError(ctx context.Context, err error, masked string) *push.Error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	e := &push.Error{Provider: push.FCM, Kind: push.ErrUnavailable, Token: masked, Err: err}
	switch {
	case tlsguard.Untrusted(err):
		e.Kind, e.Reason = push.ErrAuth, "server certificate not trusted"
	case tlsguard.LocalRequestError(err):
		e.Kind, e.Reason = push.ErrInvalidMessage, "the HTTP transport refused the request"
	case ctx.Err() != nil:
		e.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return e
}

// classifyTokenError classes a failure to get an access token: the token
// endpoint refusing the service account (invalid_grant for a deleted or
// disabled key, unauthorized_client, invalid_client, or any 4xx) is
// ErrAuth, a configuration error no retry fixes; an unreachable or failing
// endpoint is ErrUnavailable.
func classifyTokenError(err error) *push.Error {
	e := &push.Error{Provider: push.FCM, Kind: push.ErrUnavailable, Reason: "token endpoint"}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		e.Status = status
		code := re.ErrorCode
		if code == "" { // the JWT flow leaves the body unparsed
			var b struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(re.Body, &b) == nil {
				code = b.Error
			}
		}
		switch code {
		case "invalid_grant", "unauthorized_client", "invalid_client", "access_denied", "invalid_scope", "unsupported_grant_type":
			e.Kind, e.Reason = push.ErrAuth, "token endpoint: "+code
			return e
		}
		if status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout {
			e.Kind, e.Reason = push.ErrAuth, "token endpoint refused the credentials"
			return e
		}
		e.Err = fmt.Errorf("token endpoint answered %d", status)
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if tlsguard.Untrusted(err) {
		e.Kind, e.Reason = push.ErrAuth, "token endpoint: server certificate not trusted"
	}
	e.Err = err
	return e
}

// fcmError is FCM's error body (google.rpc.Status with FcmError details).
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type      string `json:"@type"`
			ErrorCode string `json:"errorCode"`
		} `json:"details"`
	} `json:"error"`
}

// codes maps FCM's error codes (FcmError.errorCode) onto classes.
var codes = map[string]error{
	"UNREGISTERED":           push.ErrUnregistered,
	"SENDER_ID_MISMATCH":     push.ErrUnregistered,
	"QUOTA_EXCEEDED":         push.ErrRateLimited,
	"UNAVAILABLE":            push.ErrUnavailable,
	"INTERNAL":               push.ErrUnavailable,
	"THIRD_PARTY_AUTH_ERROR": push.ErrAuth,
	"INVALID_ARGUMENT":       push.ErrInvalidMessage,
}

// Classify maps an FCM error answer (status, headers, body) onto push's
// classes. Errors without an FCM code are classed by their status; a 404
// without one (a wrong project or endpoint) is a configuration error
// (ErrAuth), never "unregistered", which would drop every token.
func Classify(status int, h http.Header, body []byte, now time.Time) *push.Error {
	e := &push.Error{Provider: push.FCM, Status: status}
	var fe fcmError
	parsed := json.Unmarshal(body, &fe) == nil && fe.Error.Status != ""
	code := ""
	for _, d := range fe.Error.Details {
		if d.ErrorCode != "" {
			code = d.ErrorCode
		}
	}
	if kind, ok := codes[code]; ok {
		e.Kind, e.Reason = kind, code
		if code == "INVALID_ARGUMENT" && strings.Contains(strings.ToLower(fe.Error.Message), "registration token") {
			e.Kind = push.ErrInvalidToken
		}
	} else {
		e.Reason = fe.Error.Status
		switch {
		case status == http.StatusTooManyRequests:
			e.Kind = push.ErrRateLimited
		case status >= 500:
			e.Kind = push.ErrUnavailable
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			e.Kind = push.ErrAuth
		case status == http.StatusNotFound:
			e.Kind = push.ErrAuth
			e.Reason = cmp.Or(e.Reason, "NOT_FOUND") + ": no such project or endpoint (check ProjectID and Endpoint)"
		case status == http.StatusRequestEntityTooLarge:
			e.Kind = push.ErrPayloadTooLarge
		case status >= 300 && status < 400:
			e.Kind, e.Reason = push.ErrUnavailable, "redirect not followed"
		default:
			e.Kind = push.ErrInvalidMessage
		}
		if !parsed && e.Reason == "" {
			e.Reason = "unreadable error answer"
		}
	}
	if e.Retryable() {
		e.RetryAfter = push.ParseRetryAfter(h.Get("Retry-After"), now)
	}
	return e
}

// Message is FCM's v1 message resource, as Send posts it.
type Message struct {
	Token        string            `json:"token,omitempty"`
	Topic        string            `json:"topic,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
	Notification *Notification     `json:"notification,omitempty"`
	Android      *AndroidConfig    `json:"android,omitempty"`
	APNS         *APNSConfig       `json:"apns,omitempty"`
	Webpush      *WebpushConfig    `json:"webpush,omitempty"`
}

// Notification is the cross-platform notification of a Message.
type Notification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Image string `json:"image,omitempty"`
}

// AndroidConfig is a Message's Android part.
type AndroidConfig struct {
	CollapseKey  string               `json:"collapse_key,omitempty"`
	Priority     string               `json:"priority,omitempty"`
	TTL          string               `json:"ttl,omitempty"` // "3600s"
	Notification *AndroidNotification `json:"notification,omitempty"`
}

// AndroidNotification is the Android notification of a Message.
type AndroidNotification struct {
	Sound       string `json:"sound,omitempty"`
	Tag         string `json:"tag,omitempty"`
	ClickAction string `json:"click_action,omitempty"`
	ChannelID   string `json:"channel_id,omitempty"`
}

// APNSConfig is a Message's APNs part: headers and the payload FCM
// forwards to APNs.
type APNSConfig struct {
	Headers map[string]string `json:"headers,omitempty"`
	Payload map[string]any    `json:"payload,omitempty"`
}

// WebpushConfig is a Message's Web Push part.
type WebpushConfig struct {
	Headers      map[string]string    `json:"headers,omitempty"`
	Notification *WebpushNotification `json:"notification,omitempty"`
	FCMOptions   *WebpushFCMOptions   `json:"fcm_options,omitempty"`
}

// WebpushNotification is the Web Push notification of a Message.
type WebpushNotification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Image string `json:"image,omitempty"`
	Tag   string `json:"tag,omitempty"`
}

// WebpushFCMOptions holds the Web Push link.
type WebpushFCMOptions struct {
	Link string `json:"link,omitempty"`
}

// reservedKey reports whether FCM reserves a data key: "from",
// "notification", "message_type", "collapse_key", and any key starting
// with "google" or "gcm".
func reservedKey(k string) bool {
	switch strings.ToLower(k) {
	case "from", "notification", "message_type", "collapse_key":
		return true
	}
	l := strings.ToLower(k)
	return strings.HasPrefix(l, "google") || strings.HasPrefix(l, "gcm")
}

// validTopicName reports whether t is a topic name FCM takes:
// [a-zA-Z0-9-_.~%]{1,900}, optionally with a "/topics/" prefix.
func validTopicName(t string) bool {
	t = strings.TrimPrefix(t, "/topics/")
	if t == "" || len(t) > 900 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~%", c) >= 0) {
			return false
		}
	}
	return true
}

// headerSafe reports whether v can go out as an HTTP header value as it
// is (FCM forwards apns-collapse-id and Topic to APNs and Web Push).
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' || b >= 0x7f {
			return false
		}
	}
	return true
}

// Build validates m and turns it into the FCM message Send would post,
// without any network call. Errors are *push.Error.
func Build(m *push.Message) (*Message, error) {
	bad := func(kind error, reason string) error {
		return &push.Error{Provider: push.FCM, Kind: kind, Reason: reason, Token: maskIf(m.Token)}
	}
	targets := 0
	for _, s := range []string{m.Token, m.Topic, m.Condition} {
		if s != "" {
			targets++
		}
	}
	if targets != 1 {
		return nil, bad(push.ErrInvalidToken, "set exactly one of Token, Topic and Condition")
	}
	if m.Token != "" && (len(m.Token) < 32 || len(m.Token) > 4096 || !tokenChars(m.Token)) {
		return nil, bad(push.ErrInvalidToken, fmt.Sprintf("registration token of %d characters is malformed", len(m.Token)))
	}
	if m.Topic != "" && !validTopicName(m.Topic) {
		return nil, bad(push.ErrInvalidMessage, "topic name must be 1 to 900 of [a-zA-Z0-9-_.~%]")
	}
	if m.Condition != "" && (len(m.Condition) > 2048 || !headerSafe(m.Condition)) {
		return nil, bad(push.ErrInvalidMessage, "condition must be printable ASCII, at most 2,048 bytes")
	}
	n := &m.Notification
	data := map[string]string{}
	for k, v := range n.Data {
		data[k] = v
	}
	ov := n.FCM
	if ov == nil {
		ov = &push.FCMOverride{}
	}
	for k, v := range ov.Data {
		data[k] = v
	}
	for k := range data {
		if k == "" {
			return nil, bad(push.ErrInvalidMessage, "empty data key")
		}
		if reservedKey(k) {
			return nil, bad(push.ErrInvalidMessage, fmt.Sprintf("data key %q is reserved by FCM", k))
		}
	}
	fm := &Message{Token: m.Token, Topic: m.Topic, Condition: m.Condition}
	if len(data) > 0 {
		fm.Data = data
	}
	if !n.Silent && (n.Title != "" || n.Body != "" || n.ImageURL != "") {
		fm.Notification = &Notification{Title: n.Title, Body: n.Body, Image: n.ImageURL}
	}
	size := len(n.Title) + len(n.Body) + len(n.ImageURL)
	for k, v := range data {
		size += len(k) + len(v)
	}
	limit := MaxPayload
	if m.Topic != "" || m.Condition != "" {
		limit = 2048 // FCM's limit for topic messages
	}
	if size > limit {
		return nil, bad(push.ErrPayloadTooLarge, fmt.Sprintf("%d bytes of notification and data, over FCM's %d", size, limit))
	}
	collapse := push.CollapseKeyFor(m)
	if len(collapse) > 64 {
		return nil, bad(push.ErrInvalidMessage, "collapse key over 64 bytes (APNs' limit, which FCM forwards it to)")
	}
	if !headerSafe(collapse) {
		return nil, bad(push.ErrInvalidMessage, "collapse key has a control or non-ASCII character (it is sent as a header)")
	}
	for _, f := range []struct{ name, v string }{{"Sound", n.Sound}, {"ThreadID", n.ThreadID}, {"Category", n.Category}, {"FCMOverride.AndroidChannelID", ov.AndroidChannelID}} {
		if len(f.v) > 1024 {
			return nil, bad(push.ErrInvalidMessage, f.name+" over 1,024 bytes")
		}
	}
	now := time.Now()
	var ttl *time.Duration
	if exp := n.ExpiryAt(now); !exp.IsZero() {
		d := max(exp.Sub(now).Truncate(time.Second), 0)
		ttl = &d
	}

	// Android.
	android := &AndroidConfig{CollapseKey: collapse, Priority: ov.AndroidPriority}
	if ttl != nil {
		android.TTL = strconv.FormatInt(int64(ttl.Seconds()), 10) + "s"
	}
	if android.Priority == "" {
		android.Priority = "high"
		if n.Priority == push.PriorityLow || n.Priority == push.PriorityNormal || n.Silent {
			android.Priority = "normal"
		}
	}
	if android.Priority != "high" && android.Priority != "normal" {
		return nil, bad(push.ErrInvalidMessage, fmt.Sprintf("Android priority %q (want high or normal)", android.Priority))
	}
	if fm.Notification != nil {
		android.Notification = &AndroidNotification{Sound: n.Sound, Tag: n.ThreadID, ClickAction: n.Category, ChannelID: ov.AndroidChannelID}
	}
	fm.Android = android

	// APNs through FCM.
	aps := map[string]any{}
	if n.Badge != nil {
		aps["badge"] = *n.Badge
	}
	for k, v := range map[string]string{"sound": n.Sound, "category": n.Category, "thread-id": n.ThreadID, "interruption-level": string(n.InterruptionLevel)} {
		if v != "" {
			aps[k] = v
		}
	}
	if n.Silent {
		aps["content-available"] = 1
	}
	if n.MutableContent || n.ImageURL != "" {
		aps["mutable-content"] = 1
	}
	if !n.Silent && (n.Title != "" || n.Subtitle != "" || n.Body != "") {
		alert := map[string]string{}
		for k, v := range map[string]string{"title": n.Title, "subtitle": n.Subtitle, "body": n.Body} {
			if v != "" {
				alert[k] = v
			}
		}
		aps["alert"] = alert
	}
	apnsHeaders := map[string]string{}
	if collapse != "" {
		apnsHeaders["apns-collapse-id"] = collapse
	}
	if n.Silent {
		apnsHeaders["apns-priority"] = "5"
		apnsHeaders["apns-push-type"] = "background"
	}
	if exp := n.ExpiryAt(now); !exp.IsZero() {
		apnsHeaders["apns-expiration"] = strconv.FormatInt(exp.Unix(), 10)
	}
	fm.APNS = &APNSConfig{Headers: apnsHeaders, Payload: map[string]any{"aps": aps}}

	// Web Push through FCM.
	wpHeaders := map[string]string{}
	if ttl != nil {
		wpHeaders["TTL"] = strconv.Itoa(int(ttl.Seconds()))
	}
	if collapse != "" {
		wpHeaders["Topic"] = push.TopicFor(collapse)
	}
	web := &WebpushConfig{Headers: wpHeaders}
	if fm.Notification != nil {
		web.Notification = &WebpushNotification{Title: n.Title, Body: n.Body, Image: n.ImageURL, Tag: n.ThreadID}
	}
	if n.URL != "" {
		if !strings.HasPrefix(n.URL, "https://") {
			return nil, bad(push.ErrInvalidMessage, "URL must be https for FCM web links")
		}
		web.FCMOptions = &WebpushFCMOptions{Link: n.URL}
	}
	fm.Webpush = web
	return fm, nil
}

// tokenChars reports whether a registration token has only the characters
// FCM's tokens are made of (letters, digits, - _ : .).
func tokenChars(t string) bool {
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

func maskIf(tok string) string {
	if tok == "" {
		return ""
	}
	return push.MaskToken(tok)
}
