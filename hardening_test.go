package herald_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
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

// channelRig is one provider behind a Dispatcher: the real client, its
// fake, and how to make normal and poison messages for it.
type channelRig struct {
	route string
	cfg   func(c *herald.Config)
	// normal is message i, which the provider takes.
	normal func(i int) herald.Message
	// poison is message i, which passes the door but which the provider
	// refuses because of the message itself; it scripts the fake.
	poison func(i int) herald.Message
	// delivered counts what the fake accepted; requests what it was sent.
	delivered, requests func() int
	// down makes the provider answer every request with a 503 (or its
	// channel's kind of outage); up ends it.
	down, up func()
}

func newChannelRig(t *testing.T, route string) *channelRig {
	t.Helper()
	ctx := context.Background()
	n := push.Notification{Title: "Sale", Body: "40% off"}
	switch route {
	case "apns":
		f := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
		c, err := apns.New((&apns.Config{Topic: topic}).UseFake(f))
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		reasons := []pushtest.Fault{{Status: 400, Reason: "BadDeviceToken"}, {Status: 410, Reason: "Unregistered"}, {Status: 413, Reason: "PayloadTooLarge"}, {Status: 400, Reason: "BadCollapseId"}}
		return &channelRig{
			route: route,
			cfg:   func(h *herald.Config) { h.Push = map[push.Provider]push.Sender{push.APNs: c} },
			normal: func(i int) herald.Message {
				return msgPush(fmt.Sprint("ok-", i), push.APNs, pushtest.DeviceToken(fmt.Sprint("ok-", i)), n)
			},
			poison: func(i int) herald.Message {
				tok := pushtest.DeviceToken(fmt.Sprint("poison-", i))
				f.FailToken(tok, reasons[i%len(reasons)])
				return msgPush(fmt.Sprint("poison-", i), push.APNs, tok, n)
			},
			delivered: func() int { return len(f.Delivered()) },
			requests:  func() int { return len(f.Requests()) },
			down:      func() { f.Down(pushtest.Fault{Status: 503, Reason: "ServiceUnavailable"}) },
			up:        f.Up,
		}
	case "fcm":
		f := pushtest.NewFCM(t, nil)
		c, err := fcm.New(ctx, (&fcm.Config{}).UseFake(f))
		require.NoError(t, err)
		reasons := []string{"INVALID_ARGUMENT", "UNREGISTERED", "SENDER_ID_MISMATCH"}
		return &channelRig{
			route: route,
			cfg:   func(h *herald.Config) { h.Push = map[push.Provider]push.Sender{push.FCM: c} },
			normal: func(i int) herald.Message {
				return msgPush(fmt.Sprint("ok-", i), push.FCM, pushtest.RegistrationToken(fmt.Sprint("ok-", i)), n)
			},
			poison: func(i int) herald.Message {
				tok := pushtest.RegistrationToken(fmt.Sprint("poison-", i))
				f.FailToken(tok, pushtest.Fault{Reason: reasons[i%len(reasons)]})
				return msgPush(fmt.Sprint("poison-", i), push.FCM, tok, n)
			},
			delivered: func() int { return len(f.Delivered()) },
			requests:  func() int { return len(f.Requests()) },
			down:      func() { f.Down(pushtest.Fault{Reason: "UNAVAILABLE"}) },
			up:        f.Up,
		}
	case "webpush":
		f := pushtest.NewWebPush(t)
		pub, priv, err := webpush.GenerateVAPIDKeys()
		require.NoError(t, err)
		c, err := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(f))
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		statuses := []int{400, 410, 413, 404}
		return &channelRig{
			route: route,
			cfg:   func(h *herald.Config) { h.Push = map[push.Provider]push.Sender{push.WebPush: c} },
			normal: func(i int) herald.Message {
				return msgPush(fmt.Sprint("ok-", i), push.WebPush, f.NewSubscription(t, pub), n)
			},
			poison: func(i int) herald.Message {
				sub := f.NewSubscription(t, pub)
				f.FailToken(sub, pushtest.Fault{Status: statuses[i%len(statuses)], Reason: "refused"})
				return msgPush(fmt.Sprint("poison-", i), push.WebPush, sub, n)
			},
			delivered: func() int { return len(f.Delivered()) },
			requests:  func() int { return len(f.Requests()) },
			down:      func() { f.Down(pushtest.Fault{Status: 503, Reason: "down"}) },
			up:        f.Up,
		}
	case "email":
		f := emailtest.NewServer(t, nil)
		c, err := smtp.New((&smtp.Config{PoolSize: 4}).UseFake(f))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		// What a server says about one message's recipients: too many of
		// them, a full mailbox, a mailbox that does not exist. On the old
		// classification the first two were "the server is down".
		replies := []emailtest.Reply{
			{Code: 452, Enhanced: [3]int{4, 5, 3}, Message: "Too many recipients"},
			{Code: 452, Enhanced: [3]int{4, 2, 2}, Message: "Mailbox full"},
			{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "No such user"},
		}
		return &channelRig{
			route: route,
			cfg:   func(h *herald.Config) { h.Email = c },
			normal: func(i int) herald.Message {
				return msgEmail(fmt.Sprint("ok-", i), fmt.Sprintf("user%d@example.com", i))
			},
			poison: func(i int) herald.Message {
				addr := fmt.Sprintf("poison%d@example.com", i)
				f.FailRecipient(addr, replies[i%len(replies)])
				return msgEmail(fmt.Sprint("poison-", i), addr)
			},
			delivered: func() int { return len(f.Messages()) },
			requests:  f.Transactions,
			down: func() {
				f.FailNext(1_000_000, emailtest.Reply{Code: 421, Enhanced: [3]int{4, 3, 2}, Message: "Service not available"})
			},
			up: f.Heal,
		}
	case "sms":
		f := smstest.NewServer(t)
		c, err := twilio.New((&twilio.Config{}).UseFake(f))
		require.NoError(t, err)
		faults := []smstest.Fault{{Status: 400, Code: 21211}, {Status: 400, Code: 21610}, {Status: 400, Code: 21614}}
		return &channelRig{
			route: route,
			cfg:   func(h *herald.Config) { h.SMS = c },
			normal: func(i int) herald.Message {
				return msgSMS(fmt.Sprint("ok-", i), fmt.Sprintf("+1415555%04d", i))
			},
			poison: func(i int) herald.Message {
				to := fmt.Sprintf("+1415556%04d", i)
				f.FailTo(to, faults[i%len(faults)])
				return msgSMS(fmt.Sprint("poison-", i), to)
			},
			delivered: func() int { return len(f.Accepted()) },
			requests:  func() int { return len(f.Messages()) },
			down:      func() { f.FailNext(1_000_000, smstest.Fault{Status: 503, Code: 20503}) },
			up:        f.Heal,
		}
	}
	t.Fatalf("unknown route %q", route)
	return nil
}

