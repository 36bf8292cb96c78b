package herald_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/tracking"
)

// A provider's "gone" puts the recipient on the suppression list, through
// the real clients and fakes: an SMTP 550 5.1.1, a Twilio 21610, an APNs
// 410. The next message to that recipient is not sent, and is recorded
// suppressed with the provider's reason; none of it counts against caps.
func TestGoneRecipientsAreSuppressed(t *testing.T) {
	t.Parallel()
	list := eligibility.NewMemoryStore()
	r := newRig(t, func(c *herald.Config) {
		c.Eligibility = list
		c.Limiter, _ = capping.New(capping.NewMemoryStore(), &capping.Config{
			Rules: []capping.Rule{{Name: "daily", Kind: capping.Global, Limit: 5, Window: capping.Calendar(capping.Day)}}})
	})
	ctx := context.Background()
	token := pushtest.DeviceToken("old phone")
	r.apns.FailToken(token, pushtest.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Now()})
	r.smtp.FailRecipient("gone@example.com", emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "No such user"})
	r.twilio.FailTo("+14155550199", smstest.Fault{Status: 400, Code: 21610, Message: "unsubscribed"})
	first := []herald.Message{
		{IdempotencyKey: "p1", User: "ada", Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: token, Notification: push.Notification{Title: "a"}}}},
		{IdempotencyKey: "e1", User: "ada", Email: &email.Message{From: "shop@example.com", To: []string{"Ada <Gone@example.com>"}, Subject: "a", Text: "a"}},
		{IdempotencyKey: "s1", User: "ada", SMS: &sms.Message{To: "+14155550199", From: "+15005550006", Body: "a"}},
	}
	r.start(t)
	for _, m := range first {
		_, err := r.d.Send(ctx, m)
		require.NoError(t, err)
	}
	r.settled(t)
	for _, k := range []string{"p1", "e1", "s1"} {
		r.eventually(t, k, tracking.RecipientGone)
	}
	for ch, rcpt := range map[string]string{"push": token, "email": "gone@example.com", "sms": "+14155550199"} {
		s, ok, err := list.Suppressed(ctx, eligibility.RecipientKey(ch, rcpt))
		require.NoError(t, err)
		require.True(t, ok, "%s recipient suppressed", ch)
		require.Equal(t, "provider", s.Source)
		require.NotContains(t, s.Masked, rcpt, "the list keeps no recipient in the clear")
	}
	apnsBefore, smtpBefore, smsBefore := len(r.apns.Requests()), r.smtp.Transactions(), len(r.twilio.Messages())
	r.apns.Heal()
	r.smtp.Heal()
	r.twilio.Heal()
	second := []herald.Message{first[0], first[1], first[2]}
	for i, k := range []string{"p2", "e2", "s2"} {
		second[i].IdempotencyKey = k
		_, err := r.d.Send(ctx, second[i])
		require.NoError(t, err)
	}
	r.settled(t)
	for _, k := range []string{"p2", "e2", "s2"} {
		r.eventually(t, k, tracking.Suppressed)
	}
	require.Equal(t, apnsBefore, len(r.apns.Requests()), "no request for a suppressed token")
	require.Equal(t, smtpBefore, r.smtp.Transactions())
	require.Equal(t, smsBefore, len(r.twilio.Messages()))
	for _, rec := range eventsOf(t, r, "e2") {
		if rec.Type == tracking.Suppressed {
			require.Contains(t, rec.Reason, "550")
		}
	}
	usage, err := r.d.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	skipped := 0
	for _, j := range usage {
		if reason, ok := retry.Skipped(j); ok {
			require.True(t, strings.HasPrefix(reason, "suppressed: "), reason)
			skipped++
		}
	}
	require.Equal(t, 3, skipped)
}

