package smtp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

func newSender(t *testing.T, srv *emailtest.Server, mod func(*smtp.Config)) *smtp.Sender {
	t.Helper()
	cfg := (&smtp.Config{}).UseFake(srv)
	if mod != nil {
		mod(cfg)
	}
	s, err := smtp.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func msg(to string) *email.Message {
	return &email.Message{From: "Shop <shop@example.com>", To: []string{to}, Subject: "Your order ✓", Text: "It shipped."}
}

func TestSendOverSTARTTLSWithAuth(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	s := newSender(t, srv, nil)
	rcpt, err := s.Send(ctx, &email.Message{
		From: "Shop <shop@example.com>", To: []string{"Ada <ada@example.com>"}, Cc: []string{"cc@example.com"}, Bcc: []string{"audit@example.com"},
		ReplyTo: "help@example.com", Subject: "Your order ✓", Text: "It shipped.", HTML: "<p>It shipped.</p>",
		Attachments:     []email.Attachment{{Filename: "invoice.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7 fake")}},
		Headers:         map[string]string{"X-Campaign": "spring"},
		Tags:            []string{"order", "shipping"},
		ListUnsubscribe: []string{"mailto:unsub@example.com", "https://example.com/u/42"}, OneClickUnsubscribe: true,
		IdempotencyKey: "order-42/shipped",
	})
	require.NoError(t, err)
	msgs := srv.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, "shop@example.com", m.From)
	require.ElementsMatch(t, []string{"ada@example.com", "cc@example.com", "audit@example.com"}, m.Recipients)
	require.Equal(t, "Your order ✓", m.Subject)
	require.Equal(t, "It shipped.", strings.TrimSpace(m.Text))
	require.Equal(t, "<p>It shipped.</p>", strings.TrimSpace(m.HTML))
	require.Len(t, m.Attachments, 1)
	require.Equal(t, "invoice.pdf", m.Attachments[0].Filename)
	require.Equal(t, "%PDF-1.7 fake", string(m.Attachments[0].Data))
	require.Equal(t, "spring", m.Header.Get("X-Campaign"))
	require.Equal(t, "order,shipping", m.Header.Get("X-Herald-Tags"))
	require.Equal(t, "<mailto:unsub@example.com>, <https://example.com/u/42>", m.Header.Get("List-Unsubscribe"))
	require.Equal(t, "List-Unsubscribe=One-Click", m.Header.Get("List-Unsubscribe-Post"))
	require.Empty(t, m.Header.Get("Bcc"), "Bcc never appears in the headers")
	require.Equal(t, "<"+rcpt.MessageID+">", m.Header.Get("Message-Id"))

	// The Message-ID is stable for an idempotency key.
	again, err := s.Send(ctx, &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Text: "x", IdempotencyKey: "order-42/shipped"})
	require.NoError(t, err)
	require.Equal(t, rcpt.MessageID, again.MessageID)
}

func TestImplicitTLSAndPlain(t *testing.T) {
	t.Parallel()
	for _, mode := range []emailtest.TLSMode{emailtest.ImplicitTLS, emailtest.NoTLS} {
		srv := emailtest.NewServer(t, &emailtest.Options{TLS: mode})
		s := newSender(t, srv, nil)
		_, err := s.Send(ctx, msg("ada@example.com"))
		require.NoError(t, err, "mode %d", mode)
		require.Len(t, srv.Messages(), 1)
	}
}

func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	s := newSender(t, srv, func(cfg *smtp.Config) { cfg.PoolSize = 2 })
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Send(ctx, msg(fmt.Sprintf("u%d@example.com", i)))
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Len(t, srv.Messages(), 40)
	require.LessOrEqual(t, srv.Connections(), 2, "40 messages over at most 2 connections")
	require.LessOrEqual(t, s.Dials(), 2)
}

