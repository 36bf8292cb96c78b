// Package fcm sends push notifications through Firebase Cloud Messaging's
// HTTP v1 API with firebase.google.com/go/v4/messaging, and classifies
// every FCM error code into the error classes of package push.
//
// Credentials come from a service-account file or its bytes (secret.Value)
// or any oauth2.TokenSource. SendEach sends up to 500 messages with a
// result each. The Firebase SDK retries network errors and 503 itself (up
// to 4 times, honouring Retry-After up to 2 minutes); everything longer is
// the retry queue's job, with the Retry-After this package reads from the
// response.
package fcm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/secret"
)

// MaxPayload is FCM's limit on a message's notification and data, in bytes.
const MaxPayload = 4096

// MaxBatch is the most messages SendEach takes.
const MaxBatch = 500

// Config configures a Client. Set ProjectID and one credential source.
type Config struct {
	ProjectID string
	// CredentialsFile is a service-account JSON file.
	CredentialsFile string
	// CredentialsJSON is a service-account JSON document.
	CredentialsJSON secret.Value
	// TokenSource supplies OAuth2 tokens directly.
	TokenSource oauth2.TokenSource
	// Endpoint overrides FCM's base URL (https://fcm.googleapis.com/v1);
	// tests point it at a fake.
	Endpoint string
	// OnGone is called when FCM says a token is gone (UNREGISTERED,
	// SENDER_ID_MISMATCH).
	OnGone push.GoneFunc
	// Logger receives operational messages; tokens are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Client sends to FCM. It is safe for concurrent use.
type Client struct {
	cfg Config
	mc  *messaging.Client
}

var _ push.Sender = (*Client)(nil)

// New returns a client. ctx is used while setting up credentials.
func New(ctx context.Context, cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("fcm: New: missing config")
	}
	c := &Client{cfg: *cfg}
	if c.cfg.Logger == nil {
		c.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	if c.cfg.ProjectID == "" {
		return nil, errors.New("fcm: Config.ProjectID is required")
	}
	var opts []option.ClientOption
	sources := 0
	if c.cfg.CredentialsFile != "" {
		opts = append(opts, option.WithCredentialsFile(c.cfg.CredentialsFile))
		sources++
	}
	if !c.cfg.CredentialsJSON.IsZero() {
		opts = append(opts, option.WithCredentialsJSON(c.cfg.CredentialsJSON.Bytes()))
		sources++
	}
	if c.cfg.TokenSource != nil {
		opts = append(opts, option.WithTokenSource(c.cfg.TokenSource))
		sources++
	}
	if sources != 1 {
		return nil, fmt.Errorf("fcm: Config: set exactly one of CredentialsFile, CredentialsJSON and TokenSource (%d set)", sources)
	}
	if c.cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.cfg.Endpoint))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: c.cfg.ProjectID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	if c.mc, err = app.Messaging(ctx); err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	return c, nil
}

// Validate checks m as Send would before any network call (target, token
// shape, payload size), so a host can refuse a bad message at the door. It
// implements push.Validator.
func (c *Client) Validate(m *push.Message) error {
	_, err := Build(m)
	return err
}

// Send implements push.Sender.
func (c *Client) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	fm, err := Build(m)
	if err != nil {
		return push.Receipt{}, err
	}
	name, err := c.mc.Send(ctx, fm)
	if err != nil {
		return push.Receipt{}, c.fail(ctx, m, err)
	}
	return push.Receipt{Provider: push.FCM, ID: name, At: c.cfg.Now()}, nil
}

// Result is one message's outcome in SendEach.
type Result struct {
	Receipt push.Receipt
	Err     error
}

