// Package heraldtest is a test kit for host applications that send
// through a herald.Dispatcher: a Dispatcher on the in-memory store with
// recording senders for every channel and push provider, a manual clock,
// capping and tracking wired, and assertions in the style of rivertest
// and zaptest/observer.
//
//	func TestOrderShipped(t *testing.T) {
//		kit := heraldtest.New(t, &heraldtest.Options{Rules: marketingCaps})
//		shop := NewShop(kit.Dispatcher)          // the host's code under test
//		shop.Shipped(ctx, order)                  // sends a push and an email
//		kit.Settle(t)
//		kit.RequireSent(t, "order-42/push")
//		kit.RequireSent(t, "order-42/email")
//		kit.RequireCapped(t, "order-42/promo")
//	}
//
// Everything is stopped and closed with t.Cleanup. The recorders accept
// any token, address or number unless scripted to fail (Fail); the
// channels' own validation at the door is the real clients' business and
// is tested with their fakes (pushtest, emailtest, smstest).
package heraldtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/retrytest"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/tracking"
)

// Start is where the kit's clock starts: a Wednesday noon, UTC, out of
// any default quiet hours.
var Start = time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)

// Options configure New. The zero value is a Dispatcher without caps.
type Options struct {
	// Rules and QuietHours, when set, wire a capping.Limiter on an
	// in-memory store.
	Rules      []capping.Rule
	QuietHours *capping.QuietHours
	// Store runs the kit on another queue store (embedded.Open(path).Retry(),
	// to test against the real file). Default: retry.NewMemoryStore().
	Store retry.Store
	// Configure adjusts the Dispatcher's Config before New (DeferCapped,
	// DefaultTTL, lanes, ...). Store, senders, Limiter, Tracker and Now are
	// set already.
	Configure func(c *herald.Config)
}

// Kit is a running Dispatcher with everything a test needs to look at.
type Kit struct {
	Dispatcher *herald.Dispatcher
	// Clock drives the Dispatcher, the queue and capping: Advance it to
	// pass a TTL, a backoff or quiet hours.
	Clock *retrytest.Clock
	// Senders record what was sent: one per push provider (APNs, FCM, Web
	// Push), email and SMS.
	Push  map[push.Provider]*Recorder
	Email *Recorder
	SMS   *Recorder

	journal *tracking.MemoryStore
	outbox  *tracking.Outbox
}

// New returns a started kit; t.Cleanup stops it.
func New(tb testing.TB, opts *Options) *Kit {
	tb.Helper()
	if opts == nil {
		opts = &Options{}
	}
	k := &Kit{
		Clock:   retrytest.NewClock(Start),
		Push:    map[push.Provider]*Recorder{},
		Email:   newRecorder("email"),
		SMS:     newRecorder("sms"),
		journal: tracking.NewMemoryStore(),
	}
	senders := map[push.Provider]push.Sender{}
	for _, p := range []push.Provider{push.APNs, push.FCM, push.WebPush} {
		r := newRecorder(string(p))
		k.Push[p] = r
		senders[p] = pushSender{r, p}
	}
	var err error
	k.outbox, err = tracking.NewOutbox(k.journal, &tracking.OutboxConfig{PollInterval: time.Millisecond})
	if err != nil {
		tb.Fatalf("heraldtest: outbox: %v", err)
	}
	store := opts.Store
	if store == nil {
		store = retry.NewMemoryStore()
	}
	cfg := &herald.Config{
		Store: store,
		Queue: retry.Config{
			PollInterval: time.Millisecond,
			Backoff:      func(attempt int, _ error) time.Duration { return time.Duration(attempt) * time.Second },
		},
		Push: senders, Email: emailSender{k.Email}, SMS: smsSender{k.SMS},
		Tracker: k.outbox,
		Now:     k.Clock.Now,
	}
	if len(opts.Rules) > 0 || opts.QuietHours != nil {
		cfg.Limiter, err = capping.New(capping.NewMemoryStore(), &capping.Config{Rules: opts.Rules, QuietHours: opts.QuietHours})
		if err != nil {
			tb.Fatalf("heraldtest: capping: %v", err)
		}
	}
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	k.Dispatcher, err = herald.New(cfg)
	if err != nil {
		tb.Fatalf("heraldtest: %v", err)
	}
	if err := k.Dispatcher.Start(context.Background()); err != nil {
		tb.Fatalf("heraldtest: start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Dispatcher.Stop(ctx)
		_ = k.outbox.Close(ctx)
	})
	return k
}

// Send sends m and fails the test if it is refused.
func (k *Kit) Send(tb testing.TB, m herald.Message) herald.Result {
	tb.Helper()
	r, err := k.Dispatcher.Send(context.Background(), m)
	if err != nil {
		tb.Fatalf("heraldtest: Send %s: %v", m.IdempotencyKey, err)
	}
	return r
}

