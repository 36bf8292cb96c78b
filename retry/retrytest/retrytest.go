// Package retrytest helps host apps test code that enqueues and handles
// retry jobs: a queue on the in-memory store with a clock the test moves,
// and assertions on what was enqueued.
//
//	q, clock := retrytest.NewQueue(t, nil)
//	q.HandleFunc("welcome", sendWelcome)
//	myapp.SignUp(ctx, q, "ada")
//	job := retrytest.RequireEnqueued(t, q, "welcome")
//	retrytest.RequireDrained(t, q, 1)
//	clock.Advance(time.Hour) // make scheduled retries due
package retrytest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock stopped at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// NewQueue returns a queue on a new in-memory store with a manual clock
// (starting at 2030-01-01 UTC) and backoff without jitter (attempt n waits
// n seconds), both unless cfg sets them. The store is closed when the test
// ends. Work the jobs with q.Drain (see RequireDrained), or Start the queue.
func NewQueue(tb testing.TB, cfg *retry.Config) (*retry.Queue, *Clock) {
	tb.Helper()
	var c retry.Config
	if cfg != nil {
		c = *cfg
	}
	clock := NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	if c.Now == nil {
		c.Now = clock.Now
	}
	if c.Backoff == nil {
		c.Backoff = func(attempt int, _ error) time.Duration { return time.Duration(attempt) * time.Second }
	}
	store := retry.NewMemoryStore()
	tb.Cleanup(func() { _ = store.Close() })
	q, err := retry.New(store, &c)
	if err != nil {
		tb.Fatalf("retrytest.NewQueue: %v", err)
	}
	return q, clock
}

// RequireEnqueued fails the test unless exactly one job of kind is
// waiting to run (available or scheduled), and returns it.
func RequireEnqueued(tb testing.TB, q *retry.Queue, kind string) *retry.Job {
	tb.Helper()
	js := waiting(tb, q, kind)
	if len(js) != 1 {
		tb.Fatalf("retrytest: %d jobs of kind %q waiting, want 1", len(js), kind)
	}
	return js[0]
}

// RequireEnqueuedN fails the test unless n jobs of kind are waiting, and
// returns them in ID order.
func RequireEnqueuedN(tb testing.TB, q *retry.Queue, kind string, n int) []*retry.Job {
	tb.Helper()
	js := waiting(tb, q, kind)
	if len(js) != n {
		tb.Fatalf("retrytest: %d jobs of kind %q waiting, want %d", len(js), kind, n)
	}
	return js
}

// RequireNotEnqueued fails the test if a job of kind is waiting.
func RequireNotEnqueued(tb testing.TB, q *retry.Queue, kind string) {
	tb.Helper()
	if js := waiting(tb, q, kind); len(js) != 0 {
		tb.Fatalf("retrytest: %d jobs of kind %q waiting, want none", len(js), kind)
	}
}

// RequireState fails the test unless the job with id is in state want,
// and returns it.
func RequireState(tb testing.TB, q *retry.Queue, id int64, want retry.State) *retry.Job {
	tb.Helper()
	j, err := q.Job(context.Background(), id)
	if err != nil {
		tb.Fatalf("retrytest: job %d: %v", id, err)
	}
	if j.State != want {
		tb.Fatalf("retrytest: job %d is %s, want %s (last error %q)", id, j.State, want, j.LastError)
	}
	return j
}

// RequireDrained works every due job with q.Drain and fails the test
// unless exactly n were handled.
func RequireDrained(tb testing.TB, q *retry.Queue, n int) {
	tb.Helper()
	got, err := q.Drain(context.Background())
	if err != nil {
		tb.Fatalf("retrytest: Drain: %v", err)
	}
	if got != n {
		tb.Fatalf("retrytest: Drain handled %d jobs, want %d", got, n)
	}
}

func waiting(tb testing.TB, q *retry.Queue, kind string) []*retry.Job {
	tb.Helper()
	js, err := q.Jobs(context.Background(), retry.Filter{Kind: kind, States: []retry.State{retry.StateAvailable, retry.StateScheduled}})
	if err != nil {
		tb.Fatalf("retrytest: listing jobs: %v", err)
	}
	return js
}

// Recorder collects a queue's events; pass its Observe as Config.Observer.
// It is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	events []retry.Event
	notify chan struct{}
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{notify: make(chan struct{}, 1)} }

// Observe records e.
func (r *Recorder) Observe(e retry.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// All returns the events so far.
func (r *Recorder) All() []retry.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]retry.Event(nil), r.events...)
}

// Types returns the types of the events so far about job id, in order.
func (r *Recorder) Types(id int64) []retry.EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []retry.EventType
	for _, e := range r.events {
		if e.Job.ID == id {
			out = append(out, e.Type)
		}
	}
	return out
}

// Count returns how many events of type typ were recorded.
func (r *Recorder) Count(typ retry.EventType) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// WaitFor waits until n events of type typ were recorded, failing the
// test after timeout.
func (r *Recorder) WaitFor(tb testing.TB, typ retry.EventType, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for r.Count(typ) < n {
		select {
		case <-r.notify:
		case <-deadline.C:
			tb.Fatalf("retrytest: %d %q events after %s, want %d", r.Count(typ), typ, timeout, n)
		}
	}
}
