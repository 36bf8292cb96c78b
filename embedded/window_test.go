package embedded_test

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/storereg"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
)

func openWindow(t *testing.T, path string, window int) *embedded.DB {
	t.Helper()
	db, err := embedded.Open(path, embedded.QueueWindowForTest(&embedded.Config{}, window))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// The whole conformance suite with a window of two jobs per lane and
// state: every claim order, retry, rescue, requeue, pause and reopen goes
// through trims and refills.
func TestRetryConformanceInATinyWindow(t *testing.T) {
	t.Parallel()
	paths := storereg.New[retry.Store]()
	storetest.Run(t, func(t *testing.T) retry.Store {
		path := filepath.Join(t.TempDir(), "herald.db")
		s := openWindow(t, path, 2).Retry()
		paths.Put(s, path)
		return s
	}, &storetest.Options{
		ConcurrentJobs: 2000,
		Reopen: func(t *testing.T, s retry.Store) retry.Store {
			path := paths.Get(s)
			require.NoError(t, s.Close())
			return openWindow(t, path, 2).Retry()
		},
	})
}

// A backlog far past the window keeps memory at the window, comes back in
// queue order (priority, then run-at, then ID) exactly once through
// retries, reschedules and a reopen in the middle, and Stats counts what
// the file holds beyond memory.
func TestABacklogBeyondTheWindowComesBackInOrderOnce(t *testing.T) {
	t.Parallel()
	const window, n = 8, 600
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	db := openWindow(t, path, window)
	s := db.Retry()
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	rng := rand.New(rand.NewPCG(1, 2))
	type want struct {
		prio  int
		runAt time.Time
	}
	wants := map[int64]want{}
	for batch := 0; batch < n/50; batch++ {
		var jobs []*retry.Job
		for i := 0; i < 50; i++ {
			j := &retry.Job{Kind: "k", Payload: []byte(`{}`), Lane: "l", MaxAttempts: 5, State: retry.StateAvailable,
				Priority: rng.IntN(3), RunAt: base.Add(time.Duration(rng.IntN(1000)) * time.Millisecond), CreatedAt: base, UpdatedAt: base}
			jobs = append(jobs, j)
		}
		res, err := s.Enqueue(ctx, jobs, time.Time{})
		require.NoError(t, err)
		for i, r := range res {
			wants[r.ID] = want{jobs[i].Priority, jobs[i].RunAt}
		}
		mem, _ := db.QueueMemoryForTest("l")
		require.LessOrEqual(t, mem, 2*window, "memory holds the window, not the backlog")
	}
	mem, file := db.QueueMemoryForTest("l")
	require.Equal(t, n, mem+file)
	st, err := s.Stats(ctx, time.Now())
	require.NoError(t, err)
	require.Equal(t, n, laneStat(st, "l").Ready, "Stats counts the jobs in the file beyond the window")

	now := time.Now()
	var order []int64
	seen := map[int64]int{}
	retried := map[int64]bool{}
	reopened := false
	for len(order) < n+n/10 {
		js, err := s.Claim(ctx, "l", 5, now, now.Add(time.Minute))
		require.NoError(t, err)
		require.NotEmpty(t, js, "claimed %d of %d and the lane ran dry", len(order), n)
		var outs []retry.Outcome
		for _, j := range js {
			seen[j.ID]++
			order = append(order, j.ID)
			o := retry.Outcome{Lease: retry.Lease{ID: j.ID, Token: j.LeaseToken}, State: retry.StateCompleted, At: now}
			if j.ID%10 == 0 && !retried[j.ID] { // every tenth job once more, later
				retried[j.ID] = true
				o.State, o.RunAt = retry.StateScheduled, now.Add(-time.Millisecond)
			}
			outs = append(outs, o)
		}
		errs, err := s.Finish(ctx, outs)
		require.NoError(t, err)
		for _, e := range errs {
			require.NoError(t, e)
		}
		if !reopened && len(order) > n/2 {
			reopened = true
			require.NoError(t, db.Close())
			db = openWindow(t, path, window)
			s = db.Retry()
			mem, file := db.QueueMemoryForTest("l")
			require.LessOrEqual(t, mem, 2*window, "Open reads the window only")
			require.Positive(t, file)
		}
	}
	for id := range wants {
		require.Equal(t, 1+b2i(retried[id]), seen[id], "job %d", id)
	}
	// First claims follow the queue order (retries come back among them).
	var firsts []int64
	for _, id := range order {
		if !slices.Contains(firsts, id) {
			firsts = append(firsts, id)
		}
	}
	first := firsts[:n/2]
	sorted := slices.Clone(first)
	slices.SortFunc(sorted, func(a, b int64) int {
		wa, wb := wants[a], wants[b]
		return cmp.Or(cmp.Compare(wb.prio, wa.prio), wa.runAt.Compare(wb.runAt), cmp.Compare(a, b))
	})
	require.Equal(t, sorted, first, "claims follow priority, run-at, ID across refills")
	js, err := s.Claim(ctx, "l", 5, now, now.Add(time.Minute))
	require.NoError(t, err)
	require.Empty(t, js)
}

func laneStat(st []retry.LaneStats, lane string) retry.LaneStats {
	for _, l := range st {
		if l.Lane == lane {
			return l
		}
	}
	return retry.LaneStats{}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Jobs scheduled far past the window come due and are claimed, all of
// them, with memory still at the window.
func TestScheduledBeyondTheWindowComeDue(t *testing.T) {
	t.Parallel()
	const window, n = 4, 200
	ctx := context.Background()
	db := openWindow(t, filepath.Join(t.TempDir(), "herald.db"), window)
	s := db.Retry()
	now := time.Now()
	var jobs []*retry.Job
	for i := range n {
		at := now.Add(time.Duration(i) * time.Millisecond)
		jobs = append(jobs, &retry.Job{Kind: "k", Payload: []byte(fmt.Sprint(i)), Lane: "s", MaxAttempts: 1,
			State: retry.StateScheduled, RunAt: at, CreatedAt: now, UpdatedAt: now})
	}
	_, err := s.Enqueue(ctx, jobs, time.Time{})
	require.NoError(t, err)
	mem, file := db.QueueMemoryForTest("s")
	require.LessOrEqual(t, mem, 2*window)
	require.Equal(t, n, mem+file)
	later := now.Add(time.Hour)
	got := 0
	for got < n {
		js, err := s.Claim(ctx, "s", 7, later, later.Add(time.Minute))
		require.NoError(t, err)
		require.NotEmpty(t, js, "claimed %d of %d", got, n)
		got += len(js)
		mem, _ := db.QueueMemoryForTest("s")
		require.LessOrEqual(t, mem, 4*window)
	}
	require.Equal(t, n, got)
}
