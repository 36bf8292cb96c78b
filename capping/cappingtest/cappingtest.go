// Package cappingtest is the conformance suite every capping.Store must
// pass. It imports only the standard library and capping.
//
//	func TestConformance(t *testing.T) {
//		cappingtest.Run(t, func(t *testing.T) capping.Store { ... }, nil)
//	}
package cappingtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/capping"
)

// Options declares what the store can do beyond the basics.
type Options struct {
	// Reopen closes s and opens the same store again (persistent stores).
	Reopen func(t *testing.T, s capping.Store) capping.Store
}

var (
	ctx  = context.Background()
	base = time.Date(2030, 3, 4, 5, 6, 7, 8000, time.UTC)
)

// Run runs the suite. open returns a new, empty store and arranges its
// Close with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) capping.Store, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s capping.Store)
	}{
		{"ReserveWithinLimit", testWithinLimit},
		{"AllOrNone", testAllOrNone},
		{"WindowStart", testSince},
		{"CommitAndRelease", testCommitRelease},
		{"LeaseExpiryCountsAsSent", testLease},
		{"AddIsIdempotent", testAdd},
		{"ReserveAgainWhilePending", testReserveAgain},
		{"ReserveAgainAfterCommit", testReserveAfterCommit},
		{"ConcurrentReservationsAreExact", testConcurrent},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	if opts.Reopen != nil {
		t.Run("Durability", func(t *testing.T) {
			t.Parallel()
			testDurability(t, open(t), opts.Reopen)
		})
	}
}

func reserve(t *testing.T, s capping.Store, id string, checks []capping.Check, at time.Time) int {
	t.Helper()
	failed, err := s.Reserve(ctx, id, checks, at, at.Add(time.Minute))
	if err != nil {
		t.Fatalf("Reserve(%s): %v", id, err)
	}
	return failed
}

func count(t *testing.T, s capping.Store, key string, since time.Time) int {
	t.Helper()
	slots, err := s.Slots(ctx, key, since)
	if err != nil {
		t.Fatalf("Slots(%s): %v", key, err)
	}
	return len(slots)
}

func one(key string, limit int) []capping.Check {
	return []capping.Check{{Key: key, Since: base.Add(-time.Hour), Limit: limit}}
}