// The email carries a signed one-click link; the mailbox provider's POST
// of it (RFC 8058) opts the user out of that category; the next message
// of the category is not sent and is recorded opted_out; another
// category still goes.
func TestOneClickUnsubscribeRoundTrip(t *testing.T) {
	t.Parallel()
	prefs := eligibility.NewMemoryStore()
	links := &eligibility.Links{BaseURL: "https://shop.example.com/unsubscribe", Key: secret.String("k-0123456789abcdef0123456789abcdef")}
	unsub := httptest.NewServer(links.Handler(prefs, nil, nil))
	defer unsub.Close()
	r := newRig(t, func(c *herald.Config) { c.Eligibility, c.Unsubscribe = prefs, links })
	ctx := context.Background()
	promo := func(key, category string) herald.Message {
		return herald.Message{IdempotencyKey: key, User: "ada", Category: category,
			Email: &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Sale", Text: "40% off"}}
	}
	r.start(t)
	_, err := r.d.Send(ctx, promo("promo-1", "promotions"))
	require.NoError(t, err)
	r.settled(t)
	r.eventually(t, "promo-1", tracking.Sent)
	got := r.smtp.Messages()[0]
	require.Equal(t, "List-Unsubscribe=One-Click", got.Header.Get("List-Unsubscribe-Post"))
	link := strings.Trim(got.Header.Get("List-Unsubscribe"), "<>")
	u, err := url.Parse(link)
	require.NoError(t, err)
	require.Equal(t, "shop.example.com", u.Host)
	// What Gmail's one-click does: POST the link with the RFC 8058 body.
	res, err := http.Post(unsub.URL+"?"+u.RawQuery, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)

	_, err = r.d.Send(ctx, promo("promo-2", "promotions"))
	require.NoError(t, err)
	_, err = r.d.Send(ctx, promo("news-1", "newsletter"))
	require.NoError(t, err)
	receipt := promo("receipt-1", "")
	receipt.Transactional, receipt.Email.Subject = true, "Receipt"
	_, err = r.d.Send(ctx, receipt)
	require.NoError(t, err)
	r.settled(t)
	r.eventually(t, "promo-2", tracking.OptedOut)
	r.eventually(t, "news-1", tracking.Sent)
	r.eventually(t, "receipt-1", tracking.Sent)
	require.Len(t, r.smtp.Messages(), 3)
	for _, m := range r.smtp.Messages() {
		if m.Subject == "Receipt" {
			require.Empty(t, m.Header.Get("List-Unsubscribe"), "a transactional email gets no marketing unsubscribe link")
		} else {
			require.NotEmpty(t, m.Header.Get("List-Unsubscribe"))
		}
	}
}

// A message the host's predicate stops selecting while it waits in a
// backlog (a provider outage) is not sent when the backlog drains: it is
// recorded ineligible with the host's reason.
func TestThePredicateIsAskedAtTheMomentOfSending(t *testing.T) {
	t.Parallel()
	var stale atomic.Bool
	var refused atomic.Int32
	r := newRig(t, func(c *herald.Config) {
		c.Eligible = func(_ context.Context, m *herald.Message) (bool, string) {
			if m.Campaign == "flash-sale" && stale.Load() {
				refused.Add(1)
				return false, "the sale ended"
			}
			return true, ""
		}
	})
	ctx := context.Background()
	r.apns.Down(pushtest.Fault{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})
	sale := pushTo("sale-1", "ada", "phone")
	sale.Campaign = "flash-sale"
	_, err := r.d.Send(ctx, sale)
	require.NoError(t, err)
	_, err = r.d.Send(ctx, pushTo("other-1", "bob", "phone-2"))
	require.NoError(t, err)
	r.start(t)
	r.eventually(t, "sale-1", tracking.Failed) // tried once while APNs was down
	stale.Store(true)                          // meanwhile, the sale ended
	// APNs comes back only once an attempt has asked after the sale ended:
	// one that asked before could otherwise reach APNs just after it is up.
	require.Eventually(t, func() bool { return refused.Load() > 0 }, 5*time.Second, time.Millisecond)
	r.apns.Up()
	r.settled(t)
	r.eventually(t, "sale-1", tracking.Ineligible)
	r.eventually(t, "other-1", tracking.Sent)
	for _, rec := range eventsOf(t, r, "sale-1") {
		require.NotEqual(t, tracking.Sent, rec.Type)
		if rec.Type == tracking.Ineligible {
			require.Equal(t, "the sale ended", rec.Reason)
		}
	}
}

func eventsOf(t *testing.T, r *rig, key string) []tracking.Event {
	t.Helper()
	require.NoError(t, r.outbox.Flush(context.Background()))
	recs, err := r.events.Read(context.Background(), 0, 100_000)
	require.NoError(t, err)
	var out []tracking.Event
	for _, rec := range recs {
		if rec.Event.MessageID == key {
			out = append(out, rec.Event)
		}
	}
	return out
}
