package webpush_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

type fixture struct {
	srv *pushtest.WebPushServer
	c   *webpush.Client
	pub string
	key secret.Value
}

func setup(t *testing.T, mod func(*webpush.Config)) *fixture {
	t.Helper()
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	srv := pushtest.NewWebPush(t)
	cfg := &webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}
	if mod != nil {
		mod(cfg)
	}
	c, err := webpush.New(cfg.UseFake(srv))
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	return &fixture{srv: srv, c: c, pub: pub, key: priv}
}

func TestSendIsDecryptedByThePushService(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	sub := f.srv.NewSubscription(t, f.pub)
	rcpt, err := f.c.Send(ctx, &push.Message{
		Token:          sub,
		IdempotencyKey: "welcome/ada",
		Notification: push.Notification{
			Title: "Welcome", Body: "Glad you're here ✓", URL: "https://example.com/start",
			Data: map[string]string{"k": "v"}, TTL: 10 * time.Minute, Priority: push.PriorityNormal,
		},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rcpt.ID, "/msg/"))
	r := f.srv.Delivered()[0]
	require.Equal(t, sub, r.Subscription)
	require.Equal(t, "600", r.TTL)
	require.Equal(t, "normal", r.Urgency)
	require.Equal(t, push.CollapseID("welcome/ada"), r.Topic, "Topic derived from the idempotency key")
	require.Equal(t, map[string]any{"title": "Welcome", "body": "Glad you're here ✓", "url": "https://example.com/start", "data": map[string]any{"k": "v"}}, r.Payload)

	// The largest payload that fits one record goes through, decrypted whole.
	var p webpush.Payload
	base, _ := json.Marshal(p)
	p.Body = strings.Repeat("x", webpush.MaxPayload-len(base)-len(`"body":""`))
	_, err = f.c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: p.Body}})
	require.NoError(t, err)
	require.Len(t, f.srv.Delivered()[1].Plaintext, webpush.MaxPayload)
	require.Equal(t, fmt.Sprint(int(webpush.DefaultTTL.Seconds())), f.srv.Delivered()[1].TTL, "a TTL is always sent")
}

func TestStatusesAreClassified(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gone []push.Gone
	f := setup(t, func(cfg *webpush.Config) {
		cfg.OnGone = func(_ context.Context, g push.Gone) { mu.Lock(); gone = append(gone, g); mu.Unlock() }
	})
	sub := f.srv.NewSubscription(t, f.pub)
	date := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	cases := []struct {
		status     int
		retryAfter string
		want       error
		wantRA     time.Duration
	}{
		{400, "", push.ErrInvalidMessage, 0},
		{401, "", push.ErrAuth, 0},
		{403, "", push.ErrAuth, 0},
		{404, "", push.ErrUnregistered, 0},
		{406, "10", push.ErrRateLimited, 10 * time.Second},
		{410, "", push.ErrUnregistered, 0},
		{413, "", push.ErrPayloadTooLarge, 0},
		{429, "30", push.ErrRateLimited, 30 * time.Second},
		{429, date, push.ErrRateLimited, 2 * time.Minute},
		{500, "", push.ErrUnavailable, 0},
		{502, "", push.ErrUnavailable, 0},
		{503, "5", push.ErrUnavailable, 5 * time.Second},
	}
	for _, tc := range cases {
		f.srv.FailNext(1, pushtest.Fault{Status: tc.status, RetryAfter: tc.retryAfter})
		_, err := f.c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: "x"}})
		require.ErrorIs(t, err, tc.want, "status %d", tc.status)
		var pe *push.Error
		require.ErrorAs(t, err, &pe)
		require.Equal(t, tc.status, pe.Status)
		require.InDelta(t, tc.wantRA.Seconds(), pe.RetryAfter.Seconds(), 1.5, "status %d Retry-After %q", tc.status, tc.retryAfter)
	}
	mu.Lock()
	require.Len(t, gone, 2, "404 and 410 fire the gone hook")
	require.Equal(t, sub, gone[0].Token)
	mu.Unlock()

	f.srv.Unsubscribe(sub)
	_, err := f.c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: "x"}})
	require.ErrorIs(t, err, push.ErrUnregistered)
}