func msgPush(key string, p push.Provider, tok string, n push.Notification) herald.Message {
	return herald.Message{IdempotencyKey: key, User: "u-" + key, Transactional: true,
		Push: &herald.PushMessage{Provider: p, Message: push.Message{Token: tok, Notification: n}}}
}

func msgEmail(key, to string) herald.Message {
	return herald.Message{IdempotencyKey: key, User: "u-" + key, Transactional: true,
		Email: &email.Message{From: "Shop <shop@example.com>", To: []string{to}, Subject: "Your receipt", Text: "Thanks"}}
}

func msgSMS(key, to string) herald.Message {
	return herald.Message{IdempotencyKey: key, User: "u-" + key, Transactional: true,
		SMS: &sms.Message{To: to, From: "+15005550006", Body: "Your code is 123456"}}
}

var routes = []string{"apns", "fcm", "webpush", "email", "sms"}

// 50 messages the provider refuses because of the message itself, mixed
// into 500 normal ones, on the embedded store: every normal message is
// delivered without a wait from the breaker, the circuit never opens, and
// each poison message ends dead with its reason.
func TestPoisonMessagesNeverOpenTheCircuit(t *testing.T) {
	t.Parallel()
	for _, route := range routes {
		t.Run(route, func(t *testing.T) {
			t.Parallel()
			ch := newChannelRig(t, route)
			db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			events := tracking.NewMemoryStore()
			outbox, err := tracking.NewOutbox(events, &tracking.OutboxConfig{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = outbox.Close(context.Background()) })
			cfg := &herald.Config{
				Store: db.Retry(),
				Queue: retry.Config{
					PollInterval: 5 * time.Millisecond, DefaultMaxAttempts: 3,
					Backoff: func(int, error) time.Duration { return 5 * time.Millisecond },
				},
				Tracker: outbox,
				// The default threshold (10): on the old classification, ten
				// consecutive poison messages opened the circuit for everyone.
				Breaker: herald.BreakerConfig{Cooldown: 2 * time.Second, MaxCooldown: 2 * time.Second},
			}
			ch.cfg(cfg)
			d, err := herald.New(cfg)
			require.NoError(t, err)
			ctx := context.Background()
			const normal, poison = 500, 50
			var batch []herald.Message
			for i := range normal {
				batch = append(batch, ch.normal(i))
				if i%10 == 9 && i/10 < poison {
					// Runs of poison between the normal ones.
					for j := range 1 {
						batch = append(batch, ch.poison(i/10+j))
					}
				}
			}
			for i := 0; i < len(batch); i += 50 {
				_, err := d.SendBatch(ctx, batch[i:min(i+50, len(batch))])
				require.NoError(t, err)
			}
			var opened atomic.Bool
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						if d.CircuitOpen(route) {
							opened.Store(true)
						}
					}
				}
			}()
			require.NoError(t, d.Start(ctx))
			require.Eventually(t, func() bool {
				st, err := d.Queue().Stats(ctx)
				require.NoError(t, err)
				for _, ls := range st {
					if ls.Ready+ls.Scheduled+ls.Running > 0 {
						return false
					}
				}
				return true
			}, 60*time.Second, 10*time.Millisecond)
			close(stop)
			<-watched
			require.NoError(t, d.Stop(ctx))
			require.False(t, opened.Load(), "the circuit opened: poison messages counted as the provider being down")
			require.Equal(t, normal, ch.delivered(), "every normal message delivered")
			dead, err := d.Queue().Jobs(ctx, retry.Filter{States: []retry.State{retry.StateDead}})
			require.NoError(t, err)
			require.Len(t, dead, poison, "every poison message dead-lettered")
			for _, j := range dead {
				require.True(t, strings.HasPrefix(j.IdempotencyKey, "poison-"), j.IdempotencyKey)
				require.NotEmpty(t, j.LastError, "dead with its reason")
			}
			require.NoError(t, outbox.Flush(ctx))
			recs, err := events.Read(ctx, 0, 100_000)
			require.NoError(t, err)
			for _, r := range recs {
				require.NotEqual(t, tracking.Deferred, r.Event.Type, "%s was made to wait by the breaker", r.Event.MessageID)
			}
		})
	}
}

