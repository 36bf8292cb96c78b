package herald_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/twilio"
	"github.com/heraldhq/herald/tracking"
)

// The provider chaos matrix: each provider × each fault, one message
// through the real client and a Dispatcher. Network faults come from a TCP
// proxy in front of the provider (refused, reset, not TLS, no answer);
// HTTP answers from a scripted responder that speaks the provider's
// success (or, for SMTP, the fake SMTP server). A fault lasts a window
// (chaosWindow), a first answer (Retry-After cells) or for good (refused
// credentials, no answer, DNS); the message has a TTL of chaosTTL. For
// each cell: the class herald gave the first failure, the attempts, the
// outcome. Zero tolerance: a message lost (no outcome), sent after its
// deadline, or sent again before the Retry-After it was given.
// HERALD_UPDATE_RELIABILITY=1 writes the table into RELIABILITY.md.

const (
	chaosWindow = 1200 * time.Millisecond
	chaosTTL    = 4 * time.Second
	retryAfterS = 2
)

var chaosFaults = []string{"connection refused", "reset mid-request", "TLS handshake failure", "no answer before the deadline",
	"5xx", "5xx with Retry-After", "429 with Retry-After", "refused credentials", "non-JSON error body", "truncated body",
	"unknown success body", "DNS failure"}

var chaosProviders = []string{"APNs", "FCM", "Web Push", "SMTP", "Twilio"}

// proxy is a TCP front whose faults end at heal (zero: never).
type proxy struct {
	addr, upstream, mode string
	heal                 time.Time
	mu                   sync.Mutex
	ln                   net.Listener
	done                 chan struct{}
}