func TestVAPIDKeyMustBeTheSubscriptions(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	otherPub, _, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	sub := f.srv.NewSubscription(t, otherPub) // subscribed with another app server key
	_, err = f.c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: "x"}})
	require.ErrorIs(t, err, push.ErrAuth)
	require.Equal(t, 403, f.srv.Requests()[0].Status)
}

func TestInvalidVAPIDKeysAreRefusedAtNew(t *testing.T) {
	t.Parallel()
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	pub2, priv2, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	cases := map[string]webpush.Config{
		"public not base64": {VAPIDPublicKey: "!!!", VAPIDPrivateKey: priv, Subscriber: "a@b.c"},
		"public too short":  {VAPIDPublicKey: pub[:20], VAPIDPrivateKey: priv, Subscriber: "a@b.c"},
		"private garbage":   {VAPIDPublicKey: pub, VAPIDPrivateKey: secret.String("garbage"), Subscriber: "a@b.c"},
		"mismatched pair":   {VAPIDPublicKey: pub, VAPIDPrivateKey: priv2, Subscriber: "a@b.c"},
	}
	for name, cfg := range cases {
		_, err := webpush.New(&cfg)
		require.ErrorIs(t, err, webpush.ErrInvalidVAPIDKeys, name)
		require.NotContains(t, err.Error(), priv.Reveal(), name)
		require.NotContains(t, err.Error(), priv2.Reveal(), name)
	}
	_, err = webpush.New(&webpush.Config{VAPIDPublicKey: pub2, VAPIDPrivateKey: priv2})
	require.ErrorContains(t, err, "Subscriber")
}

func TestBadInputIsRefusedBeforeTheNetwork(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	sub := f.srv.NewSubscription(t, f.pub)
	var good webpush.Subscription
	require.NoError(t, json.Unmarshal([]byte(sub), &good))
	mutate := func(fn func(*webpush.Subscription)) string {
		s := good
		fn(&s)
		b, _ := json.Marshal(s)
		return string(b)
	}
	cases := []struct {
		name  string
		token string
		n     push.Notification
		want  error
	}{
		{"not JSON", "{endpoint", push.Notification{}, push.ErrInvalidToken},
		{"empty", "", push.Notification{}, push.ErrInvalidToken},
		{"no endpoint", mutate(func(s *webpush.Subscription) { s.Endpoint = "" }), push.Notification{}, push.ErrInvalidToken},
		{"bad p256dh", mutate(func(s *webpush.Subscription) { s.Keys.P256dh = "AAAA" }), push.Notification{}, push.ErrInvalidToken},
		{"p256dh off the curve", mutate(func(s *webpush.Subscription) { s.Keys.P256dh = "BA" + strings.Repeat("A", 85) }), push.Notification{}, push.ErrInvalidToken},
		{"bad auth", mutate(func(s *webpush.Subscription) { s.Keys.Auth = "AAAA" }), push.Notification{}, push.ErrInvalidToken},
		{"payload too large", sub, push.Notification{Body: strings.Repeat("x", 4000)}, push.ErrPayloadTooLarge},
		{"bad urgency", sub, push.Notification{WebPush: &push.WebPushOverride{Urgency: "now!"}}, push.ErrInvalidMessage},
	}
	for _, tc := range cases {
		m := &push.Message{Token: tc.token, Notification: tc.n}
		_, err := f.c.Send(ctx, m)
		require.ErrorIs(t, err, tc.want, tc.name)
		require.ErrorIs(t, f.c.Validate(m), tc.want, "Validate must refuse what Send refuses: %s", tc.name)
	}
	require.NoError(t, f.c.Validate(&push.Message{Token: sub, Notification: push.Notification{Body: "ok"}}))
	require.Empty(t, f.srv.Requests())
}

