package herald_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
	"github.com/heraldhq/herald/tracking"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(diskChildEnv); path != "" {
		os.Exit(diskChild(path)) // re-executed by TestFullDiskAndFailedFsyncNeverLie
	}
	if dir := os.Getenv(dispatchChildEnv); dir != "" {
		os.Exit(dispatchChild(dir)) // re-executed by TestDispatcherCrashLosesNothing
	}
	if dir := os.Getenv(capChildEnv); dir != "" {
		os.Exit(capChild(dir)) // re-executed by TestASentMessageKilledBeforeCompletionIsNotCappedByItself
	}
	goleak.VerifyTestMain(m)
}

const topic = "com.example.app"

// rig is a dispatcher wired to real clients talking to local fakes of
// APNs (HTTP/2 + JWT), an SMTP server and Twilio's API.
type rig struct {
	d      *herald.Dispatcher
	apns   *pushtest.APNsServer
	smtp   *emailtest.Server
	twilio *smstest.Server
	store  retry.Store
	events *tracking.MemoryStore
	outbox *tracking.Outbox
}

func newRig(t *testing.T, mod func(*herald.Config)) *rig {
	t.Helper()
	return newRigGone(t, nil, mod)
}

func newRigGone(t *testing.T, onGone push.GoneFunc, mod func(*herald.Config)) *rig {
	t.Helper()
	r := &rig{
		apns:   pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}}),
		smtp:   emailtest.NewServer(t, nil),
		twilio: smstest.NewServer(t),
		store:  retry.NewMemoryStore(),
		events: tracking.NewMemoryStore(),
	}
	ac, err := apns.New((&apns.Config{Topic: topic, OnGone: onGone}).UseFake(r.apns))
	require.NoError(t, err)
	t.Cleanup(ac.CloseIdleConnections)
	es, err := smtp.New((&smtp.Config{}).UseFake(r.smtp))
	require.NoError(t, err)
	t.Cleanup(func() { _ = es.Close() })
	ss, err := twilio.New((&twilio.Config{}).UseFake(r.twilio))
	require.NoError(t, err)
	r.outbox, err = tracking.NewOutbox(r.events, &tracking.OutboxConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.outbox.Close(context.Background()) })
	cfg := &herald.Config{
		Store: r.store,
		Queue: retry.Config{
			PollInterval: 5 * time.Millisecond,
			Backoff:      func(int, error) time.Duration { return 20 * time.Millisecond },
		},
		Push:    map[push.Provider]push.Sender{push.APNs: ac},
		Email:   es,
		SMS:     ss,
		Tracker: r.outbox,
		Breaker: herald.BreakerConfig{Cooldown: 50 * time.Millisecond, MaxCooldown: 200 * time.Millisecond},
		MinTTL:  10 * time.Millisecond, // outages replayed in milliseconds
	}
	if mod != nil {
		mod(cfg)
	}
	r.d, err = herald.New(cfg)
	require.NoError(t, err)
	return r
}

func (r *rig) start(t *testing.T) {
	t.Helper()
	require.NoError(t, r.d.Start(context.Background()))
	t.Cleanup(func() { _ = r.d.Stop(context.Background()) })
}

// types returns, per message key, the event types recorded, in order.
func (r *rig) types(t *testing.T) map[string][]tracking.Type {
	t.Helper()
	require.NoError(t, r.outbox.Flush(context.Background()))
	recs, err := r.events.Read(context.Background(), 0, 10_000)
	require.NoError(t, err)
	out := map[string][]tracking.Type{}
	for _, rec := range recs {
		out[rec.Event.MessageID] = append(out[rec.Event.MessageID], rec.Event.Type)
	}
	return out
}

// eventually waits until message key has an event of type typ (events
// from the queue's observer may follow the state change by a moment).
func (r *rig) eventually(t *testing.T, key string, typ tracking.Type) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, got := range r.types(t)[key] {
			if got == typ {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "no %s event for %s", typ, key)
}

// settled waits until no message is waiting or running.
func (r *rig) settled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := r.d.Queue().Stats(context.Background())
		require.NoError(t, err)
		for _, ls := range st {
			if ls.Ready+ls.Scheduled+ls.Running > 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
}

func pushTo(key, user, device string) herald.Message {
	return herald.Message{
		IdempotencyKey: key, User: user,
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
			Token: pushtest.DeviceToken(device), Notification: push.Notification{Title: "Sale", Body: "40% off"},
		}},
	}
}

