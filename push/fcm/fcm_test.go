package fcm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Clients' idle keep-alive connections to fakes that have closed.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"))
}

var ctx = context.Background()

func newClient(t *testing.T, srv *pushtest.FCMServer, mod func(*fcm.Config)) *fcm.Client {
	t.Helper()
	cfg := &fcm.Config{}
	if mod != nil {
		mod(cfg)
	}
	c, err := fcm.New(ctx, cfg.UseFake(srv))
	require.NoError(t, err)
	return c
}

func msg(name string) *push.Message {
	return &push.Message{Token: pushtest.RegistrationToken(name), Notification: push.Notification{Title: "Hi", Body: "there"}}
}

func TestSendBuildsEveryPlatformsOverrides(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	badge := 2
	rcpt, err := c.Send(ctx, &push.Message{
		Token:          pushtest.RegistrationToken("ada"),
		IdempotencyKey: "campaign-7/ada",
		Notification: push.Notification{
			Title: "Sale", Subtitle: "today", Body: "50% off", Badge: &badge, Sound: "default",
			Data: map[string]string{"sku": "A1"}, URL: "https://shop.example.com/sale", TTL: 2 * time.Hour,
			FCM: &push.FCMOverride{AndroidChannelID: "promos"},
		},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rcpt.ID, "projects/"+srv.ProjectID()+"/messages/"), rcpt.ID)
	r := srv.Delivered()[0]
	require.Equal(t, pushtest.RegistrationToken("ada"), r.Token)
	m := r.Message
	require.Equal(t, map[string]any{"title": "Sale", "body": "50% off"}, m["notification"])
	require.Equal(t, map[string]any{"sku": "A1"}, m["data"])
	collapse := push.CollapseID("campaign-7/ada")
	android := m["android"].(map[string]any)
	require.Equal(t, collapse, android["collapse_key"])
	require.Equal(t, "high", android["priority"])
	require.Equal(t, "7200s", android["ttl"])
	require.Equal(t, "promos", android["notification"].(map[string]any)["channel_id"])
	apns := m["apns"].(map[string]any)
	require.Equal(t, collapse, apns["headers"].(map[string]any)["apns-collapse-id"])
	aps := apns["payload"].(map[string]any)["aps"].(map[string]any)
	require.EqualValues(t, 2, aps["badge"])
	require.Equal(t, "today", aps["alert"].(map[string]any)["subtitle"])
	web := m["webpush"].(map[string]any)
	require.Equal(t, collapse, web["headers"].(map[string]any)["Topic"])
	require.Equal(t, "7200", web["headers"].(map[string]any)["TTL"])
	require.Equal(t, "https://shop.example.com/sale", web["fcm_options"].(map[string]any)["link"])
}

func TestTopicsAndConditions(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	_, err := c.Send(ctx, &push.Message{Topic: "news", Notification: push.Notification{Body: "x"}})
	require.NoError(t, err)
	_, err = c.Send(ctx, &push.Message{Condition: "'news' in topics && 'fr' in topics", Notification: push.Notification{Body: "x"}})
	require.NoError(t, err)
	reqs := srv.Delivered()
	require.Equal(t, "news", reqs[0].Topic)
	require.Equal(t, "'news' in topics && 'fr' in topics", reqs[1].Condition)
}

func TestServiceAccountCredentials(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	sa := srv.ServiceAccountJSON(t)
	fromBytes := newClient(t, srv, func(cfg *fcm.Config) { cfg.CredentialsJSON = sa })
	_, err := fromBytes.Send(ctx, msg("a"))
	require.NoError(t, err)
	require.Equal(t, 1, srv.TokenGrants(), "the client exchanged a signed JWT for a token at the fake")

	path := filepath.Join(t.TempDir(), "sa.json")
	require.NoError(t, os.WriteFile(path, sa.Bytes(), 0o600))
	fromFile := newClient(t, srv, func(cfg *fcm.Config) { cfg.CredentialsFile = path })
	_, err = fromFile.Send(ctx, msg("b"))
	require.NoError(t, err)
	require.Equal(t, 2, srv.TokenGrants())

	_, err = fcm.New(ctx, &fcm.Config{ProjectID: "p"})
	require.ErrorContains(t, err, "exactly one of")
}

func TestSendEachReturnsAResultPerMessage(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	var mu sync.Mutex
	var gone []string
	c := newClient(t, srv, func(cfg *fcm.Config) {
		cfg.OnGone = func(_ context.Context, g push.Gone) { mu.Lock(); gone = append(gone, g.Token); mu.Unlock() }
	})
	dead := pushtest.RegistrationToken("dead")
	srv.FailToken(dead, pushtest.Fault{Reason: "UNREGISTERED"})
	ms := []*push.Message{msg("a"), {Token: dead, Notification: push.Notification{Body: "x"}}, {Notification: push.Notification{Body: "no target"}}, msg("d")}
	res, err := c.SendEach(ctx, ms)
	require.NoError(t, err)
	require.Len(t, res, 4)
	require.NoError(t, res[0].Err)
	require.NotEmpty(t, res[0].Receipt.ID)
	require.ErrorIs(t, res[1].Err, push.ErrUnregistered)
	require.ErrorIs(t, res[2].Err, push.ErrInvalidToken)
	require.NoError(t, res[3].Err)
	require.Len(t, srv.Requests(), 3, "the locally refused message was not sent")
	require.Equal(t, []string{dead}, gone)

	_, err = c.SendEach(ctx, make([]*push.Message, fcm.MaxBatch+1))
	require.Error(t, err)
}