// resolver answers from a table, like a DNS server the attacker controls.
func resolver(table map[string]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		ip, ok := table[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
}

func TestSSRFGuard(t *testing.T) {
	t.Parallel()
	canary := pushtest.NewCanary(t)
	_, canaryPort, _ := net.SplitHostPort(canary.Addr())
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	newClient := func(allowLoopback bool, allowed ...string) *webpush.Client {
		c, err := webpush.New(&webpush.Config{
			VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com",
			AllowedHosts: allowed, AllowLoopback: allowLoopback,
			LookupIP: resolver(map[string]string{
				"fcm.googleapis.com":                "127.0.0.1", // a poisoned resolver
				"updates.push.services.mozilla.com": "10.1.2.3",
				"web.push.apple.com":                "169.254.169.254",
				"wns2-par02p.notify.windows.com":    "::ffff:192.168.1.7",
				"push.example.test":                 "172.16.5.5",
				"rebind.example.test":               "100.64.1.1",
				"meta.example.test":                 "fd00:ec2::254",
				"zoned.example.test":                "fe80::1%eth0",
				"compat.example.test":               "::808:808",
				"compatlo.example.test":             "::7f00:1",
				"compat10.example.test":             "::a00:1",
			}),
			Timeout: 2 * time.Second,
		})
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		return c
	}
	strict := newClient(false)
	withHosts := newClient(false, "push.example.test", "rebind.example.test", "meta.example.test", "127.0.0.1:"+canaryPort,
		"zoned.example.test", "compat.example.test", "compatlo.example.test", "compat10.example.test")
	keys := `"keys":{"p256dh":"BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM","auth":"tBHItJI5svbpez7KI4CCXg"}`
	sub := func(endpoint string) string { return `{"endpoint":"` + endpoint + `",` + keys + `}` }
	cases := []struct {
		name     string
		c        *webpush.Client
		endpoint string
	}{
		{"http scheme", strict, "http://fcm.googleapis.com/fcm/send/x"},
		{"non-443 port", strict, "https://fcm.googleapis.com:8443/fcm/send/x"},
		{"userinfo", strict, "https://user:pass@fcm.googleapis.com/fcm/send/x"},
		{"unknown host", strict, "https://evil.example.com/push"},
		{"suffix without dot", strict, "https://evilfcm.googleapis.com/push"},
		{"known host as a prefix", strict, "https://fcm.googleapis.com.evil.com/push"},
		{"IDN homograph", strict, "https://fcm.googleapis.cοm/push"},
		{"loopback literal", strict, "https://127.0.0.1/push"},
		{"loopback canary", strict, "https://" + canary.Addr() + "/push"},
		{"IPv6 loopback", strict, "https://[::1]/push"},
		{"metadata IP", strict, "https://169.254.169.254/latest/meta-data"},
		{"RFC 1918 10/8", strict, "https://10.0.0.1/push"},
		{"RFC 1918 172.16/12", strict, "https://172.16.0.1/push"},
		{"RFC 1918 192.168/16", strict, "https://192.168.0.1/push"},
		{"CGNAT", strict, "https://100.64.0.1/push"},
		{"benchmarking", strict, "https://198.18.0.1/push"},
		{"documentation", strict, "https://203.0.113.9/push"},
		{"IPv4-mapped IPv6 loopback", strict, "https://[::ffff:127.0.0.1]/push"},
		{"decimal IP", strict, "https://2130706433/push"},
		{"octal IP", strict, "https://0177.0.0.1/push"},
		{"localhost", strict, "https://localhost/push"},
		{"localhost dot", strict, "https://localhost./push"},
		{"unique local IPv6", strict, "https://[fd00::1]/push"},
		{"link-local IPv6", strict, "https://[fe80::1]/push"},
		{"multicast", strict, "https://224.0.0.1/push"},
		{"unspecified", strict, "https://0.0.0.0/push"},
		{"very long URL", strict, "https://fcm.googleapis.com/" + strings.Repeat("a", 3000)},
		{"known host resolving to loopback", strict, "https://fcm.googleapis.com/fcm/send/x"},
		{"known host resolving to 10/8", strict, "https://updates.push.services.mozilla.com/wpush/v2/x"},
		{"known host resolving to metadata", strict, "https://web.push.apple.com/x"},
		{"known host resolving to mapped private", strict, "https://wns2-par02p.notify.windows.com/w/?token=x"},
		{"added host resolving to private", withHosts, "https://push.example.test/x"},
		{"added host resolving to CGNAT", withHosts, "https://rebind.example.test/x"},
		{"added host resolving to ULA", withHosts, "https://meta.example.test/x"},
		{"added loopback host without AllowLoopback", withHosts, "https://" + canary.Addr() + "/push"},
		{"zoned IPv6 literal", strict, "https://[fe80::1%25eth0]/push"},
		{"zoned IPv6 literal, added host", withHosts, "https://[fe80::1%25eth0]:443/push"},
		{"host resolving to a zoned address", withHosts, "https://zoned.example.test/x"},
		{"host resolving to IPv4-compatible IPv6 (public v4)", withHosts, "https://compat.example.test/x"},
		{"host resolving to IPv4-compatible loopback", withHosts, "https://compatlo.example.test/x"},
		{"host resolving to IPv4-compatible 10/8", withHosts, "https://compat10.example.test/x"},
		{"IPv4-compatible literal", strict, "https://[::7f00:1]/push"},
	}
	for _, tc := range cases {
		_, err := tc.c.Send(ctx, &push.Message{Token: sub(tc.endpoint), Notification: push.Notification{Body: "x"}})
		require.ErrorIs(t, err, push.ErrForbiddenEndpoint, tc.name)
		require.False(t, push.IsRetryable(err), tc.name)
	}
	require.Zero(t, canary.Accepted(), "no connection may reach a loopback listener")
}

// The allow-list of push services cannot be widened by code in the
// process: KnownPushServices hands out a copy.
func TestKnownPushServicesIsACopy(t *testing.T) {
	t.Parallel()
	l := webpush.KnownPushServices()
	require.Contains(t, l, "fcm.googleapis.com")
	l[0] = "evil.example.com"
	require.NotContains(t, webpush.KnownPushServices(), "evil.example.com")
	_, err := webpush.New(&webpush.Config{VAPIDPublicKey: "x", AllowedHosts: []string{"host/path"}})
	require.Error(t, err)
}

// A push service certificate the client does not trust is a configuration
// error, not an outage.
func TestUntrustedCertificateIsAConfigurationError(t *testing.T) {
	t.Parallel()
	f := setup(t, func(cfg *webpush.Config) {})
	sub := f.srv.NewSubscription(t, f.pub)
	pub, priv := f.pub, f.key
	cfg := (&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(f.srv)
	cfg.TLSConfig = nil
	c, err := webpush.New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	_, err = c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: "x"}})
	require.ErrorIs(t, err, push.ErrAuth)
	require.False(t, push.IsRetryable(err))
}