func TestReplyCodesAreClassified(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	var mu sync.Mutex
	var gone []email.Gone
	s := newSender(t, srv, func(cfg *smtp.Config) {
		cfg.OnGone = func(_ context.Context, g email.Gone) { mu.Lock(); gone = append(gone, g); mu.Unlock() }
	})
	rcptCases := []struct {
		reply emailtest.Reply
		want  error
	}{
		{emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "No such user <nobody@example.com>"}, email.ErrRecipientGone},
		{emailtest.Reply{Code: 553, Enhanced: [3]int{5, 1, 3}, Message: "Bad address"}, email.ErrRecipientGone},
		{emailtest.Reply{Code: 452, Enhanced: [3]int{4, 2, 2}, Message: "Mailbox full"}, email.ErrUnavailable},
		{emailtest.Reply{Code: 450, Enhanced: [3]int{4, 7, 1}, Message: "Greylisted"}, email.ErrRateLimited},
		{emailtest.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Message: "Policy"}, email.ErrRejected},
	}
	for i, tc := range rcptCases {
		to := fmt.Sprintf("r%d@example.com", i)
		srv.FailRecipient(to, tc.reply)
		_, err := s.Send(ctx, msg(to))
		require.ErrorIs(t, err, tc.want, "%d", tc.reply.Code)
		var e *email.Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, tc.reply.Code, e.Code)
		require.Equal(t, fmt.Sprintf("%d.%d.%d", tc.reply.Enhanced[0], tc.reply.Enhanced[1], tc.reply.Enhanced[2]), e.EnhancedCode)
		require.Equal(t, tc.reply.Code/100 == 4, email.IsRetryable(err))
	}
	dataCases := []struct {
		reply emailtest.Reply
		want  error
	}{
		{emailtest.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Message: "Spam"}, email.ErrRejected},
		{emailtest.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "Try later"}, email.ErrUnavailable},
		{emailtest.Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Message: "Slow down"}, email.ErrRateLimited},
	}
	for _, tc := range dataCases {
		srv.FailNext(1, tc.reply)
		_, err := s.Send(ctx, msg("ok@example.com"))
		require.ErrorIs(t, err, tc.want, "%d at DATA", tc.reply.Code)
	}
	mu.Lock()
	require.Len(t, gone, 2)
	require.Equal(t, "r0@example.com", gone[0].Address)
	mu.Unlock()
	// The connection survives refusals: the next message goes through.
	_, err := s.Send(ctx, msg("ok@example.com"))
	require.NoError(t, err)
}

func TestSizeLimit(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, &emailtest.Options{MaxMessageBytes: 2048})
	s := newSender(t, srv, nil)
	m := msg("ada@example.com")
	m.Text = strings.Repeat("long line of text ", 400)
	_, err := s.Send(ctx, m)
	require.ErrorIs(t, err, email.ErrTooLarge)
	local := newSender(t, srv, func(cfg *smtp.Config) { cfg.MaxSize = 100 })
	_, err = local.Send(ctx, m)
	require.ErrorIs(t, err, email.ErrTooLarge)
	require.Equal(t, 1, srv.Connections(), "the local limit refuses before connecting")
}

func TestAuthAndTLSFailures(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	wrong := newSender(t, srv, func(cfg *smtp.Config) { cfg.Password = secret.String("wrong-password-canary") })
	_, err := wrong.Send(ctx, msg("ada@example.com"))
	require.ErrorIs(t, err, email.ErrAuth)
	require.False(t, email.IsRetryable(err))
	require.NotContains(t, err.Error(), "wrong-password-canary")
	require.Equal(t, 1, srv.AuthFailures())

	plain := emailtest.NewServer(t, &emailtest.Options{TLS: emailtest.NoTLS})
	required := newSender(t, plain, func(cfg *smtp.Config) { cfg.TLS = smtp.StartTLS })
	_, err = required.Send(ctx, msg("ada@example.com"))
	require.ErrorIs(t, err, email.ErrAuth, "TLS is required and the server has no STARTTLS")
	require.Empty(t, plain.Messages())

	_, err = smtp.New(&smtp.Config{Host: "mail.example.com", TLS: smtp.NoTLS, Username: "u", Password: secret.String("p")})
	require.ErrorContains(t, err, "without TLS")
}