func TestSendRefusesBadMessagesAtTheDoor(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *herald.Config) {
		l, err := capping.New(capping.NewMemoryStore(), &capping.Config{Rules: []capping.Rule{
			{Name: "daily", Kind: capping.Global, Limit: 3, Window: capping.Calendar(capping.Day)},
		}})
		require.NoError(t, err)
		c.Limiter = l
	})
	ok := pushTo("k", "u1", "phone")
	cases := []struct {
		field string
		mod   func(m *herald.Message)
		kind  error // the channel's error class, when the channel refused it
	}{
		{"IdempotencyKey", func(m *herald.Message) { m.IdempotencyKey = "" }, nil},
		{"User", func(m *herald.Message) { m.User = "" }, nil},
		{"TimeZone", func(m *herald.Message) { m.TimeZone = "Mars/Olympus" }, nil},
		{"TTL", func(m *herald.Message) { m.TTL = -time.Second }, nil},
		{"Push/Email/SMS/InApp", func(m *herald.Message) { m.Push = nil }, nil},
		{"Push/Email/SMS/InApp", func(m *herald.Message) { m.SMS = &sms.Message{To: "+14155552671", From: "Shop", Body: "hi"} }, nil},
		{"Push.Provider", func(m *herald.Message) { m.Push.Provider = push.FCM }, nil},
		{"Push", func(m *herald.Message) { m.Push.Token = "not-hex" }, push.ErrInvalidToken},
		{"Email", func(m *herald.Message) {
			m.Push = nil
			m.Email = &email.Message{From: "shop@example.com", To: []string{"a@example.com"}, Subject: "hi\r\nBcc: x@evil.example", Text: "x"}
		}, email.ErrInvalidMessage},
		{"SMS", func(m *herald.Message) {
			m.Push = nil
			m.SMS = &sms.Message{To: "0612345678", From: "Shop", Body: "hi"}
		}, sms.ErrInvalidNumber},
	}
	for _, tc := range cases {
		m := ok
		p := *ok.Push
		m.Push = &p
		tc.mod(&m)
		_, err := r.d.Send(context.Background(), m)
		require.ErrorIs(t, err, herald.ErrInvalid, tc.field)
		var fe *herald.FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, tc.field, fe.Field)
		if tc.kind != nil {
			require.ErrorIs(t, err, tc.kind, tc.field)
		}
		require.NotContains(t, err.Error(), pushtest.DeviceToken("phone"), "a token in an error")
	}
	jobs, err := r.d.Queue().Jobs(context.Background(), retry.Filter{})
	require.NoError(t, err)
	require.Empty(t, jobs, "a refused message must leave nothing behind")
}

// One message on each channel reaches its provider through the real
// client, once, and its story is tracked: accepted, then sent.
func TestEveryChannelIsDeliveredAndTracked(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	msgs := []herald.Message{
		pushTo("p1", "u1", "phone"),
		{IdempotencyKey: "e1", User: "u1", Transactional: true, Email: &email.Message{
			From: "Shop <shop@example.com>", To: []string{"ada@example.com"}, Subject: "Receipt", Text: "Thanks"}},
		{IdempotencyKey: "s1", User: "u1", Transactional: true, SMS: &sms.Message{To: "+14155552671", From: "Shop", Body: "Code 123456"}},
	}
	for _, m := range msgs {
		res, err := r.d.Send(ctx, m)
		require.NoError(t, err)
		require.False(t, res.Duplicate)
	}
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 1)
	require.Len(t, r.smtp.Messages(), 1)
	require.Len(t, r.twilio.Accepted(), 1)
	require.Equal(t, "Code 123456", r.twilio.Accepted()[0].Body)
	got := r.types(t)
	for _, k := range []string{"p1", "e1", "s1"} {
		require.Equal(t, []tracking.Type{tracking.Accepted, tracking.Sent}, got[k], k)
	}
}

// Refused means retryable: the same key twice sends once, whether the
// first call's answer was seen or not.
func TestTheSameKeySendsOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	first, err := r.d.Send(ctx, pushTo("order-42", "u1", "phone"))
	require.NoError(t, err)
	again, err := r.d.Send(ctx, pushTo("order-42", "u1", "phone"))
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.ID, again.ID)
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 1)
	require.Equal(t, push.CollapseID("order-42"), r.apns.Delivered()[0].CollapseID,
		"the collapse ID comes from the key, so a repeat after a crash replaces the first notification")
}