// Settle waits until no message is due or running (up to 2 minutes: a
// loaded machine running -race is slow): everything sendable at the
// clock's time has been tried. Messages scheduled later
// (SendAt, a backoff, quiet hours) wait for Clock.Advance.
func (k *Kit) Settle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := k.Dispatcher.Queue().Stats(context.Background())
		if err != nil {
			tb.Fatalf("heraldtest: stats: %v", err)
		}
		busy := 0
		for _, ls := range st {
			busy += ls.Ready + ls.Running
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("heraldtest: %d messages still due or running after 2 minutes", busy)
		}
		time.Sleep(time.Millisecond)
	}
	if err := k.outbox.Flush(context.Background()); err != nil {
		tb.Fatalf("heraldtest: flush: %v", err)
	}
}

// Events returns every tracking event so far, in journal order.
func (k *Kit) Events() []tracking.Event {
	_ = k.outbox.Flush(context.Background())
	recs, _ := k.journal.Read(context.Background(), 0, 1<<30)
	out := make([]tracking.Event, len(recs))
	for i, r := range recs {
		out[i] = r.Event
	}
	return out
}

// Types returns the event types recorded for the message with key, in order.
func (k *Kit) Types(key string) []tracking.Type {
	var out []tracking.Type
	for _, e := range k.Events() {
		if e.MessageID == key {
			out = append(out, e.Type)
		}
	}
	return out
}

func (k *Kit) require(tb testing.TB, key string, t tracking.Type) tracking.Event {
	tb.Helper()
	for _, e := range k.Events() {
		if e.MessageID == key && e.Type == t {
			return e
		}
	}
	tb.Fatalf("heraldtest: message %q was not %s (its events: %v)", key, t, k.Types(key))
	return tracking.Event{}
}

// RequireSent fails the test unless the message with key was sent, and
// returns its sent event.
func (k *Kit) RequireSent(tb testing.TB, key string) tracking.Event {
	tb.Helper()
	return k.require(tb, key, tracking.Sent)
}

// RequireCapped fails the test unless a cap dropped the message with key,
// and checks that it was not sent.
func (k *Kit) RequireCapped(tb testing.TB, key string) {
	tb.Helper()
	k.require(tb, key, tracking.Capped)
	if slices.Contains(k.Types(key), tracking.Sent) {
		tb.Fatalf("heraldtest: message %q was capped and sent", key)
	}
}

// RequireExpired fails the test unless the message with key expired
// unsent (advance Clock past its TTL and Settle first).
func (k *Kit) RequireExpired(tb testing.TB, key string) {
	tb.Helper()
	k.require(tb, key, tracking.Expired)
	if slices.Contains(k.Types(key), tracking.Sent) {
		tb.Fatalf("heraldtest: message %q expired and was sent", key)
	}
}

// RequireNotSent fails the test if the message with key was sent.
func (k *Kit) RequireNotSent(tb testing.TB, key string) {
	tb.Helper()
	if slices.Contains(k.Types(key), tracking.Sent) {
		tb.Fatalf("heraldtest: message %q was sent", key)
	}
}

// Recorder records what one sender was asked to send: the messages'
// idempotency keys in order. Fail scripts a failure for a key.
type Recorder struct {
	name  string
	mu    sync.Mutex
	sent  []string
	fails map[string]error
	seq   int
}

func newRecorder(name string) *Recorder { return &Recorder{name: name, fails: map[string]error{}} }

// Sent returns the idempotency keys of the messages sent, in order.
func (r *Recorder) Sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// Fail makes every send of the message with key fail with err (a channel
// error such as &push.Error{Kind: push.ErrUnavailable}); nil heals it.
func (r *Recorder) Fail(key string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fails, key)
		return
	}
	r.fails[key] = err
}

func (r *Recorder) record(ctx context.Context, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fails[key]; err != nil {
		return "", err
	}
	r.seq++
	r.sent = append(r.sent, key)
	return fmt.Sprintf("%s-%d", r.name, r.seq), nil
}

type pushSender struct {
	r *Recorder
	p push.Provider
}

func (s pushSender) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	id, err := s.r.record(ctx, m.IdempotencyKey)
	if err != nil {
		return push.Receipt{}, err
	}
	return push.Receipt{Provider: s.p, ID: id, At: time.Now()}, nil
}

type emailSender struct{ r *Recorder }

func (s emailSender) Send(ctx context.Context, m *email.Message) (email.Receipt, error) {
	id, err := s.r.record(ctx, m.IdempotencyKey)
	if err != nil {
		return email.Receipt{}, err
	}
	return email.Receipt{MessageID: id + "@heraldtest", At: time.Now()}, nil
}

type smsSender struct{ r *Recorder }

func (s smsSender) Send(ctx context.Context, m *sms.Message) (sms.Receipt, error) {
	id, err := s.r.record(ctx, m.IdempotencyKey)
	if err != nil {
		return sms.Receipt{}, err
	}
	return sms.Receipt{SID: "SM" + id, Status: "queued", At: time.Now()}, nil
}
