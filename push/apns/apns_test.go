package apns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const topic = "com.example.app"

var ctx = context.Background()

func newClient(t *testing.T, srv *pushtest.APNsServer, mod func(*apns.Config)) *apns.Client {
	t.Helper()
	cfg := &apns.Config{Topic: topic}
	if mod != nil {
		mod(cfg)
	}
	c, err := apns.New(cfg.UseFake(srv))
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func msg(name string) *push.Message {
	return &push.Message{Token: pushtest.DeviceToken(name), Notification: push.Notification{Title: "Hello", Body: "World"}}
}

func TestSendDeliversWithHeadersAndPayload(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	c := newClient(t, srv, nil)
	badge := 3
	m := &push.Message{
		Token:          pushtest.DeviceToken("ada"),
		IdempotencyKey: "order-42-shipped",
		Notification: push.Notification{
			Title: "Shipped", Subtitle: "Order 42", Body: "On its way", Badge: &badge, Sound: "default",
			Data: map[string]string{"order": "42"}, Category: "ORDER", ThreadID: "orders", URL: "https://example.com/o/42",
			InterruptionLevel: push.InterruptionTimeSensitive, TTL: time.Hour,
		},
	}
	rcpt, err := c.Send(ctx, m)
	require.NoError(t, err)
	require.Equal(t, push.APNs, rcpt.Provider)
	reqs := srv.Delivered()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, rcpt.ID, r.ApnsID)
	require.Equal(t, m.Token, r.Token)
	require.Equal(t, topic, r.Topic)
	require.Equal(t, "alert", r.PushType)
	require.Equal(t, "10", r.Priority)
	require.Equal(t, push.CollapseID("order-42-shipped"), r.CollapseID, "collapse ID derived from the idempotency key")
	require.NotEmpty(t, r.Expiration)
	require.Equal(t, "token", r.Auth)
	aps := r.Payload["aps"].(map[string]any)
	require.Equal(t, map[string]any{"title": "Shipped", "subtitle": "Order 42", "body": "On its way"}, aps["alert"])
	require.EqualValues(t, 3, aps["badge"])
	require.Equal(t, "time-sensitive", aps["interruption-level"])
	require.Equal(t, "42", r.Payload["order"])
	require.Equal(t, "https://example.com/o/42", r.Payload["url"])

	// A silent push is a background push at priority 5.
	_, err = c.Send(ctx, &push.Message{Token: pushtest.DeviceToken("ada"), Notification: push.Notification{Silent: true, Data: map[string]string{"sync": "1"}}})
	require.NoError(t, err)
	r = srv.Delivered()[1]
	require.Equal(t, "background", r.PushType)
	require.Equal(t, "5", r.Priority)
	require.EqualValues(t, 1, r.Payload["aps"].(map[string]any)["content-available"])

	// VoIP gets its topic suffix.
	_, err = c.Send(ctx, &push.Message{Token: pushtest.DeviceToken("ada"), Notification: push.Notification{Body: "call", APNs: &push.APNsOverride{PushType: "voip"}}})
	require.NoError(t, err)
	require.Equal(t, topic+".voip", srv.Delivered()[2].Topic)
}

func TestProviderTokenIsReusedAcrossSendsAndConnections(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	c := newClient(t, srv, func(cfg *apns.Config) { cfg.Connections = 3 })
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Send(ctx, msg(fmt.Sprint(i)))
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Len(t, srv.Delivered(), 60)
	require.Len(t, srv.JWTs(), 1, "one JWT for every request")
	conns := map[string]bool{}
	for _, r := range srv.Requests() {
		conns[r.RemoteAddr] = true
	}
	require.Len(t, conns, 3, "requests are spread over the connection pool")
}