func newProxy(t *testing.T, upstream, mode string, heal time.Time) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err) // loopback always listens
	}
	p := &proxy{addr: ln.Addr().String(), upstream: upstream, mode: mode, heal: heal, done: make(chan struct{})}
	if mode == "connection refused" {
		_ = ln.Close() // nothing listens until heal
		go func() {
			if heal.IsZero() {
				return
			}
			time.Sleep(time.Until(heal))
			if ln, err := net.Listen("tcp", p.addr); err == nil {
				p.serve(ln)
			}
		}()
	} else {
		p.serve(ln)
	}
	t.Cleanup(func() {
		close(p.done)
		p.mu.Lock()
		if p.ln != nil {
			_ = p.ln.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
}

func (p *proxy) handle(c net.Conn) {
	faulty := p.heal.IsZero() || time.Now().Before(p.heal)
	switch {
	case faulty && p.mode == "reset mid-request":
		buf := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Read(buf)
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
		return
	case faulty && p.mode == "TLS handshake failure":
		_, _ = c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nthis is not TLS\r\n"))
		_ = c.Close()
		return
	case faulty && p.mode == "no answer before the deadline":
		<-p.done
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		_ = c.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

// responder answers as a provider does, with a scripted fault first.
type responder struct {
	provider, fault string
	heal            time.Time
	mu              sync.Mutex
	at              []time.Time // when each request arrived
}

func (r *responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.at = append(r.at, time.Now())
	n := len(r.at)
	r.mu.Unlock()
	window := time.Now().Before(r.heal)
	switch r.fault {
	case "5xx":
		if window {
			r.errorBody(w, 500, "InternalServerError")
			return
		}
	case "5xx with Retry-After", "429 with Retry-After":
		if n == 1 {
			w.Header().Set("Retry-After", fmt.Sprint(retryAfterS))
			if r.fault == "5xx with Retry-After" {
				r.errorBody(w, 503, "ServiceUnavailable")
			} else {
				r.errorBody(w, 429, "TooManyRequests")
			}
			return
		}
	case "refused credentials":
		r.errorBody(w, map[string]int{"APNs": 403, "FCM": 401, "Web Push": 403, "Twilio": 401}[r.provider], "auth")
		return
	case "non-JSON error body":
		if window {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "<html><body>Bad gateway</body></html>")
			return
		}
	case "truncated body":
		if window {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = io.WriteString(w, `{"error": {"code": 500, "message": "inter`)
			return
		}
	case "unknown success body":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("apns-id", "8F1C1B1E-7E1B-4B44-8D61-0C0C7E1B4B44")
		w.WriteHeader(map[string]int{"APNs": 200, "FCM": 200, "Web Push": 201, "Twilio": 201}[r.provider])
		_, _ = io.WriteString(w, `{"surprise": ["a", "field", "nobody", "documented"]}`)
		return
	}
	switch r.provider {
	case "APNs":
		w.Header().Set("apns-id", "8F1C1B1E-7E1B-4B44-8D61-0C0C7E1B4B44")
		w.WriteHeader(200)
	case "FCM":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"name": "projects/chaos/messages/0:1500415314455276%31bd1c9631bd1c96"}`)
	case "Web Push":
		w.WriteHeader(201)
	case "Twilio":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, `{"sid": "SM1234567890abcdef1234567890abcdef", "status": "queued"}`)
	}
}

func (r *responder) errorBody(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	switch r.provider {
	case "APNs":
		if reason == "auth" {
			reason = "InvalidProviderToken"
		}
		fmt.Fprintf(w, `{"reason": %q}`, reason)
	case "FCM":
		code := map[int]string{500: "INTERNAL", 503: "UNAVAILABLE", 429: "QUOTA_EXCEEDED", 401: "UNAUTHENTICATED"}[status]
		fmt.Fprintf(w, `{"error": {"code": %d, "status": %q, "message": "chaos"}}`, status, code)
	case "Twilio":
		code := map[int]int{500: 20500, 503: 20503, 429: 20429, 401: 20003}[status]
		fmt.Fprintf(w, `{"code": %d, "message": "chaos", "status": %d}`, code, status)
	default:
		_, _ = io.WriteString(w, reason)
	}
}

// cellResult is one cell of the matrix.
type cellResult struct {
	provider, fault, class, outcome string
	attempts                        int
	violations                      []string
}

func runCell(t *testing.T, provider, fault string) cellResult {
	res := cellResult{provider: provider, fault: fault}
	start := time.Now()
	heal := start.Add(chaosWindow)
	proxyMode, proxyHeal := "pass", time.Time{}
	switch fault {
	case "connection refused", "reset mid-request", "TLS handshake failure":
		proxyMode, proxyHeal = fault, heal
	case "no answer before the deadline":
		proxyMode = fault
	}
	var upstream string
	var rsp *responder
	var smtpSrv *emailtest.Server
	var tlsCfg *tls.Config
	if provider == "SMTP" {
		smtpSrv = emailtest.NewServer(t, nil)
		upstream, tlsCfg = smtpSrv.Addr(), smtpSrv.TLSConfig()
		switch fault {
		case "5xx":
			smtpSrv.FailNext(3, emailtest.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "try again later"})
		case "429 with Retry-After", "5xx with Retry-After":
			// SMTP has no Retry-After: 421 4.7.0 is its "slow down".
			smtpSrv.FailNext(2, emailtest.Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Message: "too many connections"})
		}
	} else {
		rsp = &responder{provider: provider, fault: fault, heal: heal}
		srv := httptest.NewUnstartedServer(rsp)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		upstream = srv.Listener.Addr().String()
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		tlsCfg = &tls.Config{RootCAs: pool}
	}
	px := newProxy(t, upstream, proxyMode, proxyHeal)
	host := px.addr
	if fault == "DNS failure" {
		_, port, _ := net.SplitHostPort(px.addr)
		host = "herald-chaos.invalid:" + port
	}
	events := tracking.NewMemoryStore()
	outbox, err := tracking.NewOutbox(events, &tracking.OutboxConfig{PollInterval: 5 * time.Millisecond})
	if err != nil {
		res.violations = append(res.violations, err.Error())
		return res
	}
	defer func() { _ = outbox.Close(context.Background()) }()
	cfg := &herald.Config{Store: retry.NewMemoryStore(), Tracker: outbox, MinTTL: time.Millisecond,
		Queue: retry.Config{PollInterval: 5 * time.Millisecond,
			Backoff: func(int, error) time.Duration { return 150 * time.Millisecond }}}
	m := herald.Message{IdempotencyKey: "chaos", User: "ada", Transactional: true, TTL: chaosTTL}
	if err := chaosClient(t, provider, fault, host, tlsCfg, smtpSrv, cfg, &m); err != nil {
		res.violations = append(res.violations, "setup: "+err.Error())
		return res
	}
	d, err := herald.New(cfg)
	if err != nil {
		res.violations = append(res.violations, "setup: "+err.Error())
		return res
	}
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		res.violations = append(res.violations, "setup: "+err.Error())
		return res
	}
	defer func() { _ = d.Stop(context.Background()) }()
	deadline := time.Now().Add(chaosTTL)
	if _, err := d.Send(ctx, m); err != nil {
		res.violations = append(res.violations, "refused at the door: "+err.Error())
		return res
	}
	final := map[tracking.Type]bool{tracking.Sent: true, tracking.Expired: true, tracking.Dead: true, tracking.RecipientGone: true}
	var evs []tracking.Event
	for wait := time.Now().Add(chaosTTL + 4*time.Second); ; {
		_ = outbox.Flush(ctx)
		recs, _ := events.Read(ctx, 0, 1000)
		evs = evs[:0]
		done := false
		for _, r := range recs {
			evs = append(evs, r.Event)
			done = done || final[r.Event.Type]
		}
		if done {
			break
		}
		if time.Now().After(wait) {
			res.violations = append(res.violations, "lost: no outcome")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	attempts := map[int]bool{}
	for _, e := range evs {
		switch e.Type {
		case tracking.Failed:
			attempts[e.Attempt] = true
			if res.class == "" {
				res.class = e.ErrorClass
			}
		case tracking.Sent:
			attempts[e.Attempt] = true
			if e.At.After(deadline) {
				res.violations = append(res.violations, "sent after its deadline")
			}
		}
		if final[e.Type] {
			res.outcome = string(e.Type)
		}
	}
	res.attempts = len(attempts)
	if rsp != nil && strings.Contains(fault, "Retry-After") {
		rsp.mu.Lock()
		at := slices.Clone(rsp.at)
		rsp.mu.Unlock()
		if len(at) > 1 && at[1].Sub(at[0]) < retryAfterS*time.Second-100*time.Millisecond {
			res.violations = append(res.violations, fmt.Sprintf("retried %s after a Retry-After of %ds", at[1].Sub(at[0]).Round(time.Millisecond), retryAfterS))
		}
	}
	if res.class == "" {
		res.class = "—"
	}
	return res
}

// chaosClient wires provider's real client to host and sets m's channel.
func chaosClient(t *testing.T, provider, fault, host string, tc *tls.Config, smtpSrv *emailtest.Server, cfg *herald.Config, m *herald.Message) error {
	var err error
	switch provider {
	case "APNs":
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		var c *apns.Client
		c, err = apns.New(&apns.Config{AuthKey: secret.New(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			KeyID: "CHAOS12345", TeamID: "TEAM123456", Topic: "com.example.chaos", Host: "https://" + host, TLSConfig: tc})
		if c != nil {
			t.Cleanup(c.CloseIdleConnections)
		}
		cfg.Push = map[push.Provider]push.Sender{push.APNs: c}
		m.Push = &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: pushtest.DeviceToken("chaos"),
			Notification: push.Notification{Title: "chaos"}}}
	case "FCM":
		var c *fcm.Client
		c, err = fcm.New(context.Background(), &fcm.Config{ProjectID: "chaos", Endpoint: "https://" + host + "/v1", TLSConfig: tc,
			TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "chaos-token", Expiry: time.Now().Add(time.Hour)})})
		cfg.Push = map[push.Provider]push.Sender{push.FCM: c}
		m.Push = &herald.PushMessage{Provider: push.FCM, Message: push.Message{Token: pushtest.RegistrationToken("chaos"),
			Notification: push.Notification{Title: "chaos"}}}
	case "Web Push":
		pub, priv, _ := webpush.GenerateVAPIDKeys()
		var c *webpush.Client
		c, err = webpush.New(&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "mailto:ops@example.com",
			AllowedHosts: []string{host}, AllowLoopback: true, TLSConfig: tc})
		cfg.Push = map[push.Provider]push.Sender{push.WebPush: c}
		ua, _ := ecdh.P256().GenerateKey(rand.Reader)
		auth := make([]byte, 16)
		_, _ = rand.Read(auth)
		sub := fmt.Sprintf(`{"endpoint":"https://%s/push/chaos","keys":{"p256dh":%q,"auth":%q}}`, host,
			base64.RawURLEncoding.EncodeToString(ua.PublicKey().Bytes()), base64.RawURLEncoding.EncodeToString(auth))
		m.Push = &herald.PushMessage{Provider: push.WebPush, Message: push.Message{Token: sub, Notification: push.Notification{Title: "chaos"}}}
	case "SMTP":
		h, port, _ := net.SplitHostPort(host)
		user, pw, _ := smtpSrv.Credentials()
		if fault == "refused credentials" {
			pw = secret.String("wrong-password")
		}
		var p int
		fmt.Sscan(port, &p)
		var c *smtp.Sender
		c, err = smtp.New(&smtp.Config{Host: h, Port: p, TLS: smtp.StartTLS, TLSConfig: &tls.Config{RootCAs: tc.RootCAs, ServerName: "127.0.0.1"},
			Username: user, Password: pw, Timeout: 2 * time.Second})
		if c != nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		cfg.Email = c
		m.Email = &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "chaos", Text: "chaos"}
	case "Twilio":
		var c *twilio.Client
		c, err = twilio.New(&twilio.Config{AccountSID: "AC" + strings.Repeat("c", 32), AuthToken: secret.String("chaostoken0123456789"),
			BaseURL: "https://" + host, TLSConfig: tc})
		cfg.SMS = c
		m.SMS = &sms.Message{To: "+14155552671", From: "+14155550100", Body: "chaos"}
	}
	if err != nil {
		return fmt.Errorf("%s client: %w", provider, err)
	}
	return nil
}

func TestProviderChaosMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos matrix takes ~15 s")
	}
	var mu sync.Mutex
	results := map[string]cellResult{}
	var wg sync.WaitGroup
	for _, p := range chaosProviders {
		for _, f := range chaosFaults {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := runCell(t, p, f)
				mu.Lock()
				results[p+"|"+f] = r
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	var b strings.Builder
	b.WriteString("| fault | " + strings.Join(chaosProviders, " | ") + " |\n|---|" + strings.Repeat("---|", len(chaosProviders)) + "\n")
	broken := 0
	for _, f := range chaosFaults {
		b.WriteString("| " + f + " |")
		for _, p := range chaosProviders {
			r := results[p+"|"+f]
			cell := fmt.Sprintf(" %s; %d attempt(s); %s", r.class, r.attempts, r.outcome)
			if p == "SMTP" && (strings.Contains(f, "body")) {
				cell = " n/a (SMTP answers are reply lines, no body)"
			}
			if len(r.violations) > 0 {
				cell += " **BROKEN: " + strings.Join(r.violations, ", ") + "**"
				broken++
			}
			b.WriteString(cell + " |")
		}
		b.WriteString("\n")
	}
	t.Logf("provider chaos matrix (class of the first failure; attempts; outcome):\n%s", b.String())
	if os.Getenv("HERALD_UPDATE_RELIABILITY") == "1" {
		updateReliability(t, b.String())
	}
	if broken > 0 {
		t.Fatalf("%d cells broke a promise", broken)
	}
}

// updateReliability replaces the matrix between its markers.
func updateReliability(t *testing.T, table string) {
	const begin, end = "<!-- chaos matrix: begin -->\n", "<!-- chaos matrix: end -->"
	b, err := os.ReadFile("RELIABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatal("RELIABILITY.md has no chaos matrix markers")
	}
	s = s[:i+len(begin)] + table + s[j:]
	if err := os.WriteFile("RELIABILITY.md", []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