func testWithinLimit(t *testing.T, s capping.Store) {
	for i := range 3 {
		if f := reserve(t, s, fmt.Sprint("r", i), one("daily|u1", 3), base.Add(time.Duration(i)*time.Second)); f != -1 {
			t.Fatalf("reservation %d refused by check %d, want taken", i, f)
		}
	}
	if f := reserve(t, s, "r3", one("daily|u1", 3), base.Add(5*time.Second)); f != 0 {
		t.Fatalf("fourth reservation of a limit of 3: got %d, want refused by check 0", f)
	}
	if n := count(t, s, "daily|u1", base.Add(-time.Hour)); n != 3 {
		t.Fatalf("%d slots, want 3", n)
	}
	if f := reserve(t, s, "other", one("daily|u2", 3), base); f != -1 {
		t.Fatalf("another user's counter is separate: got %d", f)
	}
	slots, err := s.Slots(ctx, "daily|u1", base.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !slots[0].At.Equal(base) || !slots[0].Pending || !slots[2].At.Equal(base.Add(2*time.Second)) {
		t.Fatalf("slots = %+v, want three pending at base, +1s, +2s", slots)
	}
}

func testAllOrNone(t *testing.T, s capping.Store) {
	checks := []capping.Check{
		{Key: "global|u1", Since: base.Add(-time.Hour), Limit: 5},
		{Key: "label|u1|l:promo", Since: base.Add(-time.Hour), Limit: 1},
	}
	if f := reserve(t, s, "a", checks, base); f != -1 {
		t.Fatalf("first: %d", f)
	}
	if f := reserve(t, s, "b", checks, base.Add(time.Second)); f != 1 {
		t.Fatalf("second: got %d, want refused by the label check (1)", f)
	}
	if n := count(t, s, "global|u1", base.Add(-time.Hour)); n != 1 {
		t.Fatalf("a refused reservation took a global slot: %d slots, want 1", n)
	}
}

func testSince(t *testing.T, s capping.Store) {
	reserve(t, s, "old", []capping.Check{{Key: "k|u", Since: base.Add(-time.Hour), Limit: 1}}, base)
	// A window that starts after the old slot does not see it.
	// (Microseconds: PostgreSQL keeps no finer time.)
	if f := reserve(t, s, "new", []capping.Check{{Key: "k|u", Since: base.Add(time.Microsecond), Limit: 1}}, base.Add(time.Hour)); f != -1 {
		t.Fatalf("slot before Since still counted: %d", f)
	}
	if f := reserve(t, s, "again", []capping.Check{{Key: "k|u", Since: base.Add(time.Hour), Limit: 1}}, base.Add(time.Hour)); f != 0 {
		t.Fatalf("slot exactly at Since not counted: %d", f)
	}
}

func testCommitRelease(t *testing.T, s capping.Store) {
	reserve(t, s, "a", one("k|u", 1), base)
	if err := s.Release(ctx, "a", base.Add(time.Second)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := count(t, s, "k|u", base.Add(-time.Hour)); n != 0 {
		t.Fatalf("released slot still counted: %d", n)
	}
	reserve(t, s, "b", one("k|u", 1), base)
	if err := s.Commit(ctx, "b"); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	slots, _ := s.Slots(ctx, "k|u", base.Add(-time.Hour))
	if len(slots) != 1 || slots[0].Pending {
		t.Fatalf("committed slot: %+v", slots)
	}
	for _, err := range []error{s.Commit(ctx, "b"), s.Release(ctx, "b", base), s.Commit(ctx, "never")} {
		if !errors.Is(err, capping.ErrUnknownReservation) {
			t.Fatalf("Commit/Release of a settled or unknown reservation: %v, want ErrUnknownReservation", err)
		}
	}
}

func testLease(t *testing.T, s capping.Store) {
	reserve(t, s, "a", one("k|u", 1), base) // lease until base+1m
	if err := s.Release(ctx, "a", base.Add(time.Minute)); !errors.Is(err, capping.ErrLeaseExpired) {
		t.Fatalf("Release after the lease: %v, want ErrLeaseExpired", err)
	}
	slots, _ := s.Slots(ctx, "k|u", base.Add(-time.Hour))
	if len(slots) != 1 || slots[0].Pending {
		t.Fatalf("after lease expiry the slot must count as sent: %+v", slots)
	}
}

// A caller that retries a reservation (same ID, still pending) takes no
// second slot; once settled, the ID is free again.
func testReserveAgain(t *testing.T, s capping.Store) {
	if f := reserve(t, s, "m1|u", one("k|u", 2), base); f != -1 {
		t.Fatalf("first: %d", f)
	}
	if f := reserve(t, s, "m1|u", one("k|u", 2), base.Add(time.Second)); f != -1 {
		t.Fatalf("the same pending reservation again: got %d, want -1 (already held)", f)
	}
	if n := count(t, s, "k|u", base.Add(-time.Hour)); n != 1 {
		t.Fatalf("%d slots after reserving the same ID twice, want 1", n)
	}
	if err := s.Commit(ctx, "m1|u"); err != nil {
		t.Fatalf("Commit of the retried reservation: %v", err)
	}
	if f := reserve(t, s, "m2|u", one("k|u", 2), base.Add(2*time.Second)); f != -1 {
		t.Fatalf("second message: %d", f)
	}
	if f := reserve(t, s, "m3|u", one("k|u", 2), base.Add(3*time.Second)); f != 0 {
		t.Fatalf("third message over a limit of 2: got %d, want 0", f)
	}
}

// testReserveAfterCommit: a message's reservation (an ID of ReserveFor,
// "m:...") reserved again after its Commit is already counted: allowed,
// with no new slot, even when its own slot filled the window. (A process
// that sent the message died before its job was completed; the retry must
// not be capped by the slot of the very message it repeats.)
func testReserveAfterCommit(t *testing.T, s capping.Store) {
	const id = "m:retried-message|u"
	if f := reserve(t, s, id, one("k|u", 1), base); f != -1 {
		t.Fatalf("first: %d", f)
	}
	if err := s.Commit(ctx, id); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if f := reserve(t, s, id, one("k|u", 1), base.Add(30*time.Second)); f != -1 {
		t.Fatalf("the committed message again: got %d, want -1 (already counted, allowed)", f)
	}
	if n := count(t, s, "k|u", base.Add(-time.Hour)); n != 1 {
		t.Fatalf("%d slots after the retry, want 1 (no new slot)", n)
	}
	if f := reserve(t, s, "m:another-message|u", one("k|u", 1), base.Add(time.Minute)); f != 0 {
		t.Fatalf("another message over the limit of 1: got %d, want 0", f)
	}
}

func testAdd(t *testing.T, s capping.Store) {
	for range 2 {
		if err := s.Add(ctx, "msg-1", []string{"g|u", "l|u|l:x"}, base); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add(ctx, "msg-2", []string{"g|u"}, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "g|u", base.Add(-time.Hour)); n != 2 {
		t.Fatalf("%d slots after adding msg-1 twice and msg-2, want 2", n)
	}
	if f := reserve(t, s, "r", one("g|u", 2), base.Add(2*time.Second)); f != 0 {
		t.Fatalf("added slots must count: %d", f)
	}
}

func testConcurrent(t *testing.T, s capping.Store) {
	const workers, limit = 16, 50
	checks := []capping.Check{
		{Key: "global|u", Since: base.Add(-time.Hour), Limit: limit},
		{Key: "label|u|l:a", Since: base.Add(-time.Hour), Limit: limit + 10},
	}
	var taken, committed atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				id := fmt.Sprintf("w%d-%d|u", w, i)
				f, err := s.Reserve(ctx, id, checks, base.Add(time.Duration(i)*time.Millisecond), base.Add(time.Hour))
				if err != nil {
					errc <- err
					return
				}
				if f != -1 {
					continue
				}
				taken.Add(1)
				if i%3 == 0 {
					err = s.Release(ctx, id, base)
				} else {
					err = s.Commit(ctx, id)
					committed.Add(1)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if committed.Load() != limit {
		t.Fatalf("%d committed, want exactly %d (the limit; %d workers × 40 tried, %d taken)", committed.Load(), limit, workers, taken.Load())
	}
	if n := count(t, s, "global|u", base.Add(-time.Hour)); n != limit {
		t.Fatalf("global counter %d, want %d", n, limit)
	}
	if n := count(t, s, "label|u|l:a", base.Add(-time.Hour)); n != limit {
		t.Fatalf("label counter %d, want %d (all or none with the global)", n, limit)
	}
}

func testClosed(t *testing.T, s capping.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx, "x", one("k|u", 1), base, base); !errors.Is(err, capping.ErrClosed) {
		t.Fatalf("Reserve after Close: %v, want ErrClosed", err)
	}
}

func testDurability(t *testing.T, s capping.Store, reopen func(*testing.T, capping.Store) capping.Store) {
	reserve(t, s, "committed", one("k|u", 3), base)
	if err := s.Commit(ctx, "committed"); err != nil {
		t.Fatal(err)
	}
	reserve(t, s, "pending", one("k|u", 3), base.Add(time.Second))
	s = reopen(t, s)
	if n := count(t, s, "k|u", base.Add(-time.Hour)); n != 2 {
		t.Fatalf("after reopen %d slots, want 2", n)
	}
	if err := s.Commit(ctx, "pending"); err != nil {
		t.Fatalf("committing a reservation made before reopen: %v", err)
	}
}