func TestHeaderInjectionSendsNothing(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	s := newSender(t, srv, nil)
	for _, m := range []*email.Message{
		{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Hi\r\nBcc: victim@example.com", Text: "x"},
		{From: "\"Shop\r\nX-Evil: 1\" <shop@example.com>", To: []string{"ada@example.com"}, Text: "x"},
		{From: "shop@example.com", To: []string{"ada@example.com"}, Text: "x", Headers: map[string]string{"X-A": "b\nX-Evil: 1"}},
	} {
		_, err := s.Send(ctx, m)
		require.ErrorIs(t, err, email.ErrInvalidMessage)
	}
	require.Zero(t, srv.Connections(), "nothing reached the server")
	require.Empty(t, srv.Messages())
}

func TestAddressesAndSecretsStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, &emailtest.Options{Password: "smtp-password-canary", Username: "herald"})
	var logs bytes.Buffer
	cfg := (&smtp.Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}).UseFake(srv)
	s, err := smtp.New(cfg)
	require.NoError(t, err)
	defer s.Close()
	srv.FailRecipient("secret.person@private.example", emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user secret.person@private.example"})
	_, err = s.Send(ctx, &email.Message{From: "shop@example.com", To: []string{"secret.person@private.example"}, Subject: "body-canary", Text: "body-canary"})
	require.ErrorIs(t, err, email.ErrRecipientGone)
	all := err.Error() + fmt.Sprintf("%+v %#v", err, cfg) + logs.String()
	require.NotContains(t, all, "secret.person")
	require.NotContains(t, all, "body-canary")
	require.NotContains(t, all, "smtp-password-canary")
	require.Contains(t, all, "s***@private.example")
}

// The fuzz property: Validate never panics, and what it accepts the SMTP
// server takes and parses.
func FuzzValidate(f *testing.F) {
	f.Add("Shop", "Hello", "X-Campaign", "spring", "report.pdf", "application/pdf")
	f.Add("A\r\nBcc: x@evil.com", "S\nX: y", "Received", "x", "a\u202egpj.exe", "multipart/mixed")
	f.Add(strings.Repeat("n", 1000), strings.Repeat("s", 2000), "X-"+strings.Repeat("h", 80), strings.Repeat("v", 999), strings.Repeat("f", 300), "text/plain; charset=\x00")
	srv := emailtest.NewServer(f, nil)
	s, err := smtp.New((&smtp.Config{}).UseFake(srv))
	require.NoError(f, err)
	f.Cleanup(func() { _ = s.Close() })
	f.Fuzz(func(t *testing.T, name, subject, hname, hvalue, filename, ctype string) {
		m := &email.Message{From: name + " <shop@example.com>", To: []string{"ada@example.com"}, Subject: subject, Text: "body",
			Headers:     map[string]string{hname: hvalue},
			Attachments: []email.Attachment{{Filename: filename, ContentType: ctype, Data: []byte("x")}}}
		if s.Validate(m) != nil {
			return
		}
		_, err := s.Send(ctx, m)
		var ee *email.Error
		if errors.As(err, &ee) && ee.AboutMessage() {
			t.Fatalf("Validate accepted a message the server refused: %v", err)
		}
	})
}

// The Message-ID's domain comes from the parsed sender address, never the
// raw From text (a comment or display name may hold an "@" of its own),
// and a refused RCPT TO is about the recipients, not the server.
func TestMessageIDDomainAndRecipientRefusals(t *testing.T) {
	t.Parallel()
	srv := emailtest.NewServer(t, nil)
	s := newSender(t, srv, nil)
	m := msg("ada@example.com")
	m.From, m.IdempotencyKey = "shop@shop.example.com (Sales@Evil Team)", "order-1"
	r, err := s.Send(ctx, m)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(r.MessageID, "@shop.example.com"), r.MessageID)

	srv.FailRecipient("full@example.com", emailtest.Reply{Code: 452, Enhanced: [3]int{4, 2, 2}, Message: "Mailbox full"})
	srv.FailRecipient("many@example.com", emailtest.Reply{Code: 452, Enhanced: [3]int{4, 5, 3}, Message: "Too many recipients"})
	_, err = s.Send(ctx, msg("full@example.com"))
	var ee *email.Error
	require.ErrorAs(t, err, &ee)
	require.True(t, ee.Retryable(), "a full mailbox may empty")
	require.True(t, ee.AboutMessage(), "but it says nothing about the server")
	_, err = s.Send(ctx, msg("many@example.com"))
	require.ErrorIs(t, err, email.ErrInvalidMessage)
	require.ErrorAs(t, err, &ee)
	require.True(t, ee.AboutMessage())

	many := msg("a@example.com")
	for i := range email.DefaultMaxRecipients {
		many.Bcc = append(many.Bcc, fmt.Sprintf("b%d@example.com", i))
	}
	require.ErrorIs(t, s.Validate(many), email.ErrInvalidMessage)
	roomy := newSender(t, srv, func(cfg *smtp.Config) { cfg.MaxRecipients = 500 })
	require.NoError(t, roomy.Validate(many))
}