// During a provider outage answering 503, each attempt the queue makes is
// exactly one request to the provider (no retry hidden in a client), and
// the breaker keeps the requests to its bound.
func TestOneRequestPerAttemptDuringAnOutage(t *testing.T) {
	t.Parallel()
	for _, route := range routes {
		t.Run(route, func(t *testing.T) {
			t.Parallel()
			ch := newChannelRig(t, route)
			events := tracking.NewMemoryStore()
			outbox, err := tracking.NewOutbox(events, &tracking.OutboxConfig{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = outbox.Close(context.Background()) })
			const threshold, workers = 5, 4
			cfg := &herald.Config{
				Store: retry.NewMemoryStore(),
				Queue: retry.Config{
					PollInterval: 5 * time.Millisecond, DefaultMaxAttempts: 1000,
					Backoff: func(int, error) time.Duration { return 10 * time.Millisecond },
				},
				Transactional: retry.LaneConfig{Concurrency: workers},
				Tracker:       outbox,
				Breaker:       herald.BreakerConfig{Threshold: threshold, Cooldown: 100 * time.Millisecond, MaxCooldown: 100 * time.Millisecond},
			}
			ch.cfg(cfg)
			d, err := herald.New(cfg)
			require.NoError(t, err)
			ctx := context.Background()
			ch.down()
			const n = 100
			for i := range n {
				_, err := d.Send(ctx, ch.normal(i))
				require.NoError(t, err)
			}
			const outage = 800 * time.Millisecond
			require.NoError(t, d.Start(ctx))
			time.Sleep(outage)
			during := ch.requests()
			ch.up()
			require.Eventually(t, func() bool { return ch.delivered() == n }, 30*time.Second, 10*time.Millisecond)
			require.NoError(t, d.Stop(ctx))
			require.NoError(t, outbox.Flush(ctx))
			recs, err := events.Read(ctx, 0, 100_000)
			require.NoError(t, err)
			attempts := 0
			for _, r := range recs {
				if r.Event.Type == tracking.Sent || r.Event.Type == tracking.Failed {
					attempts++ // one per attempt that called the provider
				}
			}
			require.Equal(t, attempts, ch.requests(), "requests the provider saw = attempts the queue made")
			// The breaker's bound: the threshold, then one probe per
			// cool-down, plus what was in flight when it opened.
			bound := threshold + int(outage/(100*time.Millisecond)) + 2*workers
			require.LessOrEqual(t, during, bound, "requests during the outage")
			t.Logf("%s: %d requests during a %s outage (bound %d), %d attempts in all for %d messages", route, during, outage, bound, attempts, n)
		})
	}
}