// failingTracker refuses every event: analytics are down.
type failingTracker struct{}

func (failingTracker) Track(context.Context, ...tracking.Event) error {
	return errors.New("analytics down")
}

// Capping counts at the send path: with tracking down the whole time, a
// user gets exactly the cap of marketing messages; transactional ones are
// exempt.
func TestCapsHoldWithTrackingDown(t *testing.T) {
	t.Parallel()
	caps := capping.NewMemoryStore()
	r := newRig(t, func(c *herald.Config) {
		l, err := capping.New(caps, &capping.Config{Rules: []capping.Rule{
			{Name: "daily", Kind: capping.Global, Limit: 2, Window: capping.Calendar(capping.Day)},
		}})
		require.NoError(t, err)
		c.Limiter = l
		c.Tracker = failingTracker{}
	})
	ctx := context.Background()
	for i := range 5 {
		_, err := r.d.Send(ctx, pushTo(fmt.Sprint("promo-", i), "u1", "phone"))
		require.NoError(t, err)
	}
	receipt := pushTo("receipt", "u1", "phone")
	receipt.Transactional = true
	_, err := r.d.Send(ctx, receipt)
	require.NoError(t, err)
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 3, "2 marketing (the cap) + 1 transactional")
	slots, err := caps.Slots(ctx, "daily|u1", time.Now().Add(-48*time.Hour))
	require.NoError(t, err)
	require.Len(t, slots, 2)
	for _, s := range slots {
		require.False(t, s.Pending, "sent messages' slots are committed")
	}
}

// Late is bounded: during a provider outage, a message whose TTL passes
// is dropped and recorded as expired — never delivered late — while one
// still worth sending goes out once the provider is back.
func TestAnOutageDelaysButNeverDeliversLate(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	r.apns.Down(pushtest.Fault{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})
	stale := pushTo("flash-sale", "u1", "phone")
	stale.TTL = 150 * time.Millisecond
	fresh := pushTo("weekly", "u2", "tablet")
	fresh.TTL = time.Hour
	for _, m := range []herald.Message{stale, fresh} {
		_, err := r.d.Send(ctx, m)
		require.NoError(t, err)
	}
	r.start(t)
	time.Sleep(400 * time.Millisecond)
	r.apns.Up()
	r.settled(t)
	delivered := r.apns.Delivered()
	require.Len(t, delivered, 1)
	require.Equal(t, pushtest.DeviceToken("tablet"), delivered[0].Token)
	r.eventually(t, "flash-sale", tracking.Expired)
	got := r.types(t)
	require.NotContains(t, got["flash-sale"], tracking.Sent)
	require.Contains(t, got["weekly"], tracking.Failed, "the outage's failed attempts are recorded")
	require.Equal(t, tracking.Sent, got["weekly"][len(got["weekly"])-1])
}

// A recipient the provider says is gone is not retried, its capping slot
// is given back, and the host hears of it.
func TestARecipientGoneIsNotRetriedAndFreesItsSlot(t *testing.T) {
	t.Parallel()
	caps := capping.NewMemoryStore()
	var mu sync.Mutex
	var gone []string
	onGone := func(_ context.Context, g push.Gone) {
		mu.Lock()
		gone = append(gone, g.Token)
		mu.Unlock()
	}
	r := newRigGone(t, onGone, func(c *herald.Config) {
		l, err := capping.New(caps, &capping.Config{Rules: []capping.Rule{
			{Name: "daily", Kind: capping.Global, Limit: 5, Window: capping.Calendar(capping.Day)},
		}})
		require.NoError(t, err)
		c.Limiter = l
	})
	r.apns.FailToken(pushtest.DeviceToken("old-phone"), pushtest.Fault{Status: http.StatusGone, Reason: "Unregistered", Timestamp: time.Now()})
	ctx := context.Background()
	_, err := r.d.Send(ctx, pushTo("hello", "u1", "old-phone"))
	require.NoError(t, err)
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Requests(), 1, "never retried")
	r.eventually(t, "hello", tracking.Dead)
	got := r.types(t)
	require.Contains(t, got["hello"], tracking.RecipientGone)
	slots, err := caps.Slots(ctx, "daily|u1", time.Now().Add(-48*time.Hour))
	require.NoError(t, err)
	require.Empty(t, slots, "the provider refused it: the slot goes back")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{pushtest.DeviceToken("old-phone")}, gone, "the host is told, to prune the token")
}

