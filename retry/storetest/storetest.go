// Package storetest is the conformance suite every retry.Store must pass.
//
// A store's own tests call Run with a function that opens an empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) retry.Store {
//			s, err := mystore.Open(...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		}, &storetest.Options{Reopen: ...})
//	}
//
// The suite drives the Store interface directly, with explicit times, so it
// needs no clock. It imports only the standard library and retry. A change
// to what a Store must do goes into this suite first.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Options declares what the store under test can do beyond the basics.
type Options struct {
	// Reopen closes s and opens the same store again. Set it for
	// persistent stores: the suite then checks that everything survives.
	Reopen func(t *testing.T, s retry.Store) retry.Store
	// ConcurrentJobs is how many jobs the concurrent-claim test uses.
	// Default 10,000.
	ConcurrentJobs int
}

// base is the suite's epoch: whole microseconds, so stores that keep
// microseconds (PostgreSQL) compare equal.
var base = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)

// Run runs the suite. open must return a new, empty store and arrange
// its Close with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) retry.Store, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	if opts.ConcurrentJobs == 0 {
		opts.ConcurrentJobs = 10_000
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s retry.Store)
	}{
		{"EnqueueAndGet", testEnqueueAndGet},
		{"IdempotentEnqueue", testIdempotentEnqueue},
		{"IdempotentEnqueueConcurrent", testIdempotentConcurrent},
		{"FindByKey", testFindByKey},
		{"IdempotencyKeyRetention", testKeyRetention},
		{"IdempotencyConflict", testConflict},
		{"ClaimOrder", testClaimOrder},
		{"ScheduledNotClaimedEarly", testScheduled},
		{"LanesAreSeparate", testLanes},
		{"LeaseExpiryAndRescue", testRescue},
		{"RescueExhaustedIsDead", testRescueDead},
		{"Fencing", testFencing},
		{"ExtendLeases", testExtend},
		{"ConcurrentClaimsNeverDouble", func(t *testing.T, s retry.Store) { testConcurrentClaims(t, s, opts.ConcurrentJobs) }},
		{"RetryScheduling", testRetryScheduling},
		{"SnoozeAndRelease", testSnoozeRelease},
		{"CompletedWithANote", testCompletedNote},
		{"DeadLettersAndRequeue", testDeadRequeue},
		{"Expiry", testExpiry},
		{"Purge", testPurge},
		{"Pause", testPause},
		{"Retention", testRetention},
		{"Stats", testStats},
		{"List", testList},
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

var ctx = context.Background()

func job(kind string, mods ...func(*retry.Job)) *retry.Job {
	j := &retry.Job{
		Kind: kind, Payload: []byte(`{"k":"` + kind + `"}`), Lane: "default",
		RunAt: base, MaxAttempts: 3, State: retry.StateAvailable,
		CreatedAt: base, UpdatedAt: base,
	}
	for _, m := range mods {
		m(j)
	}
	return j
}

func enqueue(t *testing.T, s retry.Store, jobs ...*retry.Job) []int64 {
	t.Helper()
	res, err := s.Enqueue(ctx, jobs, base.Add(-time.Hour))
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if len(res) != len(jobs) {
		t.Fatalf("Enqueue: %d results for %d jobs", len(res), len(jobs))
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.ID
	}
	return ids
}

func claim(t *testing.T, s retry.Store, lane string, limit int, now time.Time) []*retry.Job {
	t.Helper()
	js, err := s.Claim(ctx, lane, limit, now, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return js
}

func finish(t *testing.T, s retry.Store, outs ...retry.Outcome) []error {
	t.Helper()
	errs, err := s.Finish(ctx, outs)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if len(errs) != len(outs) {
		t.Fatalf("Finish: %d results for %d outcomes", len(errs), len(outs))
	}
	return errs
}

func get(t *testing.T, s retry.Store, id int64) *retry.Job {
	t.Helper()
	j, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return j
}

func lease(j *retry.Job) retry.Lease { return retry.Lease{ID: j.ID, Token: j.LeaseToken} }

func done(j *retry.Job, at time.Time) retry.Outcome {
	return retry.Outcome{Lease: lease(j), State: retry.StateCompleted, At: at}
}

func ids(js []*retry.Job) []int64 {
	out := make([]int64, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

func wantIDs(t *testing.T, what string, got []*retry.Job, want ...int64) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s: got jobs %v, want %v", what, g, want)
	}
}

func sameTime(t *testing.T, field string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %v, want %v", field, got, want)
	}
}

func testEnqueueAndGet(t *testing.T, s retry.Store) {
	in := job("email", func(j *retry.Job) {
		j.Payload = []byte{0, 1, 2, 0xff}
		j.IdempotencyKey = "key-1"
		j.Priority = 7
		j.RunAt = base.Add(time.Second)
		j.State = retry.StateScheduled
		j.ExpiresAt = base.Add(time.Hour)
		j.MaxAttempts = 9
	})
	id := enqueue(t, s, in)[0]
	if id <= 0 {
		t.Fatalf("ID = %d, want > 0", id)
	}
	id2 := enqueue(t, s, job("email"))[0]
	if id2 <= id {
		t.Fatalf("IDs must increase: %d then %d", id, id2)
	}
	got := get(t, s, id)
	if got.ID != id || got.Kind != "email" || string(got.Payload) != string(in.Payload) ||
		got.IdempotencyKey != "key-1" || got.Lane != "default" || got.Priority != 7 ||
		got.MaxAttempts != 9 || got.Attempt != 0 || got.State != retry.StateScheduled || got.LastError != "" {
		t.Fatalf("Get = %+v, fields differ from %+v", got, in)
	}
	sameTime(t, "RunAt", got.RunAt, in.RunAt)
	sameTime(t, "ExpiresAt", got.ExpiresAt, in.ExpiresAt)
	sameTime(t, "CreatedAt", got.CreatedAt, base)
	if !got.FinishedAt.IsZero() {
		t.Fatalf("FinishedAt = %v, want zero", got.FinishedAt)
	}
	if j := get(t, s, id2); !j.ExpiresAt.IsZero() {
		t.Fatalf("ExpiresAt of a job without one = %v, want zero", j.ExpiresAt)
	}
	if _, err := s.Get(ctx, id2+1000); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("Get(unknown) error = %v, want ErrNotFound", err)
	}
}