func TestEveryErrorCodeIsClassified(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	cases := []struct {
		code       string
		retryAfter string
		want       error
		wantRA     time.Duration
	}{
		{"UNREGISTERED", "", push.ErrUnregistered, 0},
		{"SENDER_ID_MISMATCH", "", push.ErrUnregistered, 0},
		{"INVALID_ARGUMENT", "", push.ErrInvalidMessage, 0},
		{"THIRD_PARTY_AUTH_ERROR", "", push.ErrAuth, 0},
		{"QUOTA_EXCEEDED", "30", push.ErrRateLimited, 30 * time.Second},
		{"QUOTA_EXCEEDED", time.Now().Add(time.Minute).UTC().Format(http.TimeFormat), push.ErrRateLimited, time.Minute},
		{"INTERNAL", "", push.ErrUnavailable, 0},
		{"UNAVAILABLE", "121", push.ErrUnavailable, 121 * time.Second},
		{"UNAVAILABLE", "", push.ErrUnavailable, 0},
	}
	for _, tc := range cases {
		srv.FailNext(1, pushtest.Fault{Reason: tc.code, RetryAfter: tc.retryAfter})
		_, err := c.Send(ctx, msg("x"))
		require.ErrorIs(t, err, tc.want, tc.code)
		var pe *push.Error
		require.ErrorAs(t, err, &pe)
		require.Equal(t, tc.code, pe.Reason)
		require.InDelta(t, tc.wantRA.Seconds(), pe.RetryAfter.Seconds(), 1.5, "%s Retry-After %q", tc.code, tc.retryAfter)
	}
}

func TestOneRequestPerSend(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	// No retry underneath the caller: a 503 (with or without Retry-After),
	// a 500 and a 429 each cost exactly one request, and the error says
	// when to come back.
	for i, f := range []pushtest.Fault{{Reason: "UNAVAILABLE"}, {Reason: "UNAVAILABLE", RetryAfter: "1"}, {Reason: "INTERNAL"}, {Reason: "QUOTA_EXCEEDED", RetryAfter: "7"}} {
		srv.FailNext(1, f)
		_, err := c.Send(ctx, msg("x"))
		require.True(t, push.IsRetryable(err), f.Reason)
		require.Len(t, srv.Requests(), i+1, "one request for %s", f.Reason)
	}
	_, err := c.Send(ctx, msg("x"))
	require.NoError(t, err)
	require.Len(t, srv.Requests(), 5)
}

func TestTokenEndpointRefusalsAreAuthErrors(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	for _, code := range []string{"invalid_grant", "unauthorized_client"} {
		srv.RefuseTokens(code)
		c := newClient(t, srv, func(cfg *fcm.Config) { cfg.CredentialsJSON = srv.ServiceAccountJSON(t) })
		_, err := c.Send(ctx, msg("x"))
		require.ErrorIs(t, err, push.ErrAuth, code)
		require.False(t, push.IsRetryable(err), code)
		require.Contains(t, err.Error(), code)
	}
	require.Empty(t, srv.Requests(), "no message request without a token")
}

func TestUntrustedCertificateIsAConfigurationError(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, &pushtest.FCMOptions{TLS: true})
	// No roots for the fake's CA: the handshake fails, and that is not an outage.
	c := newClient(t, srv, func(cfg *fcm.Config) { cfg.HTTPClient = &http.Client{} })
	_, err := c.Send(ctx, msg("x"))
	require.ErrorIs(t, err, push.ErrAuth)
	require.Contains(t, err.Error(), "certificate")
	// With the fake's CA, through the host's own *http.Client, it works.
	ok := newClient(t, srv, func(cfg *fcm.Config) { cfg.HTTPClient = srv.HTTPClient() })
	_, err = ok.Send(ctx, msg("x"))
	require.NoError(t, err)
}

func TestWrongCredentialsAreAuthErrors(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, func(cfg *fcm.Config) {
		cfg.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "stolen"})
	})
	_, err := c.Send(ctx, msg("x"))
	require.ErrorIs(t, err, push.ErrAuth)
	require.False(t, push.IsRetryable(err))
}

