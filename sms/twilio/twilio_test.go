package twilio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

const to = "+14155552671"

func newClient(t *testing.T, srv *smstest.Server, mod func(*twilio.Config)) *twilio.Client {
	t.Helper()
	cfg := (&twilio.Config{}).UseFake(srv)
	if mod != nil {
		mod(cfg)
	}
	c, err := twilio.New(cfg)
	require.NoError(t, err)
	return c
}

func TestSend(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	c := newClient(t, srv, nil)
	rcpt, err := c.Send(ctx, &sms.Message{To: to, From: "+14155550100", Body: "Your code is 123456 €",
		StatusCallback: "https://hooks.example.com/twilio/status", ValidityPeriod: 10 * time.Minute})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rcpt.SID, "SM"))
	require.Equal(t, "queued", rcpt.Status)
	require.Equal(t, 1, rcpt.Segments)
	m := srv.Accepted()[0]
	require.Equal(t, rcpt.SID, m.SID)
	require.Equal(t, to, m.To)
	require.Equal(t, "+14155550100", m.From)
	require.Equal(t, "https://hooks.example.com/twilio/status", m.StatusCallback)
	require.Equal(t, "600", m.ValidityPeriod)

	_, err = c.Send(ctx, &sms.Message{To: to, MessagingServiceSID: "MG" + strings.Repeat("0", 32), Body: "hi"})
	require.NoError(t, err)
	require.Equal(t, "MG"+strings.Repeat("0", 32), srv.Accepted()[1].MessagingServiceSID)
}

func TestErrorsAreClassified(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	var mu sync.Mutex
	var gone []sms.Gone
	c := newClient(t, srv, func(cfg *twilio.Config) {
		cfg.OnGone = func(_ context.Context, g sms.Gone) { mu.Lock(); gone = append(gone, g); mu.Unlock() }
	})
	date := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	cases := []struct {
		f      smstest.Fault
		want   error
		wantRA time.Duration
	}{
		{smstest.Fault{Status: 400, Code: 21211, Message: "Invalid 'To' Phone Number: +14155552671"}, sms.ErrInvalidNumber, 0},
		{smstest.Fault{Status: 400, Code: 21614, Message: "'To' number is not a valid mobile number"}, sms.ErrInvalidNumber, 0},
		{smstest.Fault{Status: 400, Code: 21610, Message: "Attempt to send to unsubscribed recipient"}, sms.ErrRecipientGone, 0},
		{smstest.Fault{Status: 400, Code: 21408, Message: "Permission to send an SMS has not been enabled for the region"}, sms.ErrRejected, 0},
		{smstest.Fault{Status: 429, Code: 20429, Message: "Too Many Requests", RetryAfter: "30"}, sms.ErrRateLimited, 30 * time.Second},
		{smstest.Fault{Status: 429, Message: "Too Many Requests", RetryAfter: date}, sms.ErrRateLimited, 2 * time.Minute},
		{smstest.Fault{Status: 500, Code: 20500, Message: "Internal Server Error"}, sms.ErrUnavailable, 0},
		{smstest.Fault{Status: 503, Code: 20503, Message: "Service Unavailable", RetryAfter: "5"}, sms.ErrUnavailable, 5 * time.Second},
		{smstest.Fault{Status: 502, Code: 0, Message: "Bad Gateway"}, sms.ErrUnavailable, 0},
	}
	for _, tc := range cases {
		srv.FailNext(1, tc.f)
		_, err := c.Send(ctx, &sms.Message{To: to, From: "Herald", Body: "x"})
		require.ErrorIs(t, err, tc.want, "%d %d", tc.f.Status, tc.f.Code)
		var e *sms.Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, tc.f.Code, e.Code)
		require.Equal(t, tc.f.Status, e.Status)
		require.InDelta(t, tc.wantRA.Seconds(), e.RetryAfter.Seconds(), 1.5, "%d Retry-After", tc.f.Code)
		require.Equal(t, errors.Is(tc.want, sms.ErrUnavailable) || errors.Is(tc.want, sms.ErrRateLimited), sms.IsRetryable(err))
	}
	mu.Lock()
	require.Equal(t, []sms.Gone{{Number: to, Code: 21610, Reason: "Attempt to send to unsubscribed recipient"}}, gone)
	mu.Unlock()

	wrong := newClient(t, srv, func(cfg *twilio.Config) { cfg.AuthToken = secret.String("wrongtokencanary") })
	_, err := wrong.Send(ctx, &sms.Message{To: to, From: "Herald", Body: "x"})
	require.ErrorIs(t, err, sms.ErrAuth)
	require.NotContains(t, err.Error(), "wrongtokencanary")
}