// testFindByKey: a store that finds jobs by key (retry.KeyFinder) finds
// the first job of a key, and no job for an unknown key.
func testFindByKey(t *testing.T, s retry.Store) {
	kf, ok := s.(retry.KeyFinder)
	if !ok {
		t.Skip("the store does not implement retry.KeyFinder")
	}
	id := enqueue(t, s, job("push", func(j *retry.Job) { j.IdempotencyKey = "order-42" }))[0]
	enqueue(t, s, job("push", func(j *retry.Job) { j.IdempotencyKey = "order-43" }))
	got, err := kf.JobIDByKey(ctx, "order-42")
	if err != nil || got != id {
		t.Fatalf("JobIDByKey(order-42) = %d, %v; want %d", got, err, id)
	}
	if _, err := kf.JobIDByKey(ctx, "nope"); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("JobIDByKey(nope): %v, want ErrNotFound", err)
	}
}

func testIdempotentEnqueue(t *testing.T, s retry.Store) {
	first := enqueue(t, s, job("push", func(j *retry.Job) { j.IdempotencyKey = "k" }))[0]
	res, err := s.Enqueue(ctx, []*retry.Job{
		job("push", func(j *retry.Job) { j.IdempotencyKey = "k" }),
		job("push", func(j *retry.Job) { j.IdempotencyKey = "other" }),
		job("push", func(j *retry.Job) { j.IdempotencyKey = "other" }),
		job("push"), job("push"),
	}, base.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate || res[0].ID != first {
		t.Fatalf("repeat key: got %+v, want duplicate of %d", res[0], first)
	}
	if res[1].Duplicate || !res[2].Duplicate || res[2].ID != res[1].ID {
		t.Fatalf("same key twice in a batch: got %+v and %+v", res[1], res[2])
	}
	if res[3].Duplicate || res[4].Duplicate || res[3].ID == res[4].ID {
		t.Fatalf("jobs without keys must not collide: %+v %+v", res[3], res[4])
	}
	all, err := s.List(ctx, retry.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("%d jobs stored, want 4", len(all))
	}
}

func testIdempotentConcurrent(t *testing.T, s retry.Store) {
	const n = 1000
	var wg sync.WaitGroup
	got := make([]retry.EnqueueResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Enqueue(ctx, []*retry.Job{job("push", func(j *retry.Job) { j.IdempotencyKey = "same" })}, base.Add(-time.Hour))
			if err == nil {
				got[i] = r[0]
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("enqueue %d: %v", i, errs[i])
		}
		if got[i].ID != got[0].ID {
			t.Fatalf("enqueue %d returned ID %d, enqueue 0 returned %d", i, got[i].ID, got[0].ID)
		}
		if !got[i].Duplicate {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d enqueues created a job, want exactly 1", created)
	}
	all, _ := s.List(ctx, retry.Filter{})
	if len(all) != 1 {
		t.Fatalf("%d jobs stored, want 1", len(all))
	}
}

// testConflict: a key reused with another digest stores nothing of the
// call (not even its other, new jobs) and says ErrConflict; the same
// digest, or a job without one, is a plain duplicate.
func testConflict(t *testing.T, s retry.Store) {
	withKey := func(key, digest string) func(*retry.Job) {
		return func(j *retry.Job) { j.IdempotencyKey, j.Digest = key, digest }
	}
	ids := enqueue(t, s, job("a", withKey("order-1", "d1")))
	res, err := s.Enqueue(ctx, []*retry.Job{job("a", withKey("order-1", "d1"))}, base.Add(-time.Hour))
	if err != nil || len(res) != 1 || !res[0].Duplicate || res[0].ID != ids[0] {
		t.Fatalf("same key, same digest: %v %+v, want a duplicate of %d", err, res, ids[0])
	}
	res, err = s.Enqueue(ctx, []*retry.Job{job("a", withKey("order-1", ""))}, base.Add(-time.Hour))
	if err != nil || len(res) != 1 || !res[0].Duplicate {
		t.Fatalf("same key, no digest: %v %+v, want a duplicate", err, res)
	}
	_, err = s.Enqueue(ctx, []*retry.Job{job("new", withKey("order-2", "d2")), job("b", withKey("order-1", "other"))}, base.Add(-time.Hour))
	var ce *retry.ConflictError
	if !errors.Is(err, retry.ErrConflict) || !errors.As(err, &ce) || ce.Key != "order-1" {
		t.Fatalf("same key, other digest: %v, want a *ConflictError for order-1", err)
	}
	// Nothing of the conflicting call was stored: order-2 is still free.
	res, err = s.Enqueue(ctx, []*retry.Job{job("new", withKey("order-2", "d3"))}, base.Add(-time.Hour))
	if err != nil || res[0].Duplicate {
		t.Fatalf("order-2 after the refused call: %v %+v, want a new job (the refused call stored nothing)", err, res)
	}
	js, err := s.List(ctx, retry.Filter{})
	if err != nil || len(js) != 2 {
		t.Fatalf("List: %v, %d jobs, want 2", err, len(js))
	}
	// The same key twice in one call with different digests.
	_, err = s.Enqueue(ctx, []*retry.Job{job("c", withKey("order-3", "x")), job("c", withKey("order-3", "y"))}, base.Add(-time.Hour))
	if !errors.Is(err, retry.ErrConflict) {
		t.Fatalf("one call, one key, two digests: %v, want ErrConflict", err)
	}
	// Past retention the key is forgotten: another digest is new work.
	res, err = s.Enqueue(ctx, []*retry.Job{job("a", withKey("order-1", "later"))}, base.Add(time.Hour))
	if err != nil || res[0].Duplicate {
		t.Fatalf("after key retention: %v %+v, want a new job", err, res)
	}
}

func testKeyRetention(t *testing.T, s retry.Store) {
	old := enqueue(t, s, job("push", func(j *retry.Job) { j.IdempotencyKey = "k" }))[0]
	// A key recorded before keysSince is forgotten: a new job is made.
	res, err := s.Enqueue(ctx, []*retry.Job{job("push", func(j *retry.Job) {
		j.IdempotencyKey = "k"
		j.CreatedAt = base.Add(48 * time.Hour)
	})}, base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Duplicate || res[0].ID == old {
		t.Fatalf("key past retention: got %+v, want a new job", res[0])
	}
	// The new job now owns the key.
	res, err = s.Enqueue(ctx, []*retry.Job{job("push", func(j *retry.Job) { j.IdempotencyKey = "k" })}, base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate || res[0].ID == old {
		t.Fatalf("key re-recorded: got %+v, want duplicate of the new job", res[0])
	}
}

func testClaimOrder(t *testing.T, s retry.Store) {
	id := enqueue(t, s,
		job("a", func(j *retry.Job) { j.RunAt = base.Add(-time.Second) }),                  // 0
		job("b", func(j *retry.Job) { j.Priority = 5; j.RunAt = base }),                    // 1
		job("c", func(j *retry.Job) { j.RunAt = base.Add(-2 * time.Second) }),              // 2
		job("d", func(j *retry.Job) { j.Priority = 5; j.RunAt = base.Add(-time.Second) }),  // 3
		job("e", func(j *retry.Job) { j.Priority = -1; j.RunAt = base.Add(-time.Minute) }), // 4
		job("f", func(j *retry.Job) { j.RunAt = base.Add(-time.Second) }),                  // 5
	)
	var got []int64
	for {
		js := claim(t, s, "default", 2, base)
		if len(js) == 0 {
			break
		}
		slices.SortFunc(js, func(a, b *retry.Job) int {
			// A batch may come back in any order; the suite checks the set
			// per batch and the order across batches.
			return indexOf(id, a.ID) - indexOf(id, b.ID)
		})
		for _, j := range js {
			if j.State != retry.StateRunning || j.Attempt != 1 || j.LeaseToken <= 0 {
				t.Fatalf("claimed job %+v: want running, attempt 1, a lease token", j)
			}
			sameTime(t, "LeaseUntil", j.LeaseUntil, base.Add(time.Minute))
			got = append(got, j.ID)
		}
	}
	want := []int64{id[3], id[1], id[2], id[0], id[5], id[4]}
	gotSet := func(a []int64, i int) []int64 { s := slices.Clone(a[i : i+2]); slices.Sort(s); return s }
	for i := 0; i < 6; i += 2 {
		if !slices.Equal(gotSet(got, i), gotSet(want, i)) {
			t.Fatalf("claim order: got %v, want %v (priority desc, then run-at, then ID)", got, want)
		}
	}
}

func indexOf(ids []int64, id int64) int { return slices.Index(ids, id) }

func testScheduled(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("later", func(j *retry.Job) {
		j.RunAt = base.Add(time.Minute)
		j.State = retry.StateScheduled
		j.Priority = 10
	}), job("now"))
	wantIDs(t, "claim before run-at", claim(t, s, "default", 10, base), id[1])
	wantIDs(t, "claim just before run-at", claim(t, s, "default", 10, base.Add(time.Minute-time.Microsecond)))
	wantIDs(t, "claim at run-at", claim(t, s, "default", 10, base.Add(time.Minute)), id[0])
}

func testLanes(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("a", func(j *retry.Job) { j.Lane = "campaign" }), job("b", func(j *retry.Job) { j.Lane = "transactional" }))
	wantIDs(t, "claim transactional", claim(t, s, "transactional", 10, base), id[1])
	wantIDs(t, "claim unknown lane", claim(t, s, "nope", 10, base))
	wantIDs(t, "claim campaign", claim(t, s, "campaign", 10, base), id[0])
}

func testRescue(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x"))[0]
	j := claim(t, s, "default", 1, base)[0]
	if r, err := s.Rescue(ctx, base.Add(59*time.Second)); err != nil || len(r) != 0 {
		t.Fatalf("Rescue before the lease ends = %v, %v; want nothing", ids(r), err)
	}
	wantIDs(t, "claim while leased", claim(t, s, "default", 1, base.Add(59*time.Second)))
	r, err := s.Rescue(ctx, base.Add(61*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", r, id)
	if r[0].State != retry.StateAvailable || r[0].LastError == "" {
		t.Fatalf("rescued job = %+v, want available with LastError", r[0])
	}
	again := claim(t, s, "default", 1, base.Add(62*time.Second))
	wantIDs(t, "claim after rescue", again, id)
	if again[0].Attempt != 2 || again[0].LeaseToken <= j.LeaseToken {
		t.Fatalf("second claim: attempt %d token %d; want attempt 2 and a token above %d", again[0].Attempt, again[0].LeaseToken, j.LeaseToken)
	}
}

func testRescueDead(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x", func(j *retry.Job) { j.MaxAttempts = 1 }))[0]
	claim(t, s, "default", 1, base)
	r, err := s.Rescue(ctx, base.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", r, id)
	if g := get(t, s, id); g.State != retry.StateDead {
		t.Fatalf("job with attempts used up after rescue: state %s, want dead", g.State)
	}
}

func testFencing(t *testing.T, s retry.Store) {
	enqueue(t, s, job("x"))
	stale := claim(t, s, "default", 1, base)[0]
	if _, err := s.Rescue(ctx, base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	fresh := claim(t, s, "default", 1, base.Add(2*time.Minute))[0]
	for _, st := range []retry.State{retry.StateCompleted, retry.StateScheduled, retry.StateDead, retry.StateAvailable} {
		o := retry.Outcome{Lease: lease(stale), State: st, RunAt: base.Add(time.Hour), At: base.Add(3 * time.Minute)}
		if errs := finish(t, s, o); !errors.Is(errs[0], retry.ErrLeaseLost) {
			t.Fatalf("Finish(%s) with a stale token: %v, want ErrLeaseLost", st, errs[0])
		}
	}
	if errs, err := s.ExtendLeases(ctx, []retry.Lease{lease(stale)}, base.Add(time.Hour)); err != nil || !errors.Is(errs[0], retry.ErrLeaseLost) {
		t.Fatalf("ExtendLeases with a stale token: %v %v, want ErrLeaseLost", errs, err)
	}
	if g := get(t, s, fresh.ID); g.State != retry.StateRunning || g.LeaseToken != fresh.LeaseToken {
		t.Fatalf("after stale calls the job is %s with token %d; want running with %d", g.State, g.LeaseToken, fresh.LeaseToken)
	}
	if errs := finish(t, s, done(fresh, base.Add(3*time.Minute))); errs[0] != nil {
		t.Fatalf("Finish with the current token: %v", errs[0])
	}
	if errs := finish(t, s, done(fresh, base.Add(3*time.Minute))); !errors.Is(errs[0], retry.ErrLeaseLost) {
		t.Fatalf("second Finish of a finished job: %v, want ErrLeaseLost", errs[0])
	}
	if errs := finish(t, s, retry.Outcome{Lease: retry.Lease{ID: 1 << 40, Token: 1}, State: retry.StateCompleted, At: base}); !errors.Is(errs[0], retry.ErrLeaseLost) {
		t.Fatalf("Finish of an unknown job: %v, want ErrLeaseLost", errs[0])
	}
}

func testExtend(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x"))[0]
	j := claim(t, s, "default", 1, base)[0]
	errs, err := s.ExtendLeases(ctx, []retry.Lease{lease(j)}, base.Add(10*time.Minute))
	if err != nil || errs[0] != nil {
		t.Fatalf("ExtendLeases: %v %v", errs, err)
	}
	if r, _ := s.Rescue(ctx, base.Add(5*time.Minute)); len(r) != 0 {
		t.Fatalf("rescued %v although its lease was extended", ids(r))
	}
	sameTime(t, "LeaseUntil", get(t, s, id).LeaseUntil, base.Add(10*time.Minute))
}

func testConcurrentClaims(t *testing.T, s retry.Store, n int) {
	const workers = 8
	batch := make([]*retry.Job, 0, 500)
	for i := range n {
		batch = append(batch, job(fmt.Sprint("k", i%7), func(j *retry.Job) { j.Priority = i % 3 }))
		if len(batch) == cap(batch) || i == n-1 {
			enqueue(t, s, batch...)
			batch = batch[:0]
		}
	}
	var mu sync.Mutex
	seen := make(map[int64]int, n)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				js, err := s.Claim(ctx, "default", 10, base, base.Add(time.Hour))
				if err != nil {
					errc <- err
					return
				}
				if len(js) == 0 {
					return
				}
				mu.Lock()
				for _, j := range js {
					seen[j.ID]++
				}
				mu.Unlock()
				outs := make([]retry.Outcome, len(js))
				for i, j := range js {
					outs[i] = done(j, base)
				}
				errs, err := s.Finish(ctx, outs)
				if err != nil {
					errc <- err
					return
				}
				for _, e := range errs {
					if e != nil {
						errc <- e
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("%d distinct jobs claimed, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("job %d claimed %d times", id, c)
		}
	}
}

func testRetryScheduling(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x"))[0]
	j := claim(t, s, "default", 1, base)[0]
	retryAt := base.Add(time.Minute)
	if errs := finish(t, s, retry.Outcome{Lease: lease(j), State: retry.StateScheduled, RunAt: retryAt, Error: "boom", At: base}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	g := get(t, s, id)
	if g.State != retry.StateScheduled || g.LastError != "boom" || g.Attempt != 1 {
		t.Fatalf("after retry: %+v", g)
	}
	sameTime(t, "RunAt", g.RunAt, retryAt)
	wantIDs(t, "claim before retry time", claim(t, s, "default", 1, retryAt.Add(-time.Microsecond)))
	again := claim(t, s, "default", 1, retryAt)
	wantIDs(t, "claim at retry time", again, id)
	if again[0].Attempt != 2 || again[0].LastError != "boom" {
		t.Fatalf("second run: attempt %d, last error %q", again[0].Attempt, again[0].LastError)
	}
}

// A completed job keeps the outcome's Error (retry.Skip's reason).
// testCompletedNote: a completion by Skip keeps its note and its Skipped
// marker (a field, not the note's text); a plain completion, even with a
// note that reads alike, is not skipped.
func testCompletedNote(t *testing.T, s retry.Store) {
	ids := enqueue(t, s, job("x"), job("y"))
	js := claim(t, s, "default", 2, base)
	if errs := finish(t, s, retry.Outcome{Lease: lease(js[0]), State: retry.StateCompleted, Error: "skipped: capped", Skip: true, At: base},
		retry.Outcome{Lease: lease(js[1]), State: retry.StateCompleted, Error: "skipped: a note, not a skip", At: base}); errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	g := get(t, s, ids[0])
	if g.State != retry.StateCompleted || g.LastError != "skipped: capped" {
		t.Fatalf("completed with a note: state %s, last error %q", g.State, g.LastError)
	}
	if reason, ok := retry.Skipped(g); !ok || reason != "capped" {
		t.Fatalf("Skipped = %q, %v; want capped, true (the store must keep Job.Skipped)", reason, ok)
	}
	sameTime(t, "FinishedAt", g.FinishedAt, base)
	if _, ok := retry.Skipped(get(t, s, ids[1])); ok {
		t.Fatal("a plain completion whose note starts with \"skipped: \" counts as skipped")
	}
}

func testSnoozeRelease(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x"))[0]
	j := claim(t, s, "default", 1, base)[0]
	finish(t, s, retry.Outcome{Lease: lease(j), State: retry.StateScheduled, RunAt: base.Add(time.Second), Uncount: true, At: base})
	if g := get(t, s, id); g.Attempt != 0 || g.LastError != "" {
		t.Fatalf("a snooze counted: attempt %d, error %q", g.Attempt, g.LastError)
	}
	j = claim(t, s, "default", 1, base.Add(time.Second))[0]
	finish(t, s, retry.Outcome{Lease: lease(j), State: retry.StateAvailable, Uncount: true, At: base.Add(2 * time.Second)})
	g := get(t, s, id)
	if g.State != retry.StateAvailable || g.Attempt != 0 {
		t.Fatalf("after release: state %s attempt %d, want available 0", g.State, g.Attempt)
	}
	wantIDs(t, "claim after release", claim(t, s, "default", 1, base.Add(2*time.Second)), id)
}

func testDeadRequeue(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("a"), job("b"), job("c", func(j *retry.Job) { j.Lane = "other" }), job("d"))
	js := claim(t, s, "default", 3, base)
	js = append(js, claim(t, s, "other", 1, base)...)
	var outs []retry.Outcome
	for _, j := range js {
		st := retry.StateDead
		if j.ID == id[3] {
			st = retry.StateCompleted
		}
		outs = append(outs, retry.Outcome{Lease: lease(j), State: st, Error: "bad " + j.Kind, At: base.Add(time.Second)})
	}
	finish(t, s, outs...)
	dead, err := s.List(ctx, retry.Filter{States: []retry.State{retry.StateDead}})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "dead letters", dead, id[0], id[1], id[2])
	if dead[0].LastError != "bad a" {
		t.Fatalf("dead letter keeps its error: got %q", dead[0].LastError)
	}
	sameTime(t, "FinishedAt", dead[0].FinishedAt, base.Add(time.Second))
	// Requeue one.
	n, err := s.Requeue(ctx, retry.Filter{IDs: []int64{id[1]}}, base.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Requeue one = %d, %v", n, err)
	}
	g := get(t, s, id[1])
	if g.State != retry.StateAvailable || g.Attempt != 0 || !g.FinishedAt.IsZero() {
		t.Fatalf("requeued job: %+v", g)
	}
	wantIDs(t, "claim requeued", claim(t, s, "default", 5, base.Add(time.Minute)), id[1])
	// Requeue matching a filter: only the "other" lane; completed jobs untouched.
	n, err = s.Requeue(ctx, retry.Filter{Lane: "other"}, base.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Requeue lane other = %d, %v", n, err)
	}
	n, err = s.Requeue(ctx, retry.Filter{IDs: []int64{id[3]}}, base.Add(time.Minute))
	if err != nil || n != 0 {
		t.Fatalf("Requeue of a completed job = %d, %v; want 0", n, err)
	}
	if g := get(t, s, id[3]); g.State != retry.StateCompleted {
		t.Fatalf("completed job became %s", g.State)
	}
}

func testExpiry(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x", func(j *retry.Job) { j.ExpiresAt = base.Add(time.Second) }))[0]
	j := claim(t, s, "default", 1, base.Add(2*time.Second))[0]
	finish(t, s, retry.Outcome{Lease: lease(j), State: retry.StateExpired, Error: "expired", At: base.Add(2 * time.Second)})
	g := get(t, s, id)
	if g.State != retry.StateExpired {
		t.Fatalf("state %s, want expired", g.State)
	}
	sameTime(t, "FinishedAt", g.FinishedAt, base.Add(2*time.Second))
	wantIDs(t, "claim after expiry", claim(t, s, "default", 1, base.Add(time.Hour)))
	n, err := s.Requeue(ctx, retry.Filter{IDs: []int64{id}}, base.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Requeue expired = %d, %v", n, err)
	}
}

func testPurge(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("a"), job("b"), job("c"))
	js := claim(t, s, "default", 2, base)
	finish(t, s, retry.Outcome{Lease: lease(js[0]), State: retry.StateDead, At: base}, retry.Outcome{Lease: lease(js[1]), State: retry.StateDead, At: base})
	n, err := s.Purge(ctx, retry.Filter{IDs: []int64{js[0].ID}})
	if err != nil || n != 1 {
		t.Fatalf("Purge one = %d, %v", n, err)
	}
	if _, err := s.Get(ctx, js[0].ID); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("purged job still readable: %v", err)
	}
	n, err = s.Purge(ctx, retry.Filter{})
	if err != nil || n != 1 {
		t.Fatalf("Purge all finished = %d, %v; want 1 (the pending job stays)", n, err)
	}
	get(t, s, id[2])
}

func testPause(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("x"), job("y", func(j *retry.Job) { j.Lane = "other" }))
	if err := s.SetPaused(ctx, "default", true); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "claim paused lane", claim(t, s, "default", 5, base))
	wantIDs(t, "claim other lane", claim(t, s, "other", 5, base), id[1])
	id2 := enqueue(t, s, job("z"))[0]
	st, err := s.Stats(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if ls := laneStats(st, "default"); !ls.Paused || ls.Ready != 2 {
		t.Fatalf("paused lane stats = %+v; want paused with 2 ready", ls)
	}
	if err := s.SetPaused(ctx, "default", false); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "claim resumed lane", claim(t, s, "default", 5, base), id[0], id2)
}

func laneStats(st []retry.LaneStats, lane string) retry.LaneStats {
	for _, ls := range st {
		if ls.Lane == lane {
			return ls
		}
	}
	return retry.LaneStats{}
}

func testRetention(t *testing.T, s retry.Store) {
	id := enqueue(t, s,
		job("old", func(j *retry.Job) { j.IdempotencyKey = "old" }),
		job("new"), job("dead"), job("pending"))
	js := claim(t, s, "default", 3, base)
	finish(t, s,
		done(js[0], base),
		done(js[1], base.Add(time.Hour)),
		retry.Outcome{Lease: lease(js[2]), State: retry.StateDead, At: base},
	)
	n, err := s.Prune(ctx, base.Add(time.Minute), base.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if _, err := s.Get(ctx, id[0]); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("pruned job: %v, want ErrNotFound", err)
	}
	get(t, s, id[1]) // completed within retention: readable
	get(t, s, id[2]) // dead: kept until purged
	get(t, s, id[3]) // pending: never pruned
	// The pruned key is forgotten even for an old keysSince.
	res, err := s.Enqueue(ctx, []*retry.Job{job("old", func(j *retry.Job) { j.IdempotencyKey = "old" })}, base.Add(-time.Hour))
	if err != nil || res[0].Duplicate {
		t.Fatalf("enqueue with a pruned key = %+v, %v; want a new job", res, err)
	}
}

func testStats(t *testing.T, s retry.Store) {
	enqueue(t, s,
		job("r1", func(j *retry.Job) { j.RunAt = base.Add(-time.Minute) }),
		job("r2"),
		job("s1", func(j *retry.Job) { j.RunAt = base.Add(time.Hour); j.State = retry.StateScheduled }),
		job("s2", func(j *retry.Job) { j.RunAt = base.Add(-30 * time.Second); j.State = retry.StateScheduled }),
		job("run"), job("dead"), job("exp"), job("ok"),
		job("t", func(j *retry.Job) { j.Lane = "transactional" }),
	)
	// Claim the four best: r1 (oldest), s2 is promoted only at claim time
	// and sorts after r1, so claim with a limit that leaves r2 and s2.
	js := claim(t, s, "default", 10, base)
	var keep []*retry.Job
	var outs []retry.Outcome
	for _, j := range js {
		switch j.Kind {
		case "dead":
			outs = append(outs, retry.Outcome{Lease: lease(j), State: retry.StateDead, At: base})
		case "exp":
			outs = append(outs, retry.Outcome{Lease: lease(j), State: retry.StateExpired, At: base})
		case "ok":
			outs = append(outs, done(j, base))
		case "run":
		default:
			keep = append(keep, j)
		}
	}
	for _, j := range keep {
		outs = append(outs, retry.Outcome{Lease: lease(j), State: retry.StateAvailable, Uncount: true, At: j.RunAt})
	}
	finish(t, s, outs...)
	st, err := s.Stats(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	d := laneStats(st, "default")
	want := retry.LaneStats{Lane: "default", Ready: 3, Scheduled: 1, Running: 1, Completed: 1, Dead: 1, Expired: 1, OldestReady: time.Minute}
	if d != want {
		t.Fatalf("default lane stats = %+v, want %+v", d, want)
	}
	if tr := laneStats(st, "transactional"); tr.Ready != 1 || tr.OldestReady != 0 {
		t.Fatalf("transactional lane stats = %+v", tr)
	}
}

func testList(t *testing.T, s retry.Store) {
	id := enqueue(t, s, job("a"), job("b"), job("a"), job("a", func(j *retry.Job) { j.Lane = "x" }))
	js, err := s.List(ctx, retry.Filter{Kind: "a", Lane: "default"})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "List kind a, lane default", js, id[0], id[2])
	js, _ = s.List(ctx, retry.Filter{AfterID: id[0], Limit: 2})
	wantIDs(t, "List page", js, id[1], id[2])
	js, _ = s.List(ctx, retry.Filter{States: []retry.State{retry.StateRunning}})
	wantIDs(t, "List running", js)
}

func testClosed(t *testing.T, s retry.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, []*retry.Job{job("x")}, base); !errors.Is(err, retry.ErrClosed) {
		t.Fatalf("Enqueue after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Claim(ctx, "default", 1, base, base); !errors.Is(err, retry.ErrClosed) {
		t.Fatalf("Claim after Close: %v, want ErrClosed", err)
	}
}

func testDurability(t *testing.T, s retry.Store, reopen func(*testing.T, retry.Store) retry.Store) {
	id := enqueue(t, s,
		job("a", func(j *retry.Job) { j.IdempotencyKey = "ka"; j.Payload = []byte("payload-a") }),
		job("b"), job("c"), job("d", func(j *retry.Job) { j.Lane = "other" }))
	js := claim(t, s, "default", 2, base)
	finish(t, s, done(js[0], base), retry.Outcome{Lease: lease(js[1]), State: retry.StateDead, Error: "bad", At: base})
	running := claim(t, s, "default", 1, base)[0]
	if err := s.SetPaused(ctx, "other", true); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if g := get(t, s, id[0]); g.State != retry.StateCompleted || string(g.Payload) != "payload-a" {
		t.Fatalf("after reopen job a = %+v", g)
	}
	if g := get(t, s, id[1]); g.State != retry.StateDead || g.LastError != "bad" {
		t.Fatalf("after reopen job b = %+v", g)
	}
	res, err := s.Enqueue(ctx, []*retry.Job{job("a", func(j *retry.Job) { j.IdempotencyKey = "ka" })}, base.Add(-time.Hour))
	if err != nil || !res[0].Duplicate || res[0].ID != id[0] {
		t.Fatalf("idempotency key after reopen: %+v %v", res, err)
	}
	wantIDs(t, "claim paused lane after reopen", claim(t, s, "other", 1, base))
	// The job running at close is not lost: it is running still (its lease
	// runs out and Rescue frees it) or was handed back at open.
	g := get(t, s, running.ID)
	switch g.State {
	case retry.StateRunning:
		if r, _ := s.Rescue(ctx, base.Add(time.Hour)); len(r) != 1 {
			t.Fatalf("rescue after reopen: %v", ids(r))
		}
	case retry.StateAvailable:
	default:
		t.Fatalf("job running at close is %s after reopen", g.State)
	}
	js = claim(t, s, "default", 5, base.Add(time.Hour))
	wantIDs(t, "claim after reopen", js, running.ID)
	if js[0].LeaseToken <= running.LeaseToken {
		t.Fatalf("fencing token went back after reopen: %d <= %d", js[0].LeaseToken, running.LeaseToken)
	}
	id2 := enqueue(t, s, job("e"))[0]
	if id2 <= id[3] {
		t.Fatalf("ID after reopen %d not above %d", id2, id[3])
	}
}