// downStore refuses writes while down, as a store in an outage would.
type downStore struct {
	retry.Store
	mu   sync.Mutex
	down bool
}

func (s *downStore) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *downStore) Enqueue(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errors.New("disk I/O error")
	}
	return s.Store.Enqueue(ctx, jobs, since)
}

// When the store cannot take the message, Send says so with a retryable
// error, never success; the retry with the same key goes through once.
func TestStoreDownRefusesWithARetryableError(t *testing.T) {
	t.Parallel()
	var ds *downStore
	r := newRig(t, func(c *herald.Config) {
		ds = &downStore{Store: c.Store}
		c.Store = ds
	})
	ctx := context.Background()
	ds.set(true)
	_, err := r.d.Send(ctx, pushTo("k1", "u1", "phone"))
	require.ErrorIs(t, err, herald.ErrNotAccepted)
	require.NotErrorIs(t, err, herald.ErrInvalid)
	ds.set(false)
	for range 2 { // the caller retries, and once more for good measure
		_, err = r.d.Send(ctx, pushTo("k1", "u1", "phone"))
		require.NoError(t, err)
	}
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 1)
}

// One bad provider does not stop the others: APNs hangs, and the email
// sent after a backlog of stuck pushes still goes out at once, because
// each route has its own lanes and workers.
func TestAHangingProviderHoldsOnlyItsOwnLane(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	r.apns.SetLatency(3 * time.Second)
	for i := range 10 {
		_, err := r.d.Send(ctx, pushTo(fmt.Sprint("promo-", i), fmt.Sprint("u", i), fmt.Sprint("phone-", i)))
		require.NoError(t, err)
	}
	_, err := r.d.Send(ctx, herald.Message{IdempotencyKey: "newsletter", User: "u1", Email: &email.Message{
		From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "News", Text: "Hello"}})
	require.NoError(t, err)
	require.NoError(t, r.d.Start(ctx))
	require.Eventually(t, func() bool { return len(r.smtp.Messages()) == 1 }, 2*time.Second, 5*time.Millisecond,
		"the email waited behind pushes stuck on a hanging APNs")
	r.apns.SetLatency(0)
	stop, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = r.d.Stop(stop) // the stuck pushes go back to the queue
}

// A provider outage does not become a thundering herd: after a few
// failures the route's circuit opens and its backlog waits without calling
// the provider; once the provider is back, everything goes out.
func TestTheBreakerSparesADownProvider(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *herald.Config) {
		c.Breaker = herald.BreakerConfig{Threshold: 3, Cooldown: 500 * time.Millisecond, MaxCooldown: 500 * time.Millisecond}
	})
	ctx := context.Background()
	r.apns.Down(pushtest.Fault{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})
	const n = 40
	for i := range n {
		_, err := r.d.Send(ctx, pushTo(fmt.Sprint("promo-", i), fmt.Sprint("u", i), fmt.Sprint("phone-", i)))
		require.NoError(t, err)
	}
	r.start(t)
	require.Eventually(t, func() bool { return r.d.CircuitOpen("apns") }, 5*time.Second, time.Millisecond)
	opened := len(r.apns.Requests())
	time.Sleep(250 * time.Millisecond) // within the 500 ms cool-down
	hits := len(r.apns.Requests())
	require.LessOrEqual(t, hits-opened, 4+1, "while open, only attempts already in flight (4 workers) and at most a probe reach APNs")
	require.Less(t, hits, n/2, "the backlog must not be tried against a down provider")
	require.False(t, r.d.CircuitOpen("email"), "one provider's circuit only")
	r.apns.Up()
	r.settled(t)
	require.Len(t, r.apns.Delivered(), n)
	require.False(t, r.d.CircuitOpen("apns"), "a successful probe closes the circuit")
	t.Logf("requests to the down provider: %d for %d messages", hits, n)
}