func TestBadNumbersAreRefusedBeforeTheNetwork(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	c := newClient(t, srv, nil)
	for _, n := range []string{"4155552671", "+1 415 555 2671", "(415) 555-2671", "+1555", "+99912345678", "+14155552671\n"} {
		_, err := c.Send(ctx, &sms.Message{To: n, From: "Herald", Body: "x"})
		require.ErrorIs(t, err, sms.ErrInvalidNumber, "%q", n)
	}
	_, err := c.Send(ctx, &sms.Message{To: to, From: "Not@Valid", Body: "x"})
	require.ErrorIs(t, err, sms.ErrInvalidMessage)
	require.Empty(t, srv.Messages())

	_, err = twilio.New(&twilio.Config{AccountSID: "AC123", AuthToken: secret.String("tok-with-dash")})
	require.ErrorContains(t, err, "AuthToken")
}

func TestContextIsHonoured(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	c := newClient(t, srv, nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Send(cctx, &sms.Message{To: to, From: "Herald", Body: "x"})
	require.ErrorIs(t, err, sms.ErrUnavailable)
	require.ErrorIs(t, err, context.Canceled)
}

func TestStatusCallbacks(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	c := newClient(t, srv, nil)
	_, err := c.Send(ctx, &sms.Message{To: to, From: "Herald", Body: "x"})
	require.NoError(t, err)
	sent := srv.Accepted()[0]

	var mu sync.Mutex
	var events []twilio.StatusEvent
	h, err := twilio.StatusHandler(twilio.StatusConfig{
		AuthToken: srv.AuthToken(),
		OnEvent: func(_ context.Context, e twilio.StatusEvent) error {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
			return nil
		},
	})
	require.NoError(t, err)
	hook := httptest.NewServer(h)
	defer hook.Close()
	url := hook.URL + "/twilio/status?tenant=7"

	require.Equal(t, 204, smstest.PostStatus(t, url, srv.AuthToken(), srv.StatusParams(sent, "sent", 0)))
	require.Equal(t, 204, smstest.PostStatus(t, url, srv.AuthToken(), srv.StatusParams(sent, "delivered", 0)))
	require.Equal(t, 204, smstest.PostStatus(t, url, srv.AuthToken(), srv.StatusParams(sent, "delivered", 0)), "a replay is accepted")
	require.Equal(t, 204, smstest.PostStatus(t, url, srv.AuthToken(), srv.StatusParams(sent, "undelivered", 30005)))

	// A wrong token, a tampered parameter and a different URL all fail.
	require.Equal(t, 403, smstest.PostStatus(t, url, secret.String("notthetoken"), srv.StatusParams(sent, "failed", 0)))
	p := srv.StatusParams(sent, "delivered", 0)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(strings.Replace(p.Encode(), "delivered", "failed", 2)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", smstest.Sign(srv.AuthToken().Reveal(), url, p))
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 403, res.StatusCode)
	// Signed for one URL, posted to another.
	p = srv.StatusParams(sent, "failed", 0)
	req, _ = http.NewRequest(http.MethodPost, hook.URL+"/other", strings.NewReader(p.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", smstest.Sign(srv.AuthToken().Reveal(), url, p))
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 403, res.StatusCode)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 4)
	require.Equal(t, sent.SID+":delivered", events[1].ID)
	require.Equal(t, events[1].ID, events[2].ID, "a replayed callback carries the same event ID")
	require.True(t, events[1].Final)
	require.False(t, events[0].Final)
	require.Equal(t, "undelivered", events[3].Status)
	require.Equal(t, 30005, events[3].ErrorCode)
	require.True(t, events[3].Gone)
	require.Equal(t, to, events[3].To)
}

func TestSecretsAndNumbersStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	var logs bytes.Buffer
	cfg := (&twilio.Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}).UseFake(srv)
	c, err := twilio.New(cfg)
	require.NoError(t, err)
	var out []string
	for _, f := range []smstest.Fault{{Status: 400, Code: 21211, Message: "Invalid 'To' Phone Number: " + to}, {Status: 500, Code: 20500, Message: "oops"}} {
		srv.FailNext(1, f)
		_, err := c.Send(ctx, &sms.Message{To: to, From: "Herald", Body: "body-canary"})
		out = append(out, err.Error(), fmt.Sprintf("%+v %#v", err, cfg))
	}
	all := strings.Join(out, "\n") + logs.String()
	require.NotContains(t, all, to)
	require.NotContains(t, all, to[2:])
	require.NotContains(t, all, "body-canary")
	require.NotContains(t, all, srv.AuthToken().Reveal())
}