// SendEach sends up to MaxBatch messages (concurrently, one request each,
// as FCM v1 requires) and returns a result per message, in order. A
// message refused locally gets its error without a request; a partial
// failure is not an error of SendEach.
func (c *Client) SendEach(ctx context.Context, ms []*push.Message) ([]Result, error) {
	if len(ms) > MaxBatch {
		return nil, fmt.Errorf("fcm: SendEach: %d messages, over FCM's %d", len(ms), MaxBatch)
	}
	out := make([]Result, len(ms))
	var fms []*messaging.Message
	var idx []int
	for i, m := range ms {
		fm, err := Build(m)
		if err != nil {
			out[i].Err = err
			continue
		}
		fms = append(fms, fm)
		idx = append(idx, i)
	}
	if len(fms) == 0 {
		return out, nil
	}
	br, err := c.mc.SendEach(ctx, fms)
	if err != nil {
		return nil, c.fail(ctx, nil, err)
	}
	now := c.cfg.Now()
	for j, r := range br.Responses {
		i := idx[j]
		if r.Success {
			out[i].Receipt = push.Receipt{Provider: push.FCM, ID: r.MessageID, At: now}
		} else {
			out[i].Err = c.fail(ctx, ms[i], r.Error)
		}
	}
	return out, nil
}

// fail classifies an SDK error (before any wrapping: the SDK's predicates
// use type assertions) and fires the gone hook.
func (c *Client) fail(ctx context.Context, m *push.Message, err error) error {
	tok := ""
	if m != nil {
		tok = m.Token
	}
	e := Classify(err, c.cfg.Now())
	if tok != "" {
		e.Token = push.MaskToken(tok)
	}
	if errors.Is(e, push.ErrUnregistered) && c.cfg.OnGone != nil && tok != "" {
		c.cfg.OnGone(ctx, push.Gone{Provider: push.FCM, Token: tok, Reason: e.Reason})
	}
	c.cfg.Logger.Debug("fcm: refused", "status", e.Status, "reason", e.Reason, "token", e.Token)
	return e
}

// Classify maps an error of the Firebase SDK onto push's classes.
func Classify(err error, now time.Time) *push.Error {
	e := &push.Error{Provider: push.FCM}
	var res *http.Response
	if errorutils.IsUnavailable(err) || errorutils.IsInternal(err) || errorutils.IsResourceExhausted(err) ||
		errorutils.IsUnauthenticated(err) || errorutils.IsPermissionDenied(err) || errorutils.IsInvalidArgument(err) ||
		errorutils.IsNotFound(err) {
		res = errorutils.HTTPResponse(err)
	}
	if res != nil {
		e.Status = res.StatusCode
		e.RetryAfter = push.ParseRetryAfter(res.Header.Get("Retry-After"), now)
	}
	switch {
	case messaging.IsUnregistered(err):
		e.Kind, e.Reason = push.ErrUnregistered, "UNREGISTERED"
	case messaging.IsSenderIDMismatch(err):
		e.Kind, e.Reason = push.ErrUnregistered, "SENDER_ID_MISMATCH"
	case messaging.IsQuotaExceeded(err):
		e.Kind, e.Reason = push.ErrRateLimited, "QUOTA_EXCEEDED"
	case messaging.IsUnavailable(err):
		e.Kind, e.Reason = push.ErrUnavailable, "UNAVAILABLE"
	case messaging.IsInternal(err):
		e.Kind, e.Reason = push.ErrUnavailable, "INTERNAL"
	case messaging.IsThirdPartyAuthError(err):
		e.Kind, e.Reason = push.ErrAuth, "THIRD_PARTY_AUTH_ERROR"
	case messaging.IsInvalidArgument(err):
		e.Kind, e.Reason = push.ErrInvalidMessage, "INVALID_ARGUMENT"
		if strings.Contains(strings.ToLower(err.Error()), "registration token") {
			e.Kind = push.ErrInvalidToken
		}
	case errorutils.IsResourceExhausted(err):
		e.Kind, e.Reason = push.ErrRateLimited, "RESOURCE_EXHAUSTED"
	case errorutils.IsUnauthenticated(err), errorutils.IsPermissionDenied(err):
		e.Kind, e.Reason = push.ErrAuth, "UNAUTHENTICATED"
	case errorutils.IsUnavailable(err), errorutils.IsInternal(err), errorutils.IsDeadlineExceeded(err):
		e.Kind, e.Reason = push.ErrUnavailable, "UNAVAILABLE"
	case errorutils.IsInvalidArgument(err):
		e.Kind, e.Reason = push.ErrInvalidMessage, "INVALID_ARGUMENT"
	case errorutils.IsNotFound(err):
		e.Kind, e.Reason = push.ErrUnregistered, "NOT_FOUND"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.Kind, e.Err = push.ErrUnavailable, err
	default:
		// Network errors reach here; their text holds no token (the URL
		// names only the project).
		e.Kind, e.Err = push.ErrUnavailable, err
	}
	if e.Status == 0 && res == nil && e.Err == nil {
		e.Err = errors.New(strings.SplitN(err.Error(), "\n", 2)[0])
	}
	return e
}

