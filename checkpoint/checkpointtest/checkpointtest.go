// Package checkpointtest is the conformance suite every checkpoint.Store
// must pass, with the queue store its checkpoints enqueue into.
package checkpointtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/retry"
)

// Open returns a new, empty checkpoint store and the queue store its
// checkpoints enqueue into, closed with t.Cleanup.
type Open func(t *testing.T) (checkpoint.Store, retry.Store)

var (
	ctx  = context.Background()
	base = time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)
)

// Run runs the suite.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s checkpoint.Store, q retry.Store)
	}{
		{"CreateIsIdempotent", testCreate},
		{"CheckpointMovesWithItsJobs", testCheckpoint},
		{"UnknownKeyStoresNothing", testUnknown},
		{"States", testStates},
		{"PagesStageAndDrainWithTheirJobs", testPages},
		{"CancelDropsPages", testCancelPages},
		{"ListInKeyOrder", testList},
		{"ClaimIsALease", testClaim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, q := open(t)
			tc.fn(t, s, q)
		})
	}
}

func rec(key string) checkpoint.Record {
	return checkpoint.Record{Key: key, Spec: []byte(`{"k":"` + key + `"}`), State: "running", Created: base}
}

func job(key string) *retry.Job {
	return &retry.Job{Kind: "k", Lane: "default", State: retry.StateAvailable, MaxAttempts: 3, IdempotencyKey: key,
		RunAt: base, CreatedAt: base, UpdatedAt: base, Payload: []byte("{}")}
}