// Refused credentials are ours to fix, not the messages' fault: nothing is
// dead-lettered, and once the credentials work everything is sent.
func TestRefusedCredentialsKeepTheMessages(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	r.apns.Down(pushtest.Fault{Status: http.StatusForbidden, Reason: "InvalidProviderToken"})
	for i := range 5 {
		_, err := r.d.Send(ctx, pushTo(fmt.Sprint("m", i), fmt.Sprint("u", i), fmt.Sprint("phone-", i)))
		require.NoError(t, err)
	}
	r.start(t)
	time.Sleep(300 * time.Millisecond)
	dead, err := r.d.Queue().DeadLetters(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Empty(t, dead, "a credentials problem must not dead-letter messages")
	r.apns.Up()
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 5)
}

// Every push provider is routed to its own client and lanes: APNs, FCM v1
// (OAuth, JSON) and Web Push (RFC 8291, decrypted by the fake), each
// validated at the door by its client.
func TestEveryPushProviderIsRouted(t *testing.T) {
	t.Parallel()
	fcmFake := pushtest.NewFCM(t, nil)
	fc, err := fcm.New(context.Background(), (&fcm.Config{}).UseFake(fcmFake))
	require.NoError(t, err)
	wpFake := pushtest.NewWebPush(t)
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	wc, err := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(wpFake))
	require.NoError(t, err)
	t.Cleanup(wc.CloseIdleConnections)
	r := newRig(t, func(c *herald.Config) {
		c.Push[push.FCM] = fc
		c.Push[push.WebPush] = wc
	})
	ctx := context.Background()
	n := push.Notification{Title: "Hi", Body: "there"}
	sub := wpFake.NewSubscription(t, pub)
	for _, m := range []herald.Message{
		pushTo("a", "u1", "phone"),
		{IdempotencyKey: "f", User: "u1", Push: &herald.PushMessage{Provider: push.FCM, Message: push.Message{Token: pushtest.RegistrationToken("pixel"), Notification: n}}},
		{IdempotencyKey: "w", User: "u1", Push: &herald.PushMessage{Provider: push.WebPush, Message: push.Message{Token: sub, Notification: n}}},
	} {
		_, err := r.d.Send(ctx, m)
		require.NoError(t, err)
	}
	// Each client's own validation at the door.
	_, err = r.d.Send(ctx, herald.Message{IdempotencyKey: "bad-f", User: "u1", Push: &herald.PushMessage{Provider: push.FCM, Message: push.Message{Token: "has space", Notification: n}}})
	require.ErrorIs(t, err, push.ErrInvalidToken)
	_, err = r.d.Send(ctx, herald.Message{IdempotencyKey: "bad-w", User: "u1", Push: &herald.PushMessage{Provider: push.WebPush, Message: push.Message{Token: "{endpoint", Notification: n}}})
	require.ErrorIs(t, err, push.ErrInvalidToken)

	lanes := map[string]bool{}
	jobs, err := r.d.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	for _, j := range jobs {
		lanes[j.Lane] = true
	}
	require.Equal(t, map[string]bool{"campaign.apns": true, "campaign.fcm": true, "campaign.webpush": true}, lanes)
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 1)
	require.Len(t, fcmFake.Delivered(), 1)
	require.Len(t, wpFake.Delivered(), 1)
	require.Equal(t, "Hi", wpFake.Delivered()[0].Payload["title"], "the fake decrypted what the client encrypted")
}

// After a night when the capping store lost its counters and the journal
// lost events, the queue's retained jobs rebuild both: the counters count
// what was sent (not what a cap dropped), and the journal gets the sent
// events back.
func TestTheQueueRebuildsCapsAndEvents(t *testing.T) {
	t.Parallel()
	rule := []capping.Rule{{Name: "daily", Kind: capping.Global, Limit: 2, Window: capping.Calendar(capping.Day)}}
	r := newRig(t, func(c *herald.Config) {
		l, err := capping.New(capping.NewMemoryStore(), &capping.Config{Rules: rule})
		require.NoError(t, err)
		c.Limiter = l
		c.Tracker = failingTracker{} // every event of the run is lost at the source
	})
	ctx := context.Background()
	for i := range 3 {
		_, err := r.d.Send(ctx, pushTo(fmt.Sprint("promo-", i), "u1", "phone"))
		require.NoError(t, err)
	}
	r.start(t)
	r.settled(t)
	require.Len(t, r.apns.Delivered(), 2)

	jobs, err := r.d.Queue().Jobs(ctx, retry.Filter{States: []retry.State{retry.StateCompleted}})
	require.NoError(t, err)
	require.Len(t, jobs, 3)
	skipped := 0
	for _, j := range jobs {
		if reason, ok := retry.Skipped(j); ok {
			skipped++
			require.Equal(t, "capped by daily", reason)
		}
	}
	require.Equal(t, 1, skipped, "the capped message's job says so")

	fresh, err := capping.New(capping.NewMemoryStore(), &capping.Config{Rules: rule}) // the counters were lost
	require.NoError(t, err)
	require.NoError(t, fresh.Reconcile(ctx, r.d.Sends(jobs)))
	usage, err := fresh.Usage(ctx, capping.Subject{User: "u1", Channel: "push"}, time.Now())
	require.NoError(t, err)
	require.Equal(t, 2, usage[0].Count, "two were sent; the capped one is not counted")

	n, err := r.outbox.Regenerate(ctx, r.d.Outcomes(jobs), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2, n, "a sent event for each message that went out, none for the capped one")
	got := r.types(t)
	sent := 0
	for _, types := range got {
		for _, typ := range types {
			if typ == tracking.Sent {
				sent++
			}
		}
	}
	require.Equal(t, 2, sent)
}