// Build validates m and turns it into the FCM message Send would post,
// without any network call. Errors are *push.Error.
func Build(m *push.Message) (*messaging.Message, error) {
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
	if m.Token != "" && (len(m.Token) < 32 || len(m.Token) > 4096 || strings.ContainsAny(m.Token, " \t\r\n/")) {
		return nil, bad(push.ErrInvalidToken, fmt.Sprintf("registration token of %d characters is malformed", len(m.Token)))
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
		if k == "from" || k == "notification" || k == "message_type" || strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			return nil, bad(push.ErrInvalidMessage, fmt.Sprintf("data key %q is reserved by FCM", k))
		}
	}
	fm := &messaging.Message{Token: m.Token, Topic: m.Topic, Condition: m.Condition}
	if len(data) > 0 {
		fm.Data = data
	}
	if !n.Silent && (n.Title != "" || n.Body != "" || n.ImageURL != "") {
		fm.Notification = &messaging.Notification{Title: n.Title, Body: n.Body, ImageURL: n.ImageURL}
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
	now := time.Now()
	var ttl *time.Duration
	if exp := n.ExpiryAt(now); !exp.IsZero() {
		d := max(exp.Sub(now).Truncate(time.Second), 0)
		ttl = &d
	}

	// Android.
	android := &messaging.AndroidConfig{CollapseKey: collapse, TTL: ttl, Priority: ov.AndroidPriority}
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
		android.Notification = &messaging.AndroidNotification{Sound: n.Sound, Tag: n.ThreadID, ClickAction: n.Category, ChannelID: ov.AndroidChannelID}
	}
	fm.Android = android

	// APNs through FCM.
	aps := &messaging.Aps{Badge: n.Badge, Sound: n.Sound, Category: n.Category, ThreadID: n.ThreadID,
		ContentAvailable: n.Silent, MutableContent: n.MutableContent || n.ImageURL != ""}
	if !n.Silent && (n.Title != "" || n.Subtitle != "" || n.Body != "") {
		aps.Alert = &messaging.ApsAlert{Title: n.Title, SubTitle: n.Subtitle, Body: n.Body}
	}
	if n.InterruptionLevel != "" {
		aps.CustomData = map[string]any{"interruption-level": string(n.InterruptionLevel)}
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
	fm.APNS = &messaging.APNSConfig{Headers: apnsHeaders, Payload: &messaging.APNSPayload{Aps: aps}}

	// Web Push through FCM.
	wpHeaders := map[string]string{}
	if ttl != nil {
		wpHeaders["TTL"] = strconv.Itoa(int(ttl.Seconds()))
	}
	if collapse != "" {
		wpHeaders["Topic"] = push.TopicFor(collapse)
	}
	web := &messaging.WebpushConfig{Headers: wpHeaders}
	if fm.Notification != nil {
		web.Notification = &messaging.WebpushNotification{Title: n.Title, Body: n.Body, Image: n.ImageURL, Tag: n.ThreadID}
	}
	if n.URL != "" {
		if !strings.HasPrefix(n.URL, "https://") {
			return nil, bad(push.ErrInvalidMessage, "URL must be https for FCM web links")
		}
		web.FCMOptions = &messaging.WebpushFCMOptions{Link: n.URL}
	}
	fm.Webpush = web
	return fm, nil
}

func maskIf(tok string) string {
	if tok == "" {
		return ""
	}
	return push.MaskToken(tok)
}