func TestBadInputIsRefusedBeforeTheNetwork(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	tok := pushtest.RegistrationToken("a")
	cases := []struct {
		name string
		m    *push.Message
		want error
	}{
		{"no target", &push.Message{Notification: push.Notification{Body: "x"}}, push.ErrInvalidToken},
		{"two targets", &push.Message{Token: tok, Topic: "news"}, push.ErrInvalidToken},
		{"malformed token", &push.Message{Token: "has space and is long enough to pass length"}, push.ErrInvalidToken},
		{"payload over 4 KB", &push.Message{Token: tok, Notification: push.Notification{Body: strings.Repeat("x", 4097)}}, push.ErrPayloadTooLarge},
		{"topic payload over 2 KB", &push.Message{Topic: "news", Notification: push.Notification{Body: strings.Repeat("x", 2049)}}, push.ErrPayloadTooLarge},
		{"reserved data key", &push.Message{Token: tok, Notification: push.Notification{Data: map[string]string{"google.x": "1"}}}, push.ErrInvalidMessage},
		{"http link", &push.Message{Token: tok, Notification: push.Notification{URL: "http://x"}}, push.ErrInvalidMessage},
	}
	for _, tc := range cases {
		_, err := c.Send(ctx, tc.m)
		require.ErrorIs(t, err, tc.want, tc.name)
		require.ErrorIs(t, c.Validate(tc.m), tc.want, "Validate must refuse what Send refuses: %s", tc.name)
	}
	require.NoError(t, c.Validate(&push.Message{Token: tok, Notification: push.Notification{Body: "ok"}}))
	require.Empty(t, srv.Requests())
}

func TestSecretsAndTokensStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	sa := srv.ServiceAccountJSON(t)
	var logs bytes.Buffer
	cfg := &fcm.Config{CredentialsJSON: sa, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	c, err := fcm.New(ctx, cfg.UseFake(srv))
	require.NoError(t, err)
	tok := pushtest.RegistrationToken("secret-device")
	var out []string
	for _, code := range []string{"UNREGISTERED", "INVALID_ARGUMENT", "INTERNAL"} {
		srv.FailNext(1, pushtest.Fault{Reason: code})
		_, err := c.Send(ctx, &push.Message{Token: tok, Notification: push.Notification{Body: "payload-canary"}})
		out = append(out, err.Error(), fmt.Sprintf("%+v", err))
	}
	out = append(out, fmt.Sprintf("%+v %#v", cfg, cfg))
	all := strings.Join(out, "\n") + logs.String()
	require.NotContains(t, all, tok)
	require.NotContains(t, all, "payload-canary")
	require.NotContains(t, all, "PRIVATE KEY")
	require.NotContains(t, all, sa.Reveal()[40:60])
}

// What FCM would refuse that can be known locally is refused by Validate.
func TestHeaderBoundValuesAndReservedKeys(t *testing.T) {
	t.Parallel()
	srv := pushtest.NewFCM(t, nil)
	c := newClient(t, srv, nil)
	tok := pushtest.RegistrationToken("a")
	for name, m := range map[string]*push.Message{
		"google-prefixed key":     {Token: tok, Notification: push.Notification{Data: map[string]string{"googleplay": "1"}}},
		"gcm-prefixed key":        {Token: tok, Notification: push.Notification{Data: map[string]string{"gcm_x": "1"}}},
		"collapse_key data key":   {Token: tok, Notification: push.Notification{Data: map[string]string{"collapse_key": "1"}}},
		"empty data key":          {Token: tok, Notification: push.Notification{Data: map[string]string{"": "1"}}},
		"topic with a slash":      {Topic: "news/sport", Notification: push.Notification{Body: "x"}},
		"topic with a space":      {Topic: "news sport", Notification: push.Notification{Body: "x"}},
		"condition with CR/LF":    {Condition: "'a' in topics\r\n", Notification: push.Notification{Body: "x"}},
		"collapse key with CR/LF": {Token: tok, Notification: push.Notification{CollapseKey: "a\r\nb"}},
		"collapse key over 64":    {Token: tok, Notification: push.Notification{CollapseKey: strings.Repeat("c", 65)}},
		"token with a quote":      {Token: strings.Repeat("a", 40) + `"`},
	} {
		require.Error(t, c.Validate(m), name)
		_, err := c.Send(ctx, m)
		require.Error(t, err, name)
		require.False(t, push.IsRetryable(err), name)
	}
	require.Empty(t, srv.Requests())
}

// The fuzz property: Validate never panics, and what it accepts the fake
// FCM accepts.
func FuzzValidate(f *testing.F) {
	f.Add("Hi", "there", "sku", "A1", "", "")
	f.Add("", strings.Repeat("x", 5000), "google.x", "1", "news", "")
	f.Add("t", "b", "from", "x", "", "'a' in topics")
	srv := pushtest.NewFCM(f, nil)
	c, err := fcm.New(ctx, (&fcm.Config{}).UseFake(srv))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, title, body, key, value, topic, condition string) {
		m := &push.Message{Topic: topic, Condition: condition, Notification: push.Notification{Title: title, Body: body, Data: map[string]string{key: value}}}
		if topic == "" && condition == "" {
			m.Token = pushtest.RegistrationToken(title)
		}
		if c.Validate(m) != nil {
			return
		}
		_, err := c.Send(ctx, m)
		var pe *push.Error
		if errors.As(err, &pe) && pe.AboutMessage() {
			t.Fatalf("Validate accepted a message FCM refused: %v", err)
		}
	})
}