// The idempotency key is the message's identity: the same key with the
// same message is a duplicate, with another body or even another channel
// a typed conflict that stores nothing.
func TestTheSameKeyWithAnotherMessageIsAConflict(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	first := pushTo("order-7", "u1", "phone")
	res, err := r.d.Send(ctx, first)
	require.NoError(t, err)
	again, err := r.d.Send(ctx, pushTo("order-7", "u1", "phone"))
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, res.ID, again.ID)

	other := pushTo("order-7", "u1", "phone")
	other.Push.Notification.Body = "another body"
	_, err = r.d.Send(ctx, other)
	require.ErrorIs(t, err, herald.ErrConflict)
	var ce *herald.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "IdempotencyKey", ce.Field)

	_, err = r.d.Send(ctx, herald.Message{IdempotencyKey: "order-7", User: "u1",
		Email: &email.Message{From: "shop@example.com", To: []string{"a@example.com"}, Subject: "x", Text: "y"}})
	require.ErrorIs(t, err, herald.ErrConflict, "another channel under the same key")

	// A batch with one conflict stores none of it.
	_, err = r.d.SendBatch(ctx, []herald.Message{pushTo("fresh-1", "u2", "p2"), other})
	require.ErrorIs(t, err, herald.ErrConflict)
	require.Contains(t, err.Error(), "[1].IdempotencyKey")
	jobs, err := r.d.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, 1, "only the first message is stored")
}

// Times are checked against what every store can keep, and a TTL too
// short to reach any provider is refused instead of expiring at once.
func TestTimesOutOfRangeAreRefused(t *testing.T) {
	t.Parallel()
	store := retry.NewMemoryStore()
	ac := newAPNsClient(t)
	d, err := herald.New(&herald.Config{Store: store, Push: map[push.Provider]push.Sender{push.APNs: ac}})
	require.NoError(t, err)
	ctx := context.Background()
	for _, tc := range []struct {
		field string
		mod   func(m *herald.Message)
	}{
		{"TTL", func(m *herald.Message) { m.TTL = time.Nanosecond }},
		{"TTL", func(m *herald.Message) { m.TTL = 500 * time.Millisecond }},
		{"TTL", func(m *herald.Message) { m.TTL = 250 * 365 * 24 * time.Hour }},
		{"TTL", func(m *herald.Message) { m.TTL = -time.Second }},
		{"SendAt", func(m *herald.Message) { m.SendAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"SendAt", func(m *herald.Message) { m.SendAt = time.Now().Add(2 * 365 * 24 * time.Hour) }},
		{"SendAt", func(m *herald.Message) { m.SendAt = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC) }},
	} {
		m := pushTo("k", "u", "d")
		tc.mod(&m)
		_, err := d.Send(ctx, m)
		var fe *herald.FieldError
		require.ErrorAs(t, err, &fe, tc.field)
		require.Equal(t, tc.field, fe.Field)
		require.ErrorIs(t, err, herald.ErrInvalid)
	}
	m := pushTo("k", "u", "d")
	m.TTL, m.SendAt = 28*24*time.Hour, time.Now().Add(300*24*time.Hour)
	_, err = d.Send(ctx, m)
	require.NoError(t, err, "the longest TTL and schedule the defaults allow")
	jobs, err := store.List(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, 1, "nothing refused was stored")
	// The queue refuses times no store can keep, whoever calls it.
	q, err := retry.New(retry.NewMemoryStore(), &retry.Config{})
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, retry.EnqueueParams{Kind: "k", RunAt: time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC)})
	require.ErrorIs(t, err, retry.ErrInvalidJob)
	_, err = q.Enqueue(ctx, retry.EnqueueParams{Kind: "k", ExpiresAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)})
	require.ErrorIs(t, err, retry.ErrInvalidJob)
}

func newAPNsClient(t *testing.T) *apns.Client {
	t.Helper()
	f := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	c, err := apns.New((&apns.Config{Topic: topic}).UseFake(f))
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

var _ = http.StatusOK