// A certificate the client does not trust is a configuration error
// (ErrAuth), not an outage to retry; the host's *http.Client (a proxy, a
// private CA) carries the requests when given.
func TestTransportAndUntrustedCertificates(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"sid":"SM00000000000000000000000000000001","status":"queued"}`))
	}))
	t.Cleanup(tlsSrv.Close)
	fake := smstest.NewServer(t)
	base := (&twilio.Config{}).UseFake(fake)
	c, err := twilio.New(&twilio.Config{AccountSID: base.AccountSID, AuthToken: base.AuthToken, BaseURL: tlsSrv.URL})
	require.NoError(t, err)
	_, err = c.Send(ctx, &sms.Message{To: to, From: "+15005550006", Body: "hi"})
	require.ErrorIs(t, err, sms.ErrAuth)
	require.Contains(t, err.Error(), "certificate")
	require.False(t, sms.IsRetryable(err))

	trusted, err := twilio.New(&twilio.Config{AccountSID: base.AccountSID, AuthToken: base.AuthToken, BaseURL: tlsSrv.URL, HTTPClient: tlsSrv.Client()})
	require.NoError(t, err)
	r, err := trusted.Send(ctx, &sms.Message{To: to, From: "+15005550006", Body: "hi"})
	require.NoError(t, err)
	require.Equal(t, "queued", r.Status)
	tlsSrv.Client().CloseIdleConnections()
}

// The cost guard and the body and callback checks, through the client's
// Validate (what the Dispatcher calls at the door) and its policy.
func TestTheClientsPolicyIsItsValidation(t *testing.T) {
	t.Parallel()
	srv := smstest.NewServer(t)
	strict := newClient(t, srv, nil)
	premium := "+19005550123"
	require.Equal(t, sms.PremiumRate, sms.TypeOf(premium))
	require.ErrorIs(t, strict.Validate(&sms.Message{To: premium, From: "+15005550006", Body: "hi"}), sms.ErrInvalidNumber)
	loose := newClient(t, srv, func(cfg *twilio.Config) { cfg.Numbers.AllowTypes = []sms.NumberType{sms.PremiumRate} })
	require.NoError(t, loose.Validate(&sms.Message{To: premium, From: "+15005550006", Body: "hi"}))
	usOnly := newClient(t, srv, func(cfg *twilio.Config) { cfg.Numbers.AllowCountries = []string{"US"} })
	require.NoError(t, usOnly.Validate(&sms.Message{To: to, From: "+15005550006", Body: "hi"}))
	require.ErrorIs(t, usOnly.Validate(&sms.Message{To: "+447700900123", From: "+15005550006", Body: "hi"}), sms.ErrInvalidNumber)
	_, err := strict.Send(ctx, &sms.Message{To: premium, From: "+15005550006", Body: "hi"})
	require.ErrorIs(t, err, sms.ErrInvalidNumber)
	require.Empty(t, srv.Messages(), "refused before any request")
}

// The fuzz property: Validate never panics, and what it accepts the fake
// Twilio accepts.
func FuzzValidate(f *testing.F) {
	f.Add("+14155552671", "+15005550006", "hello", "")
	f.Add("+19005550123", "Shop", "\u200b\u200b", "https://hooks.example.com/s")
	f.Add("+8816123456789", "Shop", strings.Repeat("é", 700), "http://127.0.0.1/x")
	srv := smstest.NewServer(f)
	c, err := twilio.New((&twilio.Config{}).UseFake(srv))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, to, from, body, callback string) {
		m := &sms.Message{To: to, From: from, Body: body, StatusCallback: callback}
		if c.Validate(m) != nil {
			return
		}
		_, err := c.Send(ctx, m)
		var se *sms.Error
		if errors.As(err, &se) && se.AboutMessage() {
			t.Fatalf("Validate accepted a message Twilio refused: %v", err)
		}
	})
}