func TestExpiredProviderTokenIsRenewedOnce(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	now := time.Now()
	var mu sync.Mutex
	c := newClient(t, srv, func(cfg *apns.Config) {
		cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	_, err := c.Send(ctx, msg("a"))
	require.NoError(t, err)
	srv.ExpireTokens()
	_, err = c.Send(ctx, msg("a"))
	require.NoError(t, err, "the client renews the JWT and retries")
	require.Len(t, srv.JWTs(), 2)
	reqs := srv.Requests()
	require.Equal(t, "ExpiredProviderToken", reqs[1].Reason)
	require.Equal(t, http.StatusOK, reqs[2].Status)

	// Apple refuses renewals more often than every 20 minutes: a second
	// expiry within that window is an auth error, not a renewal storm.
	srv.ExpireTokens()
	_, err = c.Send(ctx, msg("a"))
	require.ErrorIs(t, err, push.ErrAuth)
	require.Len(t, srv.JWTs(), 2)
	mu.Lock()
	now = now.Add(21 * time.Minute)
	mu.Unlock()
	_, err = c.Send(ctx, msg("a"))
	require.NoError(t, err)
	require.Len(t, srv.JWTs(), 3)
}

func TestCertificateAuth(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	c := newClient(t, srv, func(cfg *apns.Config) { cfg.Certificate = secret.Seal(srv.ClientCertificate(t, topic)) })
	_, err := c.Send(ctx, msg("a"))
	require.NoError(t, err)
	r := srv.Delivered()[0]
	require.Equal(t, "certificate", r.Auth)
	require.Empty(t, r.JWT)

	other := newClient(t, srv, func(cfg *apns.Config) {
		cfg.Certificate = secret.Seal(srv.ClientCertificate(t, "com.other.app"))
	})
	_, err = other.Send(ctx, msg("a"))
	require.ErrorIs(t, err, push.ErrInvalidMessage)
	var pe *push.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "TopicDisallowed", pe.Reason)
}

func TestEveryReasonIsClassified(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		reason string
		want   error
	}{
		{400, "BadCollapseId", push.ErrInvalidMessage},
		{400, "BadDeviceToken", push.ErrUnregistered},
		{400, "BadExpirationDate", push.ErrInvalidMessage},
		{400, "BadMessageId", push.ErrInvalidMessage},
		{400, "BadPriority", push.ErrInvalidMessage},
		{400, "BadTopic", push.ErrInvalidMessage},
		{400, "DeviceTokenNotForTopic", push.ErrUnregistered},
		{400, "DuplicateHeaders", push.ErrInvalidMessage},
		{400, "IdleTimeout", push.ErrUnavailable},
		{400, "InvalidPushType", push.ErrInvalidMessage},
		{400, "MissingDeviceToken", push.ErrInvalidToken},
		{400, "MissingTopic", push.ErrInvalidMessage},
		{400, "PayloadEmpty", push.ErrInvalidMessage},
		{400, "TopicDisallowed", push.ErrInvalidMessage},
		{403, "BadCertificate", push.ErrAuth},
		{403, "BadCertificateEnvironment", push.ErrAuth},
		{403, "Forbidden", push.ErrAuth},
		{403, "InvalidProviderToken", push.ErrAuth},
		{403, "MissingProviderToken", push.ErrAuth},
		{403, "BadEnvironmentKeyInToken", push.ErrAuth},
		{403, "UnrelatedKeyIdInToken", push.ErrAuth},
		{404, "BadPath", push.ErrInvalidMessage},
		{405, "MethodNotAllowed", push.ErrInvalidMessage},
		{410, "ExpiredToken", push.ErrUnregistered},
		{410, "Unregistered", push.ErrUnregistered},
		{413, "PayloadTooLarge", push.ErrPayloadTooLarge},
		{429, "TooManyProviderTokenUpdates", push.ErrRateLimited},
		{429, "TooManyRequests", push.ErrRateLimited},
		{500, "InternalServerError", push.ErrUnavailable},
		{503, "ServiceUnavailable", push.ErrUnavailable},
		{503, "Shutdown", push.ErrUnavailable},
		{502, "SomethingNew", push.ErrUnavailable},
		{400, "SomethingNew", push.ErrInvalidMessage},
	}
	srv := pushtest.NewAPNs(t, nil)
	c := newClient(t, srv, nil)
	for _, tc := range cases {
		srv.FailNext(1, pushtest.Fault{Status: tc.status, Reason: tc.reason})
		_, err := c.Send(ctx, msg("x"))
		require.ErrorIs(t, err, tc.want, "%d %s", tc.status, tc.reason)
		var pe *push.Error
		require.ErrorAs(t, err, &pe)
		require.Equal(t, tc.status, pe.Status)
		require.Equal(t, tc.reason, pe.Reason)
		require.Equal(t, errors.Is(tc.want, push.ErrUnavailable) || errors.Is(tc.want, push.ErrRateLimited), push.IsRetryable(err), "%s retryable", tc.reason)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newClient(t, srv, func(cfg *apns.Config) { cfg.Now = func() time.Time { return now } })
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"30", 30 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"", 0},
		{"soon", 0},
	} {
		srv.FailNext(1, pushtest.Fault{Status: 429, Reason: "TooManyRequests", RetryAfter: tc.header})
		_, err := c.Send(ctx, msg("x"))
		var pe *push.Error
		require.ErrorAs(t, err, &pe)
		require.Equal(t, tc.want, pe.RetryAfter, "Retry-After %q", tc.header)
		require.Equal(t, tc.want, pe.RetryAfterHint())
	}
}

