// Package trackingtest has an in-memory tracking sink for tests: it records
// every batch it receives (safe for concurrent use), can be made to fail,
// and shows both the raw deliveries and the view of a sink that
// deduplicates by event ID.
package trackingtest

import (
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald/tracking"
)

// Recorder is a tracking.Sink that keeps what it receives.
type Recorder struct {
	name string

	mu     sync.Mutex
	events []tracking.Event
	fail   error
	notify chan struct{}
}

var _ tracking.Sink = (*Recorder)(nil)

// NewRecorder returns a recorder named name.
func NewRecorder(name string) *Recorder {
	return &Recorder{name: name, notify: make(chan struct{}, 1)}
}

// Name implements tracking.Sink.
func (r *Recorder) Name() string { return r.name }

// Write implements tracking.Sink.
func (r *Recorder) Write(_ context.Context, events []tracking.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, events...)
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

// Fail makes Write fail with err until Fail(nil).
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// All returns every event received, duplicates included, in order.
func (r *Recorder) All() []tracking.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tracking.Event(nil), r.events...)
}

// Unique returns the events a sink deduplicating by ID would keep.
func (r *Recorder) Unique() []tracking.Event {
	seen := map[string]bool{}
	var out []tracking.Event
	for _, e := range r.All() {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// WaitFor waits until n unique events arrived or timeout passes, and
// reports whether they did.
func (r *Recorder) WaitFor(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(r.Unique()) < n {
		select {
		case <-r.notify:
		case <-deadline.C:
			return false
		}
	}
	return true
}
