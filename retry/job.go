package retry

import (
	"fmt"
	"time"
)

// State is where a job is in its life.
//
//	enqueue ──► available ──claim──► running ──► completed
//	   │           ▲                   │  │ └──► dead (permanent error or attempts used up)
//	   └► scheduled┘◄── retry / snooze ┘  └────► expired (past ExpiresAt, never run)
//
// Dead and expired jobs can be requeued; completed and expired jobs are
// pruned after Config.CompletedRetention.
type State uint8

// The states of a job. Their numeric values are stored on disk: never renumber.
const (
	StateAvailable State = 1 // due and waiting for a worker
	StateScheduled State = 2 // waiting for RunAt (first run, retry or snooze)
	StateRunning   State = 3 // claimed by a worker under a lease
	StateCompleted State = 4 // the handler succeeded
	StateDead      State = 5 // a dead letter: permanent error or attempts used up
	StateExpired   State = 6 // ExpiresAt passed before it could run; never run again
)

var stateNames = [...]string{
	StateAvailable: "available",
	StateScheduled: "scheduled",
	StateRunning:   "running",
	StateCompleted: "completed",
	StateDead:      "dead",
	StateExpired:   "expired",
}

func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Finished reports whether s is a final state (completed, dead or expired).
func (s State) Finished() bool {
	return s == StateCompleted || s == StateDead || s == StateExpired
}

// Job is one unit of work as the store keeps it.
type Job struct {
	ID             int64  // assigned by the store, increasing
	Kind           string // routes the job to the handler registered for it
	Payload        []byte // opaque to the queue
	IdempotencyKey string // optional; a second enqueue with the same key creates nothing
	// Digest fingerprints the work (see EnqueueParams.Digest). Stores keep
	// it with the idempotency key; Get and List need not return it.
	Digest      string
	Lane        string    // named queue with its own concurrency, rate and pause switch
	Priority    int       // higher runs first among due jobs of a lane
	RunAt       time.Time // not run before this time
	ExpiresAt   time.Time // deliver-by: not run at or after this time (zero: never expires)
	MaxAttempts int       // runs allowed before the job is dead
	Attempt     int       // runs started so far (a snooze or a release does not count)
	State       State
	LastError   string // the last failure, with the stack for a panic
	// Skipped marks a job completed by Skip: the handler decided it must
	// not run (LastError says why). See Skipped.
	Skipped bool

	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time // when it reached completed, dead or expired

	// LeaseToken is the fencing token of the current claim. It grows with
	// every claim of this job; a worker holding an older token cannot
	// finish, retry or extend the job.
	LeaseToken int64
	// LeaseUntil is when the current claim lapses unless extended.
	LeaseUntil time.Time

	// Decoded is the producer's in-memory form of Payload
	// (EnqueueParams.Decoded), never stored. A store that keeps jobs in
	// memory (the embedded store) may hand it back with a job claimed in
	// the process that enqueued it, so the handler skips decoding the
	// payload; from any other claim it is nil. Handlers must treat it as
	// read-only and fall back to Payload when it is nil.
	Decoded any
}

// Clone returns a deep copy of j.
func (j *Job) Clone() *Job {
	c := *j
	c.Payload = append([]byte(nil), j.Payload...)
	return &c
}

// EnqueueParams describes a job to enqueue. Only Kind is required.
type EnqueueParams struct {
	Kind    string
	Payload []byte
	// IdempotencyKey makes the enqueue safe to repeat: within
	// Config.KeyRetention a second enqueue with the same key returns the
	// first job's ID and creates nothing.
	IdempotencyKey string
	// Digest fingerprints the work the key stands for (a hash of the
	// canonical message, at most 128 bytes). A second enqueue with the
	// same key and the same digest (or either without one) is a duplicate;
	// with another digest it fails with ErrConflict and stores nothing.
	Digest string
	// Lane defaults to "default". It must be a lane in Config.Lanes.
	Lane string
	// Priority orders due jobs within a lane: higher first. Default 0.
	Priority int
	// RunAt delays the first run. Zero means now.
	RunAt time.Time
	// ExpiresAt is the deliver-by time: a job not started before it is
	// marked expired and reported instead of run. Zero means never.
	ExpiresAt time.Time
	// MaxAttempts defaults to Config.DefaultMaxAttempts.
	MaxAttempts int
	// Decoded is Payload already decoded, kept only in memory (see
	// Job.Decoded): the producer must not change it after the call.
	Decoded any
}

// EnqueueResult is the answer to one enqueued job.
type EnqueueResult struct {
	ID int64
	// Duplicate is true when the idempotency key was already seen: ID is
	// then the existing job's, and nothing was created.
	Duplicate bool
}

// Lease identifies one claim of a job: its ID and the fencing token the
// claim received.
type Lease struct {
	ID    int64
	Token int64
}

// Outcome is a worker's verdict on a running job, applied by Store.Finish.
type Outcome struct {
	Lease
	// State is the job's next state:
	//   - StateCompleted, StateDead, StateExpired: final; FinishedAt = At.
	//   - StateScheduled: run again at RunAt (a retry or a snooze).
	//   - StateAvailable: release the job unrun (shutdown); RunAt = At.
	State State
	// RunAt is the next run for StateScheduled.
	RunAt time.Time
	// Error becomes LastError when not empty.
	Error string
	// Uncount takes back the attempt the claim counted (snooze, release).
	Uncount bool
	// Skip marks a completion by Skip (State is StateCompleted): the job
	// did not run. Stores keep it as Job.Skipped.
	Skip bool
	// At is the time of the decision.
	At time.Time
}