func TestRecipientGoneHook(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	var mu sync.Mutex
	var gone []push.Gone
	c := newClient(t, srv, func(cfg *apns.Config) {
		cfg.OnGone = func(_ context.Context, g push.Gone) { mu.Lock(); gone = append(gone, g); mu.Unlock() }
	})
	dead := pushtest.DeviceToken("uninstalled")
	ts := time.UnixMilli(1_900_000_000_000) // apns2 keeps whole seconds
	srv.FailToken(dead, pushtest.Fault{Status: 410, Reason: "Unregistered", Timestamp: ts})
	_, err := c.Send(ctx, &push.Message{Token: dead, Notification: push.Notification{Body: "hi"}})
	require.ErrorIs(t, err, push.ErrUnregistered)
	require.True(t, push.IsRecipientGone(err))
	var pe *push.Error
	require.ErrorAs(t, err, &pe)
	require.True(t, ts.Equal(pe.Timestamp))
	_, err = c.Send(ctx, msg("alive"))
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, gone, 1)
	require.Equal(t, push.Gone{Provider: push.APNs, Token: dead, Reason: "Unregistered", At: pe.Timestamp}, gone[0])
}

func TestBadInputIsRefusedBeforeTheNetwork(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	c := newClient(t, srv, nil)
	noTopic := newClient(t, srv, func(cfg *apns.Config) { cfg.Topic = "" })
	cases := []struct {
		name string
		c    *apns.Client
		m    *push.Message
		want error
	}{
		{"empty token", c, &push.Message{Notification: push.Notification{Body: "x"}}, push.ErrInvalidToken},
		{"short token", c, &push.Message{Token: "abcd", Notification: push.Notification{Body: "x"}}, push.ErrInvalidToken},
		{"not hex", c, &push.Message{Token: strings.Repeat("zz", 32), Notification: push.Notification{Body: "x"}}, push.ErrInvalidToken},
		{"payload over 4 KB", c, &push.Message{Token: pushtest.DeviceToken("a"), Notification: push.Notification{Body: strings.Repeat("é", 2100)}}, push.ErrPayloadTooLarge},
		{"missing topic", noTopic, msg("a"), push.ErrInvalidMessage},
		{"bad priority", c, &push.Message{Token: pushtest.DeviceToken("a"), Notification: push.Notification{APNs: &push.APNsOverride{Priority: 7}}}, push.ErrInvalidMessage},
		{"unknown push type", c, &push.Message{Token: pushtest.DeviceToken("a"), Notification: push.Notification{APNs: &push.APNsOverride{PushType: "fax"}}}, push.ErrInvalidMessage},
	}
	for _, tc := range cases {
		_, err := tc.c.Send(ctx, tc.m)
		require.ErrorIs(t, err, tc.want, tc.name)
		require.ErrorIs(t, tc.c.Validate(tc.m), tc.want, "Validate must refuse what Send refuses: %s", tc.name)
	}
	require.NoError(t, c.Validate(msg("a")))
	require.Empty(t, srv.Requests(), "nothing reached APNs")
	// A VoIP payload may be 5 KB.
	_, err := c.Send(ctx, &push.Message{Token: pushtest.DeviceToken("a"), Notification: push.Notification{Body: strings.Repeat("a", 4500), APNs: &push.APNsOverride{PushType: "voip"}}})
	require.NoError(t, err)
}

func TestBadCredentialsAreRefusedAtNew(t *testing.T) {
	t.Parallel()
	canary := "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCANARYCANARYCANARY\n-----END PRIVATE KEY-----\n"
	_, err := apns.New(&apns.Config{AuthKey: secret.String(canary), KeyID: "K", TeamID: "T", Topic: topic})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "CANARY")
	_, err = apns.New(&apns.Config{Topic: topic})
	require.ErrorContains(t, err, "AuthKey")
	_, err = apns.New(&apns.Config{AuthKey: secret.String("x"), Topic: topic})
	require.Error(t, err)
}

func TestSecretsAndTokensStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	var logs bytes.Buffer
	p8, _, _ := srv.AuthKey()
	cfg := &apns.Config{Topic: topic, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	c, err := apns.New(cfg.UseFake(srv))
	require.NoError(t, err)
	defer c.CloseIdleConnections()
	tok := pushtest.DeviceToken("secret-device")
	var errs []string
	for _, f := range []pushtest.Fault{{Status: 410, Reason: "Unregistered"}, {Status: 400, Reason: "BadDeviceToken"}, {Status: 503, Reason: "ServiceUnavailable"}} {
		srv.FailNext(1, f)
		_, err := c.Send(ctx, &push.Message{Token: tok, Notification: push.Notification{Body: "payload-canary-text"}})
		require.Error(t, err)
		errs = append(errs, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
	_, err = c.Send(ctx, &push.Message{Token: tok, Notification: push.Notification{Body: strings.Repeat("payload-canary-text", 300)}})
	errs = append(errs, err.Error())
	errs = append(errs, fmt.Sprintf("%+v %#v", cfg, cfg))
	// A network failure: the URL holds the token.
	broken, err := apns.New(&apns.Config{Topic: topic, Host: "https://127.0.0.1:1", AuthKey: p8, KeyID: "k", TeamID: "t"})
	require.NoError(t, err)
	defer broken.CloseIdleConnections()
	_, err = broken.Send(ctx, &push.Message{Token: tok, Notification: push.Notification{Body: "x"}})
	require.ErrorIs(t, err, push.ErrUnavailable)
	errs = append(errs, err.Error())
	all := strings.Join(errs, "\n") + logs.String()
	require.NotContains(t, all, tok)
	require.NotContains(t, all, tok[8:24])
	require.NotContains(t, all, "payload-canary-text")
	pem := p8.Reveal()
	body := pem[strings.Index(pem, "\n")+1 : strings.Index(pem, "\n")+40]
	require.NotContains(t, all, body)
	require.Contains(t, all, push.MaskToken(tok), "errors name the token masked")
}

func TestNetworkFailureIsRetryable(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, nil)
	c := newClient(t, srv, func(cfg *apns.Config) { cfg.Timeout = 200 * time.Millisecond })
	srv.SetLatency(time.Second)
	_, err := c.Send(ctx, msg("slow"))
	require.ErrorIs(t, err, push.ErrUnavailable)
	require.True(t, push.IsRetryable(err))
}

func TestPayloadJSON(t *testing.T) {
	t.Parallel()
	zero := 0
	b, err := apns.Payload(&push.Notification{Title: "T", Body: "<b>", Badge: &zero, Sound: "default",
		Data: map[string]string{"z": "1", "a": "2"}, URL: "https://x/?a=1&b=2",
		APNs: &push.APNsOverride{Custom: map[string]any{"n": 3}}})
	require.NoError(t, err)
	require.Equal(t, `{"aps":{"alert":{"title":"T","body":"<b>"},"badge":0,"sound":"default"},"a":"2","n":3,"url":"https://x/?a=1&b=2","z":"1"}`, string(b))
	b, err = apns.Payload(&push.Notification{Silent: true})
	require.NoError(t, err)
	require.Equal(t, `{"aps":{"content-available":1}}`, string(b))
	_, err = apns.Payload(&push.Notification{Data: map[string]string{"aps": "x"}})
	require.Error(t, err)
}

func FuzzPayload(f *testing.F) {
	f.Add("title", "body", "key", "value")
	f.Fuzz(func(t *testing.T, title, body, k, v string) {
		b, err := apns.Payload(&push.Notification{Title: title, Body: body, Data: map[string]string{k: v}})
		if err != nil {
			return // only a Data key "aps" is refused
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		if _, ok := got["aps"].(map[string]any); !ok {
			t.Fatalf("no aps in %q", b)
		}
	})
}

// Values that go out as HTTP/2 headers are checked at the door: the
// transport would refuse a line break in them (and on the old path that
// refusal was classed "APNs unavailable", opening the circuit).
func TestHeaderBoundValuesAreRefusedBeforeTheNetwork(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	c := newClient(t, srv, nil)
	for name, mod := range map[string]func(m *push.Message){
		"CR/LF in the collapse key": func(m *push.Message) { m.Notification.CollapseKey = "sale\r\nx-evil: 1" },
		"NUL in the collapse key":   func(m *push.Message) { m.Notification.CollapseKey = "a\x00b" },
		"non-ASCII collapse key":    func(m *push.Message) { m.Notification.CollapseKey = "soldes-été" },
		"CR/LF in the topic": func(m *push.Message) {
			m.Notification.APNs = &push.APNsOverride{Topic: "com.example.app\r\napns-priority: 10"}
		},
		"space in the topic": func(m *push.Message) { m.Notification.APNs = &push.APNsOverride{Topic: "com.example app"} },
		"overlong topic":     func(m *push.Message) { m.Notification.APNs = &push.APNsOverride{Topic: strings.Repeat("a", 201)} },
		"unknown push type":  func(m *push.Message) { m.Notification.APNs = &push.APNsOverride{PushType: "alert\r\n"} },
	} {
		m := msg("ada")
		mod(m)
		require.ErrorIs(t, c.Validate(m), push.ErrInvalidMessage, name)
		_, err := c.Send(ctx, m)
		require.ErrorIs(t, err, push.ErrInvalidMessage, name)
		require.False(t, push.IsRetryable(err), name)
	}
	require.Empty(t, srv.Requests())
	_, err := apns.New((&apns.Config{Topic: "com.example.app\n"}).UseFake(srv))
	require.ErrorContains(t, err, "Config.Topic")
}

// A server certificate the client does not trust is a configuration
// error (ErrAuth), never "unavailable" to retry until the TTL; a host's
// own *http.Client carries the requests when given.
func TestTransportAndUntrustedCertificates(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	untrusted := newClient(t, srv, func(cfg *apns.Config) {})
	// Configure set the fake's roots; drop them.
	cfg := (&apns.Config{Topic: topic}).UseFake(srv)
	cfg.TLSConfig = nil
	c, err := apns.New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	_, err = c.Send(ctx, msg("ada"))
	require.ErrorIs(t, err, push.ErrAuth)
	require.Contains(t, err.Error(), "certificate")
	require.False(t, push.IsRetryable(err))

	var used atomicCount
	hc := &http.Client{Transport: countingTransport{&used, &http.Transport{TLSClientConfig: srv.TLSConfig(), ForceAttemptHTTP2: true}}}
	viaHost := newClient(t, srv, func(cfg *apns.Config) { cfg.HTTPClient = hc })
	_, err = viaHost.Send(ctx, msg("ada"))
	require.NoError(t, err)
	require.Equal(t, int64(1), used.n.Load(), "the host's client carried the request")
	_, err = untrusted.Send(ctx, msg("ada"))
	require.NoError(t, err)
	hc.CloseIdleConnections()
}

type atomicCount struct{ n atomic.Int64 }

type countingTransport struct {
	n    *atomicCount
	base http.RoundTripper
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.n.Add(1)
	return c.base.RoundTrip(r)
}

// The fuzz property: Validate never panics, and what it accepts the fake
// APNs accepts.
func FuzzValidate(f *testing.F) {
	f.Add("Hello", "World", "", "", "", "k1")
	f.Add("a\r\nb", "x", "sale\r\n", "com.example.app", "alert", "k2")
	f.Add("", "", "x", "com.example.app\n", "voip", "")
	f.Add(strings.Repeat("é", 3000), "b", "", "", "background", "k3")
	srv := pushtest.NewAPNs(f, &pushtest.APNsOptions{Topics: []string{topic, topic + ".voip", topic + ".complication", topic + ".push-type.liveactivity", topic + ".voip-ptt"}})
	cfg := (&apns.Config{Topic: topic}).UseFake(srv)
	c, err := apns.New(cfg)
	require.NoError(f, err)
	f.Cleanup(c.CloseIdleConnections)
	f.Fuzz(func(t *testing.T, title, body, collapse, topicOverride, pushType, key string) {
		m := &push.Message{Token: pushtest.DeviceToken(key), IdempotencyKey: key, Notification: push.Notification{Title: title, Body: body, CollapseKey: collapse}}
		if topicOverride != "" || pushType != "" {
			m.Notification.APNs = &push.APNsOverride{Topic: topicOverride, PushType: pushType}
		}
		if c.Validate(m) != nil {
			return
		}
		_, err := c.Send(ctx, m)
		var pe *push.Error
		if errors.As(err, &pe) && pe.AboutMessage() && pe.Reason != "TopicDisallowed" && pe.Reason != "BadTopic" && pe.Reason != "DeviceTokenNotForTopic" {
			// (A topic the app does not own is APNs' to know, not ours.)
			t.Fatalf("Validate accepted a message APNs refused: %v", err)
		}
	})
}
