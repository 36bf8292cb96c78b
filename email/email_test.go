package email_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/email"
)

func valid() *email.Message {
	return &email.Message{From: "Shop <shop@example.com>", To: []string{"ada@example.com"}, Subject: "Hi", Text: "hello"}
}

func TestValidateRefusesHeaderInjection(t *testing.T) {
	t.Parallel()
	payloads := []string{"A\rB", "A\nB", "A\r\nBcc: evil@example.com", "A\x00B", "A\u2028B", "A\u2029B", "A\x7fB", "A\u0085B"}
	fields := map[string]func(m *email.Message, p string){
		"Subject":         func(m *email.Message, p string) { m.Subject = p },
		"From name":       func(m *email.Message, p string) { m.From = `"` + p + `" <shop@example.com>` },
		"To name":         func(m *email.Message, p string) { m.To = []string{`"` + p + `" <ada@example.com>`} },
		"Reply-To":        func(m *email.Message, p string) { m.ReplyTo = "r@example.com" + p },
		"custom header":   func(m *email.Message, p string) { m.Headers = map[string]string{"X-Campaign": p} },
		"tag":             func(m *email.Message, p string) { m.Tags = []string{p} },
		"list-unsub":      func(m *email.Message, p string) { m.ListUnsubscribe = []string{"https://x.example/u?" + p} },
		"attachment name": func(m *email.Message, p string) { m.Attachments = []email.Attachment{{Filename: p, Data: []byte("x")}} },
		"idempotency key": func(m *email.Message, p string) { m.IdempotencyKey = p },
	}
	for name, set := range fields {
		for _, p := range payloads {
			m := valid()
			set(m, p)
			_, _, err := email.Validate(m, nil)
			require.ErrorIs(t, err, email.ErrInvalidMessage, "%s with %q", name, p)
			var e *email.Error
			require.ErrorAs(t, err, &e)
			require.NotEmpty(t, e.Field)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		mod  func(*email.Message)
		want error
	}{
		{"valid", func(*email.Message) {}, nil},
		{"no from", func(m *email.Message) { m.From = "" }, email.ErrInvalidMessage},
		{"bad from", func(m *email.Message) { m.From = "not an address" }, email.ErrInvalidMessage},
		{"bad to", func(m *email.Message) { m.To = []string{"a@@b"} }, email.ErrInvalidMessage},
		{"no recipient", func(m *email.Message) { m.To = nil }, email.ErrInvalidMessage},
		{"bcc only", func(m *email.Message) { m.To, m.Bcc = nil, []string{"b@example.com"} }, nil},
		{"no body", func(m *email.Message) { m.Text = "" }, email.ErrInvalidMessage},
		{"huge address", func(m *email.Message) { m.To = []string{strings.Repeat("a", 300) + "@example.com"} }, email.ErrInvalidMessage},
		{"reserved header", func(m *email.Message) { m.Headers = map[string]string{"Bcc": "x@example.com"} }, email.ErrInvalidMessage},
		{"header name with colon", func(m *email.Message) { m.Headers = map[string]string{"X-A: b": "c"} }, email.ErrInvalidMessage},
		{"one-click without https", func(m *email.Message) {
			m.ListUnsubscribe, m.OneClickUnsubscribe = []string{"mailto:u@example.com"}, true
		}, email.ErrInvalidMessage},
		{"one-click", func(m *email.Message) {
			m.ListUnsubscribe, m.OneClickUnsubscribe = []string{"mailto:u@example.com", "https://example.com/u/1"}, true
		}, nil},
		{"javascript unsubscribe", func(m *email.Message) { m.ListUnsubscribe = []string{"javascript:alert(1)"} }, email.ErrInvalidMessage},
		{"too large", func(m *email.Message) { m.Text = strings.Repeat("x", email.DefaultMaxSize+1) }, email.ErrTooLarge},
		{"attachment path", func(m *email.Message) { m.Attachments = []email.Attachment{{Filename: "../etc/passwd"}} }, email.ErrInvalidMessage},
	}
	for _, tc := range cases {
		_, _, err := email.Validate(func() *email.Message { m := valid(); tc.mod(m); return m }(), nil)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code int
		enh  string
		want error
	}{
		{550, "5.1.1", email.ErrRecipientGone},
		{550, "", email.ErrRecipientGone},
		{551, "5.1.6", email.ErrRecipientGone},
		{553, "5.1.3", email.ErrRecipientGone},
		{556, "5.1.10", email.ErrRecipientGone},
		{550, "5.7.1", email.ErrRejected},
		{554, "5.7.1", email.ErrRejected},
		{552, "5.3.4", email.ErrTooLarge},
		{552, "5.2.2", email.ErrUnavailable},
		{535, "5.7.8", email.ErrAuth},
		{530, "5.7.0", email.ErrAuth},
		{500, "5.5.2", email.ErrInvalidMessage},
		{421, "4.7.0", email.ErrRateLimited},
		{450, "4.7.1", email.ErrRateLimited},
		{451, "4.3.0", email.ErrUnavailable},
		{452, "4.2.2", email.ErrUnavailable},
		{452, "4.5.3", email.ErrInvalidMessage}, // too many recipients: refused again as is
	}
	for _, tc := range cases {
		require.True(t, errors.Is(email.Classify(tc.code, tc.enh), tc.want), "%d %s", tc.code, tc.enh)
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("Shop <shop@example.com>", "ada@example.com", "Subject")
	f.Fuzz(func(t *testing.T, from, to, subject string) {
		m := &email.Message{From: from, To: []string{to}, Subject: subject, Text: "x"}
		if _, _, err := email.Validate(m, nil); err != nil {
			return
		}
		for _, s := range []string{from, to, subject} {
			if strings.ContainsAny(s, "\r\n\x00\u2028\u2029") {
				t.Fatalf("accepted a header value with a line break: %q", s)
			}
		}
	})
}
