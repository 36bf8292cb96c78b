package retry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// EventType names a state change reported to Config.Observer.
type EventType string

// The events a Queue reports.
const (
	EventEnqueued  EventType = "enqueued"  // durable; Duplicate enqueues are not reported
	EventStarted   EventType = "started"   // a handler began a run
	EventSucceeded EventType = "succeeded" // completed, durably
	EventSkipped   EventType = "skipped"   // completed by Skip: the handler decided it must not run
	EventRetried   EventType = "retried"   // failed, scheduled again at RetryAt
	EventSnoozed   EventType = "snoozed"   // rescheduled at RetryAt by the handler, no attempt used
	EventDead      EventType = "dead"      // moved to the dead letters
	EventExpired   EventType = "expired"   // past ExpiresAt, not run
	EventRescued   EventType = "rescued"   // its worker's lease lapsed; available again (or dead)
	EventReleased  EventType = "released"  // handed back unrun at shutdown
)

// Event is one state change of one job.
type Event struct {
	Type EventType
	Job  *Job // a snapshot after the change; do not modify
	// Err is the handler's error for retried and dead, nil otherwise.
	Err error
	// RetryAt is the next run for retried and snoozed.
	RetryAt time.Time
	At      time.Time
}

// Handler runs jobs of one kind. Return nil for success, Permanent(err)
// to dead-letter, Snooze(d) to run again later without using an attempt,
// and any other error to retry with backoff (or after the error's
// RetryAfter hint). A panic counts as a retryable failure and its stack is
// kept in LastError.
//
// The context ends when the job's timeout passes, its lease is lost
// (context.Cause is ErrLeaseLost) or the queue stops hard. Delivery is at
// least once: a handler must tolerate running again for the same job.
type Handler interface {
	Handle(ctx context.Context, job *Job) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, job *Job) error { return f(ctx, job) }

// Queue accepts jobs durably and, once started, works them. Its methods
// are safe for concurrent use. Enqueue works without Start, so a process
// may only produce.
type Queue struct {
	store Store
	cfg   *Config

	mu       sync.RWMutex
	handlers map[string]Handler
	run      *runner // non-nil between Start and Stop

	lanes map[string]*lane
}

// New returns a queue on store. cfg may be nil for the defaults.
func New(store Store, cfg *Config) (*Queue, error) {
	if store == nil {
		return nil, errors.New("retry: New: missing store (try embedded.Open(path).Retry() or retry.NewMemoryStore())")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	q := &Queue{store: store, cfg: c, handlers: map[string]Handler{}, lanes: map[string]*lane{}}
	for name, lc := range c.Lanes {
		q.lanes[name] = newLane(name, lc)
	}
	return q, nil
}

// Store returns the store the queue runs on.
func (q *Queue) Store() Store { return q.store }

// Handle registers h for jobs of kind, replacing any earlier handler.
// Jobs of a kind with no handler fail and are retried, since another
// process may have one.
func (q *Queue) Handle(kind string, h Handler) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.handlers[kind] = h
}

// HandleFunc registers f for jobs of kind.
func (q *Queue) HandleFunc(kind string, f func(ctx context.Context, job *Job) error) {
	q.Handle(kind, HandlerFunc(f))
}

func (q *Queue) handler(kind string) Handler {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.handlers[kind]
}

// Enqueue makes one job durable and returns its ID. See EnqueueBatch.
func (q *Queue) Enqueue(ctx context.Context, p EnqueueParams) (EnqueueResult, error) {
	res, err := q.EnqueueBatch(ctx, []EnqueueParams{p})
	if err != nil {
		return EnqueueResult{}, err
	}
	return res[0], nil
}

// EnqueueBatch makes jobs durable together: when it returns nil, all are
// on disk (or committed); when it returns an error, none was accepted.
// Invalid jobs are refused with a *ValidationError (errors.Is
// ErrInvalidJob) naming the first bad job and field, and nothing is
// written. A store failure returns an error wrapping ErrNotAccepted.
func (q *Queue) EnqueueBatch(ctx context.Context, ps []EnqueueParams) ([]EnqueueResult, error) {
	return q.enqueue(ctx, q.store, ps)
}

// EnqueueTx enqueues through e, an Enqueuer bound to the host's own
// database transaction (postgres.DB.Tx), so the jobs exist if and only if
// the host's transaction commits. Validation is the same as EnqueueBatch.
// Observers hear "enqueued" when the insert is done, before the host
// commits.
func (q *Queue) EnqueueTx(ctx context.Context, e Enqueuer, ps []EnqueueParams) ([]EnqueueResult, error) {
	return q.enqueue(ctx, e, ps)
}

func (q *Queue) enqueue(ctx context.Context, e Enqueuer, ps []EnqueueParams) ([]EnqueueResult, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	now := q.cfg.Now()
	jobs := make([]*Job, len(ps))
	for i := range ps {
		j, err := q.newJob(i, &ps[i], now)
		if err != nil {
			return nil, err
		}
		jobs[i] = j
	}
	res, err := e.Enqueue(ctx, jobs, now.Add(-q.cfg.KeyRetention))
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, err // the caller's mistake, not the store's: no retry helps
		}
		return nil, fmt.Errorf("%w: %w", ErrNotAccepted, err)
	}
	woken := map[string]bool{}
	for i, r := range res {
		if r.Duplicate {
			continue
		}
		jobs[i].ID = r.ID
		q.emit(Event{Type: EventEnqueued, Job: jobs[i], At: now})
		if l := q.lanes[jobs[i].Lane]; l != nil && !woken[l.name] {
			woken[l.name] = true
			l.wake()
		}
	}
	return res, nil
}