// The fuzz property: Validate never panics, and what it accepts the fake
// push service accepts.
func FuzzValidate(f *testing.F) {
	f.Add("Hi", "there", "", "", "normal", "k")
	f.Add("a\r\nb", strings.Repeat("x", 4000), "https://example.com", "tag", "high", "")
	f.Add("", "", "javascript:alert(1)", "", "bogus", "k2")
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(f, err)
	srv := pushtest.NewWebPush(f)
	c, err := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(srv))
	require.NoError(f, err)
	f.Cleanup(c.CloseIdleConnections)
	sub := srv.NewSubscription(f, pub)
	f.Fuzz(func(t *testing.T, title, body, url, tag, urgency, key string) {
		m := &push.Message{Token: sub, IdempotencyKey: key, Notification: push.Notification{Title: title, Body: body, URL: url, ThreadID: tag,
			WebPush: &push.WebPushOverride{Urgency: urgency}}}
		if c.Validate(m) != nil {
			return
		}
		_, err := c.Send(ctx, m)
		var pe *push.Error
		if errors.As(err, &pe) && pe.AboutMessage() {
			t.Fatalf("Validate accepted a notification the push service refused: %v", err)
		}
	})
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	canary := pushtest.NewCanary(t)
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+canary.Addr()+"/steal", http.StatusFound)
	}))
	defer redirector.Close()
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	c, err := webpush.New(&webpush.Config{
		VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com",
		AllowedHosts: []string{strings.TrimPrefix(redirector.URL, "https://")}, AllowLoopback: true,
		TLSConfig: redirector.Client().Transport.(*http.Transport).TLSClientConfig,
	})
	require.NoError(t, err)
	defer c.CloseIdleConnections()
	f := pushtest.NewWebPush(t)
	var s webpush.Subscription
	require.NoError(t, json.Unmarshal([]byte(f.NewSubscription(t, pub)), &s))
	s.Endpoint = redirector.URL + "/push/x"
	b, _ := json.Marshal(s)
	_, err = c.Send(ctx, &push.Message{Token: string(b), Notification: push.Notification{Body: "x"}})
	require.ErrorIs(t, err, push.ErrInvalidMessage)
	require.Contains(t, err.Error(), "redirect not followed")
	require.Zero(t, canary.Accepted())
}

func TestSecretsAndSubscriptionsStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	f := setup(t, func(cfg *webpush.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	sub := f.srv.NewSubscription(t, f.pub)
	var s webpush.Subscription
	require.NoError(t, json.Unmarshal([]byte(sub), &s))
	var out []string
	for _, st := range []int{404, 500} {
		f.srv.FailNext(1, pushtest.Fault{Status: st})
		_, err := f.c.Send(ctx, &push.Message{Token: sub, Notification: push.Notification{Body: "payload-canary"}})
		out = append(out, err.Error(), fmt.Sprintf("%+v", err))
	}
	_, err := f.c.Send(ctx, &push.Message{Token: strings.Replace(sub, "https://127.0.0.1", "https://10.0.0.1", 1), Notification: push.Notification{Body: "x"}})
	out = append(out, err.Error())
	all := strings.Join(out, "\n") + logs.String()
	id := s.Endpoint[strings.LastIndex(s.Endpoint, "/")+1:]
	require.NotContains(t, all, id, "the endpoint's path identifies the subscriber")
	require.NotContains(t, all, s.Keys.Auth)
	require.NotContains(t, all, s.Keys.P256dh)
	require.NotContains(t, all, "payload-canary")
	require.NotContains(t, all, f.key.Reveal())
	require.False(t, errors.Is(err, push.ErrUnavailable))
}

// Subscriptions come from browsers, so from anyone: the parser must never
// panic or crawl, and whatever it accepts is well formed and on an allowed
// push service over https.
func FuzzParseSubscription(f *testing.F) {
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		f.Fatal(err)
	}
	c, err := webpush.New(&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	good := `{"endpoint":"https://fcm.googleapis.com/fcm/send/abc","keys":{"p256dh":"BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM","auth":"tBHItJI5svbpez7KI4CCXg"}}`
	f.Add(good)
	f.Add(`{"endpoint":"https://127.0.0.1/x","keys":{"p256dh":"","auth":""}}`)
	f.Add(`{"endpoint":"http://updates.push.services.mozilla.com/x"}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, s string) {
		start := time.Now()
		sub, err := c.ParseSubscription(s)
		if d := time.Since(start); d > 100*time.Millisecond && len(s) <= 64<<10 {
			t.Fatalf("%d bytes took %v", len(s), d)
		}
		if err != nil {
			if !errors.Is(err, push.ErrInvalidToken) && !errors.Is(err, push.ErrForbiddenEndpoint) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !strings.HasPrefix(sub.Endpoint, "https://") {
			t.Fatalf("accepted a non-https endpoint %q", sub.Endpoint)
		}
		if sub.Keys.P256dh == "" || sub.Keys.Auth == "" {
			t.Fatalf("accepted a subscription without keys: %q", s)
		}
	})
}
