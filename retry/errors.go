package retry

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors callers branch on, checked with errors.Is.
var (
	// ErrInvalidJob: the job was refused before anything was written. The
	// error is a *ValidationError naming the field.
	ErrInvalidJob = errors.New("retry: invalid job")
	// ErrUnknownLane: the job names a lane that is not in Config.Lanes.
	// It wraps ErrInvalidJob.
	ErrUnknownLane = fmt.Errorf("%w: unknown lane", ErrInvalidJob)
	// ErrPayloadTooLarge: the payload is over Config.MaxPayloadBytes. It
	// wraps ErrInvalidJob.
	ErrPayloadTooLarge = fmt.Errorf("%w: payload too large", ErrInvalidJob)
	// ErrNotAccepted: the store could not make the job durable, so it was
	// not accepted. Retrying the call with the same idempotency key is safe.
	ErrNotAccepted = errors.New("retry: not accepted (the store failed; retry with the same idempotency key)")
	// ErrLeaseLost: the claim's lease ended or was taken over; the worker
	// holding it may no longer finish, retry or extend the job.
	ErrLeaseLost = errors.New("retry: lease lost")
	// ErrNotFound: no job with that ID.
	ErrNotFound = errors.New("retry: job not found")
	// ErrClosed: the store or queue was closed.
	ErrClosed = errors.New("retry: closed")
	// ErrConflict: an idempotency key already names a job with another
	// Digest: the same key was reused for different work. Nothing was
	// stored (for a batch: none of its jobs). The error is a
	// *ConflictError; retrying will not help.
	ErrConflict = errors.New("retry: idempotency key reused for a different job")
)

// ConflictError says which job's key conflicts, and with which job.
type ConflictError struct {
	Index int    // position in the batch
	Key   string // the idempotency key
	ID    int64  // the existing job's ID, when the store knows it
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("retry: job %d: idempotency key %q already names a different job", e.Index, e.Key)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// ValidationError says which field of which job was refused.
type ValidationError struct {
	Index  int    // position in a batch (0 for a single enqueue)
	Field  string // e.g. "Kind", "Payload", "ExpiresAt"
	Reason string
	kind   error // the sentinel it wraps
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("retry: invalid job %d: %s: %s", e.Index, e.Field, e.Reason)
}

// Unwrap returns the sentinel: ErrInvalidJob, ErrUnknownLane or
// ErrPayloadTooLarge.
func (e *ValidationError) Unwrap() error { return e.kind }

// Permanent marks a handler's error as not worth retrying: the job goes
// straight to the dead letters. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Skip returned by a handler completes the job without doing its work,
// keeping "skipped: " + reason as its LastError: the handler decided the
// job must not run (a frequency cap, a suppressed recipient), which is
// neither a success nor a failure to retry. Observers hear EventSkipped;
// Stats count it with the completed jobs.
func Skip(reason string) error { return &skipError{reason} }

type skipError struct{ reason string }

func (e *skipError) Error() string { return "skipped: " + e.reason }

// Skipped reports whether a finished job was completed by Skip, and why.
// It reads the job's Skipped field, which every store keeps; the reason
// is the text Skip was given.
func Skipped(j *Job) (reason string, ok bool) {
	if j.State != StateCompleted || !j.Skipped {
		return "", false
	}
	return strings.TrimPrefix(j.LastError, "skipped: "), true
}

// Snooze returned by a handler reschedules the job after d without
// counting the attempt and without recording an error.
func Snooze(d time.Duration) error { return &snoozeError{d} }

type snoozeError struct{ d time.Duration }

func (e *snoozeError) Error() string { return fmt.Sprintf("snooze %s", e.d) }

// RetryAfter marks err as retryable no sooner than d, overriding the
// backoff policy (a provider's Retry-After). RetryAfter(nil, d) is nil.
//
// Any error in the chain with a method RetryAfterHint() time.Duration that
// returns a positive duration has the same effect, so provider errors can
// carry their hint without importing this package.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err, d}
}

type retryAfterError struct {
	err error
	d   time.Duration
}

func (e *retryAfterError) Error() string                 { return e.err.Error() }
func (e *retryAfterError) Unwrap() error                 { return e.err }
func (e *retryAfterError) RetryAfterHint() time.Duration { return e.d }

type retryAfterHinter interface{ RetryAfterHint() time.Duration }

// retryHint finds the first positive RetryAfterHint in err's chain.
func retryHint(err error) time.Duration {
	for err != nil {
		if h, ok := err.(retryAfterHinter); ok {
			if d := h.RetryAfterHint(); d > 0 {
				return d
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if d := retryHint(e); d > 0 {
					return d
				}
			}
			return 0
		default:
			return 0
		}
	}
	return 0
}

// PanicError is the retryable failure recorded when a handler panics.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %v\n%s", e.Value, e.Stack)
}