func testCreate(t *testing.T, s checkpoint.Store, _ retry.Store) {
	got, created, err := s.Create(ctx, rec("c1"))
	if err != nil || !created || got.Key != "c1" || string(got.Spec) != `{"k":"c1"}` || !got.Created.Equal(base) {
		t.Fatalf("Create: %+v %v %v", got, created, err)
	}
	again := rec("c1")
	again.Spec = []byte(`{"other":1}`)
	got, created, err = s.Create(ctx, again)
	if err != nil || created || string(got.Spec) != `{"k":"c1"}` {
		t.Fatalf("Create again: %+v %v %v; want the first record, not created", got, created, err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
	// A record without a Spec is a record (its Spec empty), not an error.
	if got, created, err := s.Create(ctx, checkpoint.Record{Key: "bare", State: "running", Created: base}); err != nil || !created || len(got.Spec) != 0 {
		t.Fatalf("Create without a Spec: %+v %v %v", got, created, err)
	}
}

func testCheckpoint(t *testing.T, s checkpoint.Store, q retry.Store) {
	if _, _, err := s.Create(ctx, rec("c1")); err != nil {
		t.Fatal(err)
	}
	since := base.Add(-time.Hour)
	res, err := s.Checkpoint("c1", "page-2", 3, 1, false).Enqueue(ctx, []*retry.Job{job("c1/a"), job("c1/b")}, since)
	if err != nil || len(res) != 2 {
		t.Fatalf("Checkpoint: %v %v", res, err)
	}
	// A page read again after a crash: its jobs are duplicates, counted once.
	if _, err := s.Checkpoint("c1", "page-2", 0, 0, false).Enqueue(ctx, []*retry.Job{job("c1/a")}, since); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint("c1", "", 2, 0, true).Enqueue(ctx, nil, since); err != nil {
		t.Fatalf("a checkpoint without jobs: %v", err)
	}
	got, err := s.Get(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Cursor != "" || got.Recipients != 5 || got.Invalid != 1 || got.Enqueued != 2 || !got.Done {
		t.Fatalf("record after checkpoints: %+v", got)
	}
	js, err := q.List(ctx, retry.Filter{})
	if err != nil || len(js) != 2 {
		t.Fatalf("queue holds %d jobs (%v), want 2", len(js), err)
	}
}

// testUnknownKeyStoresNothing: the jobs of a checkpoint that cannot move
// its record are not stored either.
func testUnknown(t *testing.T, s checkpoint.Store, q retry.Store) {
	_, err := s.Checkpoint("ghost", "x", 1, 0, false).Enqueue(ctx, []*retry.Job{job("ghost/a")}, base.Add(-time.Hour))
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("checkpoint of an unknown key: %v", err)
	}
	if js, _ := q.List(ctx, retry.Filter{}); len(js) != 0 {
		t.Fatalf("%d jobs stored by a checkpoint that failed", len(js))
	}
}

func testStates(t *testing.T, s checkpoint.Store, _ retry.Store) {
	if _, _, err := s.Create(ctx, rec("c1")); err != nil {
		t.Fatal(err)
	}
	for _, st := range []checkpoint.State{"paused", "running", "cancelled"} {
		if err := s.SetState(ctx, "c1", st); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, "c1"); got.State != st {
			t.Fatalf("state %s, want %s", got.State, st)
		}
	}
	if err := s.SetState(ctx, "nope", "paused"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("SetState unknown: %v", err)
	}
}

func stage(t *testing.T, s checkpoint.Store, key, cursor string, recipients int, done bool, data string, count int) {
	t.Helper()
	if err := s.Stage(ctx, key, cursor, recipients, 0, done, []byte(data), count); err != nil {
		t.Fatalf("Stage %s: %v", cursor, err)
	}
}

func pages(t *testing.T, s checkpoint.Store, key string, after int64, limit int) []checkpoint.Page {
	t.Helper()
	ps, err := s.Pages(ctx, key, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// testPages: pages are staged in order with the cursor, read back
// after a Seq, and drained with their jobs in one write; a drain that is
// stale (the page gone or already past it) stores nothing.
func testPages(t *testing.T, s checkpoint.Store, q retry.Store) {
	if _, _, err := s.Create(ctx, rec("c1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Stage(ctx, "ghost", "x", 1, 0, false, []byte("p"), 1); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Stage of an unknown key: %v", err)
	}
	stage(t, s, "c1", "after-1", 3, false, "page one", 3)
	if err := s.Stage(ctx, "c1", "after-2", 2, 2, false, nil, 0); err != nil { // every recipient refused: no page
		t.Fatal(err)
	}
	stage(t, s, "c1", "", 2, true, "page two", 2)
	got, _ := s.Get(ctx, "c1")
	if got.Cursor != "" || !got.Done || got.Recipients != 7 || got.Invalid != 2 || got.Staged != 5 || got.Pages != 2 || got.Enqueued != 0 {
		t.Fatalf("record after staging: %+v", got)
	}
	ps := pages(t, s, "c1", 0, 10)
	if len(ps) != 2 || ps[0].Seq != 1 || ps[1].Seq != 2 || string(ps[0].Data) != "page one" || ps[0].Count != 3 || ps[0].Offset != 0 || string(ps[1].Data) != "page two" {
		t.Fatalf("pages: %+v", ps)
	}
	if ps := pages(t, s, "c1", 1, 10); len(ps) != 1 || ps[0].Seq != 2 {
		t.Fatalf("pages after 1: %+v", ps)
	}
	if ps := pages(t, s, "c1", 0, 1); len(ps) != 1 || ps[0].Seq != 1 {
		t.Fatalf("one page: %+v", ps)
	}
	since := base.Add(-time.Hour)
	if res, err := s.Drain("c1", 1, 2, 0).Enqueue(ctx, []*retry.Job{job("c1/a"), job("c1/b")}, since); err != nil || len(res) != 2 {
		t.Fatalf("Drain: %v %v", res, err)
	}
	if ps := pages(t, s, "c1", 0, 10); len(ps) != 2 || ps[0].Offset != 2 {
		t.Fatalf("page 1 after draining 2 of 3: %+v", ps)
	}
	// Stale drains: back to an offset already passed, past the page's
	// end, an unknown page. Their jobs are not stored.
	for _, d := range []struct {
		seq    int64
		offset int
	}{{1, 2}, {1, 4}, {9, 1}} {
		if _, err := s.Drain("c1", d.seq, d.offset, 0).Enqueue(ctx, []*retry.Job{job("c1/stale")}, since); !errors.Is(err, checkpoint.ErrNotFound) {
			t.Fatalf("stale drain of page %d to %d: %v", d.seq, d.offset, err)
		}
	}
	// The last item was refused at the door: the page ends without a job.
	if _, err := s.Drain("c1", 1, 3, 1).Enqueue(ctx, nil, since); err != nil {
		t.Fatal(err)
	}
	// A drain whose job exists (a message sent before): a duplicate.
	if _, err := s.Drain("c1", 2, 2, 0).Enqueue(ctx, []*retry.Job{job("c1/a"), job("c1/d")}, since); err != nil {
		t.Fatal(err)
	}
	if ps := pages(t, s, "c1", 0, 10); len(ps) != 0 {
		t.Fatalf("pages left after draining all: %+v", ps)
	}
	got, _ = s.Get(ctx, "c1")
	if got.Staged != 5 || got.Drained != 5 || got.Enqueued != 3 || got.Invalid != 3 || got.Cancelled != 0 {
		t.Fatalf("record after draining: %+v", got)
	}
	js, err := q.List(ctx, retry.Filter{})
	if err != nil || len(js) != 3 {
		t.Fatalf("queue holds %d jobs (%v), want 3", len(js), err)
	}
}

// testCancelPages: cancelling drops what was staged and not drained,
// counted, and no drain of it stores anything after.
func testCancelPages(t *testing.T, s checkpoint.Store, q retry.Store) {
	for _, k := range []string{"c1", "c2"} {
		if _, _, err := s.Create(ctx, rec(k)); err != nil {
			t.Fatal(err)
		}
		stage(t, s, k, "1", 4, false, "a", 4)
		stage(t, s, k, "2", 3, false, "b", 3)
	}
	if _, err := s.Drain("c1", 1, 1, 0).Enqueue(ctx, []*retry.Job{job("c1/a")}, base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, "c1", checkpoint.Cancelled); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, "c1")
	if got.State != checkpoint.Cancelled || got.Cancelled != 6 || got.Drained != 1 || got.Enqueued != 1 {
		t.Fatalf("record after cancel: %+v", got)
	}
	if ps := pages(t, s, "c1", 0, 10); len(ps) != 0 {
		t.Fatalf("pages after cancel: %+v", ps)
	}
	if _, err := s.Drain("c1", 1, 2, 0).Enqueue(ctx, []*retry.Job{job("c1/b")}, base.Add(-time.Hour)); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("drain after cancel: %v", err)
	}
	if js, _ := q.List(ctx, retry.Filter{}); len(js) != 1 {
		t.Fatalf("queue holds %d jobs, want 1", len(js))
	}
	if ps := pages(t, s, "c2", 0, 10); len(ps) != 2 { // another fan-out's pages stay
		t.Fatalf("c2's pages after c1's cancel: %+v", ps)
	}
}

// testList: records page by page in key order, whole.
func testList(t *testing.T, s checkpoint.Store, _ retry.Store) {
	if rs, err := s.List(ctx, "", 10); err != nil || len(rs) != 0 {
		t.Fatalf("List of an empty store: %v %v", rs, err)
	}
	for _, k := range []string{"c3", "c1", "c2", "b"} {
		if _, _, err := s.Create(ctx, rec(k)); err != nil {
			t.Fatal(err)
		}
	}
	stage(t, s, "c2", "x", 5, false, "page", 5)
	var keys []string
	for after := ""; ; {
		rs, err := s.List(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			keys = append(keys, r.Key)
			if string(r.Spec) != `{"k":"`+r.Key+`"}` || r.State != "running" || !r.Created.Equal(base) {
				t.Fatalf("listed record %+v", r)
			}
			if r.Key == "c2" && (r.Recipients != 5 || r.Staged != 5 || r.Cursor != "x") {
				t.Fatalf("listed c2 without its counts: %+v", r)
			}
		}
		if len(rs) < 3 {
			break
		}
		after = rs[len(rs)-1].Key
	}
	if got := fmt.Sprint(keys); got != "[b c1 c2 c3]" {
		t.Fatalf("listed %s, want [b c1 c2 c3]", got)
	}
}

// testClaim: one owner at a time; the holder renews and gives up; an
// expired lease goes to whoever claims it.
func testClaim(t *testing.T, s checkpoint.Store, _ retry.Store) {
	if _, _, err := s.Create(ctx, rec("c1")); err != nil {
		t.Fatal(err)
	}
	claim := func(owner string, now, until time.Time, want bool) {
		t.Helper()
		ok, err := s.Claim(ctx, "c1", owner, now, until)
		if err != nil || ok != want {
			t.Fatalf("Claim by %s at %s until %s: %v %v, want %v", owner, now.Format(time.TimeOnly), until.Format(time.TimeOnly), ok, err, want)
		}
	}
	t0 := base
	claim("a", t0, t0.Add(30*time.Second), true)
	claim("b", t0.Add(time.Second), t0.Add(31*time.Second), false)   // held
	claim("a", t0.Add(10*time.Second), t0.Add(40*time.Second), true) // renewed
	claim("b", t0.Add(35*time.Second), t0.Add(65*time.Second), false)
	claim("b", t0.Add(41*time.Second), t0.Add(71*time.Second), true) // a's lease expired: b takes it
	claim("a", t0.Add(42*time.Second), t0.Add(72*time.Second), false)
	claim("b", t0.Add(43*time.Second), t0.Add(43*time.Second), true) // b gives it up
	claim("a", t0.Add(44*time.Second), t0.Add(74*time.Second), true)
	if _, err := s.Claim(ctx, "ghost", "a", t0, t0.Add(time.Second)); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Claim of an unknown key: %v", err)
	}
}