// A batch is accepted whole or not at all; a refusal names the message.
func TestSendBatchIsAllOrNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	bad := pushTo("b", "u2", "phone")
	bad.Push = &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "zz", Notification: push.Notification{Body: "x"}}}
	_, err := r.d.SendBatch(ctx, []herald.Message{pushTo("a", "u1", "phone"), bad})
	var fe *herald.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "[1].Push", fe.Field)
	jobs, err := r.d.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Empty(t, jobs, "the valid message of a refused batch is not stored either")
	res, err := r.d.SendBatch(ctx, []herald.Message{pushTo("a", "u1", "phone"), pushTo("c", "u3", "tablet")})
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.NotEqual(t, res[0].ID, res[1].ID)
}

// Late stays bounded after herald lets go: the provider is told the
// message's deadline (apns-expiration; Twilio's ValidityPeriod), so a
// phone that was offline for hours does not get a stale notification.
func TestProvidersAreToldTheDeadline(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	p := pushTo("p", "u1", "phone")
	p.TTL = time.Hour
	s := herald.Message{IdempotencyKey: "s", User: "u1", Transactional: true, TTL: 30 * time.Minute,
		SMS: &sms.Message{To: "+14155552671", From: "Shop", Body: "Your table is ready"}}
	sent := time.Now()
	for _, m := range []herald.Message{p, s} {
		_, err := r.d.Send(ctx, m)
		require.NoError(t, err)
	}
	r.start(t)
	r.settled(t)
	exp, err := strconv.ParseInt(r.apns.Delivered()[0].Expiration, 10, 64)
	require.NoError(t, err)
	require.InDelta(t, sent.Add(time.Hour).Unix(), exp, 5, "apns-expiration is the message's deadline")
	vp, err := strconv.Atoi(r.twilio.Accepted()[0].ValidityPeriod)
	require.NoError(t, err)
	require.InDelta(t, 1800, vp, 5, "Twilio's ValidityPeriod is what is left of the TTL")
}

// An attempt whose outcome nobody can know (the request left, the answer
// never came) keeps its cap slot — the safe side — and the retry reuses
// it: the message is counted once, not twice.
func TestAnUnknowableOutcomeCountsTheMessageOnce(t *testing.T) {
	t.Parallel()
	caps := capping.NewMemoryStore()
	r := newRig(t, func(c *herald.Config) {
		l, err := capping.New(caps, &capping.Config{Rules: []capping.Rule{
			{Name: "daily", Kind: capping.Global, Limit: 5, Window: capping.Calendar(capping.Day)},
		}})
		require.NoError(t, err)
		c.Limiter = l
		c.Queue.JobTimeout = 100 * time.Millisecond
	})
	ctx := context.Background()
	r.apns.SetLatency(time.Second) // the first attempt times out waiting for APNs
	_, err := r.d.Send(ctx, pushTo("m1", "u1", "phone"))
	require.NoError(t, err)
	r.start(t)
	r.eventually(t, "m1", tracking.Failed)
	r.apns.SetLatency(0)
	r.eventually(t, "m1", tracking.Sent)
	r.settled(t)
	slots, err := caps.Slots(ctx, "daily|u1", time.Now().Add(-48*time.Hour))
	require.NoError(t, err)
	require.Len(t, slots, 1, "a retry after an unknowable outcome must not take a second slot")
	require.False(t, slots[0].Pending)
}