func (q *Queue) newJob(i int, p *EnqueueParams, now time.Time) (*Job, error) {
	bad := func(kind error, field, format string, args ...any) error {
		return &ValidationError{Index: i, Field: field, Reason: fmt.Sprintf(format, args...), kind: kind}
	}
	if p.Kind == "" {
		return nil, bad(ErrInvalidJob, "Kind", "empty (it routes the job to a handler)")
	}
	if len(p.Payload) > q.cfg.MaxPayloadBytes {
		return nil, bad(ErrPayloadTooLarge, "Payload", "%d bytes, over the limit of %d (Config.MaxPayloadBytes)", len(p.Payload), q.cfg.MaxPayloadBytes)
	}
	lane := p.Lane
	if lane == "" {
		lane = DefaultLane
	}
	if _, ok := q.lanes[lane]; !ok {
		return nil, bad(ErrUnknownLane, "Lane", "%q is not in Config.Lanes, so nothing would run it", lane)
	}
	if p.MaxAttempts < 0 {
		return nil, bad(ErrInvalidJob, "MaxAttempts", "negative (%d)", p.MaxAttempts)
	}
	runAt := p.RunAt
	if runAt.IsZero() {
		runAt = now
	}
	for _, t := range []struct {
		field string
		t     time.Time
	}{{"RunAt", runAt}, {"ExpiresAt", p.ExpiresAt}} {
		if !t.t.IsZero() && (t.t.Before(MinTime) || t.t.After(MaxTime)) {
			return nil, bad(ErrInvalidJob, t.field, "%s is outside what every store can keep (%s to %s)", t.t.UTC().Format(time.RFC3339), MinTime.Format(time.DateOnly), MaxTime.Format(time.DateOnly))
		}
	}
	if len(p.Digest) > 128 {
		return nil, bad(ErrInvalidJob, "Digest", "%d bytes, over 128", len(p.Digest))
	}
	if !p.ExpiresAt.IsZero() && !p.ExpiresAt.After(runAt) {
		return nil, bad(ErrInvalidJob, "ExpiresAt", "%s is not after RunAt %s", p.ExpiresAt.Format(time.RFC3339Nano), runAt.Format(time.RFC3339Nano))
	}
	state := StateAvailable
	if runAt.After(now) {
		state = StateScheduled
	}
	return &Job{
		Kind:           p.Kind,
		Payload:        p.Payload,
		IdempotencyKey: p.IdempotencyKey,
		Digest:         p.Digest,
		Lane:           lane,
		Priority:       p.Priority,
		RunAt:          runAt,
		ExpiresAt:      p.ExpiresAt,
		MaxAttempts:    cmp.Or(p.MaxAttempts, q.cfg.DefaultMaxAttempts),
		State:          state,
		CreatedAt:      now,
		UpdatedAt:      now,
		Decoded:        p.Decoded,
	}, nil
}

func (q *Queue) emit(e Event) {
	if q.cfg.Observer != nil {
		q.cfg.Observer(e)
	}
}

// Job returns the job with that ID, or an error wrapping ErrNotFound.
// Completed and expired jobs are readable for Config.CompletedRetention.
func (q *Queue) Job(ctx context.Context, id int64) (*Job, error) {
	return q.store.Get(ctx, id)
}

// Jobs lists the jobs that match f.
func (q *Queue) Jobs(ctx context.Context, f Filter) ([]*Job, error) {
	return q.store.List(ctx, f)
}

// DeadLetters lists dead jobs that match f (its States are ignored).
func (q *Queue) DeadLetters(ctx context.Context, f Filter) ([]*Job, error) {
	f.States = []State{StateDead}
	return q.store.List(ctx, f)
}

// Requeue makes one dead or expired job available again with its
// attempts reset. It returns ErrNotFound when no such job is dead or
// expired.
func (q *Queue) Requeue(ctx context.Context, id int64) error {
	n, err := q.store.Requeue(ctx, Filter{IDs: []int64{id}}, q.cfg.Now())
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: no dead or expired job %d", ErrNotFound, id)
	}
	q.wakeAll()
	return nil
}

// RequeueMatching requeues every dead or expired job that matches f and
// returns how many.
func (q *Queue) RequeueMatching(ctx context.Context, f Filter) (int, error) {
	n, err := q.store.Requeue(ctx, f, q.cfg.Now())
	if n > 0 {
		q.wakeAll()
	}
	return n, err
}

// Purge deletes the finished jobs that match f (for dead letters, set
// f.States to []State{StateDead}) and returns how many.
func (q *Queue) Purge(ctx context.Context, f Filter) (int, error) {
	return q.store.Purge(ctx, f)
}

// Pause stops claiming jobs of lane (in every process sharing the store).
// Nothing is lost: enqueues are accepted and running jobs finish.
func (q *Queue) Pause(ctx context.Context, lane string) error {
	return q.store.SetPaused(ctx, lane, true)
}

// Resume undoes Pause.
func (q *Queue) Resume(ctx context.Context, lane string) error {
	if err := q.store.SetPaused(ctx, lane, false); err != nil {
		return err
	}
	if l := q.lanes[lane]; l != nil {
		l.wake()
	}
	return nil
}

// Stats returns per-lane counts and lag.
func (q *Queue) Stats(ctx context.Context) ([]LaneStats, error) {
	return q.store.Stats(ctx, q.cfg.Now())
}

func (q *Queue) wakeAll() {
	for _, l := range q.lanes {
		l.wake()
	}
}
