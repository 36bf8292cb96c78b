package retry

import (
	"context"
	"time"
)

// Store is what the queue runs on: the embedded default
// (github.com/heraldhq/herald/embedded), the in-memory store of
// NewMemoryStore, and server-backed stores. Every implementation must pass
// the conformance suite in retry/storetest.
//
// Stores never read the clock: every time they need comes in the call, so
// the queue (and tests) control time. All methods are safe for concurrent
// use. Jobs returned are copies the caller may keep. A method that returns
// an error other than those named below has changed nothing it reported as
// done; the caller may retry it.
type Store interface {
	// Enqueue makes jobs durable, atomically: when it returns nil every
	// job is on stable storage (or committed in the database); when it
	// returns an error none is.
	//
	// A job whose IdempotencyKey was recorded at or after keysSince (by an
	// earlier call or earlier in the same call) is not inserted: its result
	// carries the existing job's ID and Duplicate. Keys recorded before
	// keysSince are forgotten and replaced. Stores keep each key's Digest;
	// when a job's key is recorded with a digest that Conflicts with the
	// job's, Enqueue stores nothing of the call and returns a
	// *ConflictError (ErrConflict).
	//
	// Jobs arrive in StateAvailable or StateScheduled with every field
	// set but ID; results are in the order of jobs.
	Enqueue(ctx context.Context, jobs []*Job, keysSince time.Time) ([]EnqueueResult, error)

	// Claim takes up to limit due jobs of lane, best first (Priority
	// descending, then RunAt, then ID). Scheduled jobs whose RunAt is at or
	// before now count as due. Each claimed job moves to StateRunning with
	// Attempt+1, a LeaseToken greater than any it had, and LeaseUntil =
	// leaseUntil. No job is claimed twice while its lease holds. A paused
	// lane claims nothing. The claims need not be durable: a claim lost in
	// a crash only makes the job available again.
	Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*Job, error)

	// ExtendLeases moves LeaseUntil to until for each lease that still
	// holds. It returns, in order, nil or ErrLeaseLost per lease.
	ExtendLeases(ctx context.Context, leases []Lease, until time.Time) ([]error, error)

	// Finish applies outcomes durably, each only if its lease still holds
	// (the job is running with that token). It returns, in order, nil or
	// ErrLeaseLost per outcome; a lost lease changes nothing.
	Finish(ctx context.Context, outcomes []Outcome) ([]error, error)

	// Rescue handles running jobs whose lease ended before now, as a crashed
	// worker left them: each becomes available again, or dead with
	// LastError "lease expired" if it has used all its attempts. It returns
	// the rescued jobs as they are after the change.
	Rescue(ctx context.Context, now time.Time) ([]*Job, error)

	// Get returns the job with that ID, or ErrNotFound.
	Get(ctx context.Context, id int64) (*Job, error)

	// List returns the jobs that match f in ID order, at most f.Limit
	// (all when Limit is 0).
	List(ctx context.Context, f Filter) ([]*Job, error)

	// Requeue makes the dead and expired jobs that match f available at
	// now with Attempt 0; jobs in other states are left alone. It returns
	// how many it requeued.
	Requeue(ctx context.Context, f Filter, now time.Time) (int, error)

	// Purge deletes the finished (completed, dead, expired) jobs that match
	// f and returns how many. Jobs still to run are never purged.
	Purge(ctx context.Context, f Filter) (int, error)

	// SetPaused pauses or resumes a lane durably. Jobs of a paused lane
	// are kept and enqueued as usual; they are not claimed.
	SetPaused(ctx context.Context, lane string, paused bool) error

	// Stats counts jobs per lane as of now. Lanes with no jobs but a
	// paused switch are included.
	Stats(ctx context.Context, now time.Time) ([]LaneStats, error)

	// Prune deletes completed and expired jobs finished before
	// finishedBefore, and idempotency keys recorded before keysBefore.
	// Dead jobs stay until purged or requeued. It returns the jobs deleted.
	Prune(ctx context.Context, finishedBefore, keysBefore time.Time) (int, error)

	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// MinTime and MaxTime bound every time the queue hands a store (RunAt,
// ExpiresAt): the embedded store keeps int64 nanoseconds, which end in
// April 2262, and 2200 leaves room for any arithmetic on top. A time
// outside is refused at enqueue, never stored to overflow and expire.
var (
	MinTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Notifier is an optional ability of a store shared by many processes:
// Listen calls wake(lane) whenever a job becomes due in lane (an enqueue in
// any process), until ctx ends, so idle workers start at once instead of
// at their next poll. It returns when ctx ends; a store reconnects on its
// own after transient failures. Queue.Start uses it when the store has it.
type Notifier interface {
	Listen(ctx context.Context, wake func(lane string)) error
}

// Enqueuer is the part of a Store that makes jobs durable. A store that
// can join a host's own transaction returns one bound to that transaction
// (see Queue.EnqueueTx).
type Enqueuer interface {
	Enqueue(ctx context.Context, jobs []*Job, keysSince time.Time) ([]EnqueueResult, error)
}

// EnqueuerFunc is an Enqueuer made of a function: a store's Enqueuer that
// writes more in the same write (a campaign's checkpoint, Inbox items).
type EnqueuerFunc func(ctx context.Context, jobs []*Job, keysSince time.Time) ([]EnqueueResult, error)

// Enqueue implements Enqueuer.
func (f EnqueuerFunc) Enqueue(ctx context.Context, jobs []*Job, keysSince time.Time) ([]EnqueueResult, error) {
	return f(ctx, jobs, keysSince)
}

// Filter selects jobs for List, Requeue and Purge. Empty fields match
// everything.
type Filter struct {
	IDs    []int64
	Lane   string
	Kind   string
	States []State
	// AfterID skips jobs with an ID at or below it (for paging).
	AfterID int64
	// Limit caps the jobs List returns (0: no cap).
	Limit int
}

// Match reports whether j passes the filter (Limit aside). Stores may use
// it; it is the reference for what a Filter means.
func (f *Filter) Match(j *Job) bool {
	if j.ID <= f.AfterID {
		return false
	}
	if f.Lane != "" && j.Lane != f.Lane {
		return false
	}
	if f.Kind != "" && j.Kind != f.Kind {
		return false
	}
	if len(f.IDs) > 0 && !containsID(f.IDs, j.ID) {
		return false
	}
	if len(f.States) > 0 && !containsState(f.States, j.State) {
		return false
	}
	return true
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func containsState(states []State, s State) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// LaneStats is the state of one lane.
type LaneStats struct {
	Lane      string
	Paused    bool
	Ready     int // due now: available, or scheduled with RunAt passed
	Scheduled int // waiting for a future RunAt
	Running   int // in flight
	Completed int // retained completed jobs
	Dead      int
	Expired   int
	// OldestReady is how long the oldest due job has waited since its
	// RunAt: the lag an operator alerts on. Zero when nothing is due.
	OldestReady time.Duration
}

// KeyFinder is a Store that finds a job by its idempotency key (within
// the queue's key retention). The memory, embedded and PostgreSQL stores
// implement it; heraldd's messages API uses it for GET by key.
type KeyFinder interface {
	// JobIDByKey returns the ID of the job enqueued with key, or
	// ErrNotFound.
	JobIDByKey(ctx context.Context, key string) (int64, error)
}
