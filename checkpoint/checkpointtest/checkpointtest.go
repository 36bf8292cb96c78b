// Package checkpointtest is the conformance suite every checkpoint.Store
// must pass, with the queue store its checkpoints enqueue into.
package checkpointtest

import (
	"context"
	"errors"
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
