package embedded_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/retry"
)

// A job enqueued in this process reaches its first claim as it was given,
// Decoded included (no read, no decoding); after a reopen it is read from
// the file and Decoded is gone.
func TestFirstClaimHandsOverTheJobInMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	now := time.Now()
	decoded := &struct{ Name string }{"in memory"}
	mk := func() *retry.Job {
		return &retry.Job{Kind: "k", Lane: "default", State: retry.StateAvailable, RunAt: now, MaxAttempts: 3,
			Payload: []byte("p"), CreatedAt: now, UpdatedAt: now, Decoded: decoded}
	}
	_, err = db.Retry().Enqueue(ctx, []*retry.Job{mk(), mk()}, now.Add(-time.Hour))
	require.NoError(t, err)
	js, err := db.Retry().Claim(ctx, "default", 1, now, now.Add(time.Minute))
	require.NoError(t, err)
	require.Len(t, js, 1)
	require.Same(t, decoded, js[0].Decoded, "the first claim in the enqueuing process hands over Decoded")
	require.Equal(t, retry.StateRunning, js[0].State)
	require.Equal(t, 1, js[0].Attempt)
	require.NoError(t, db.Close())

	db, err = embedded.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, 1, db.Recovered(), "the job running at close is handed back, its attempt counted")
	js, err = db.Retry().Claim(ctx, "default", 5, now, now.Add(time.Minute))
	require.NoError(t, err)
	require.Len(t, js, 2)
	for _, j := range js {
		require.Nil(t, j.Decoded, "a job read from the file has no Decoded")
		require.Equal(t, "p", string(j.Payload))
	}
	require.Equal(t, []int{2, 1}, []int{js[0].Attempt, js[1].Attempt}, "the handed-back job's attempt counted")
}

// Open rebuilds the lanes' order from the file: priority first, then
// RunAt, then ID; scheduled jobs wait for their time.
func TestOpenRebuildsTheQueueOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	base := time.Unix(1_800_000_000, 0)
	var jobs []*retry.Job
	for i, p := range []struct {
		prio  int
		runAt time.Duration
	}{{0, 0}, {5, 2 * time.Second}, {5, time.Second}, {1, 0}, {9, time.Hour}} {
		st := retry.StateAvailable
		if p.runAt == time.Hour {
			st = retry.StateScheduled
		}
		jobs = append(jobs, &retry.Job{Kind: "k", Lane: []string{"a", "b"}[i%2], State: st, Priority: p.prio,
			RunAt: base.Add(p.runAt), MaxAttempts: 1, CreatedAt: base, UpdatedAt: base})
	}
	res, err := db.Retry().Enqueue(ctx, jobs, base.Add(-time.Hour))
	require.NoError(t, err)
	require.NoError(t, db.Close())
	db, err = embedded.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	claimAll := func(lane string, at time.Time) []int64 {
		js, err := db.Retry().Claim(ctx, lane, 10, at, at.Add(time.Minute))
		require.NoError(t, err)
		var ids []int64
		for _, j := range js {
			ids = append(ids, j.ID)
		}
		return ids
	}
	require.Equal(t, []int64{res[2].ID, res[0].ID}, claimAll("a", base.Add(time.Minute)), "lane a: priority 5 before 0")
	require.Equal(t, []int64{res[1].ID, res[3].ID}, claimAll("b", base.Add(time.Minute)), "lane b: priority 5 before 1")
	require.Empty(t, claimAll("a", base.Add(time.Minute)), "the scheduled job waits")
	require.Equal(t, []int64{res[4].ID}, claimAll("a", base.Add(2*time.Hour)))
}

// The claim log is rewritten with the leases still running once it grows
// past its size; a job running at a crash is still handed back after any
// number of rotations, and finished ones are not.
func TestClaimLogRotatesAndStillHandsBackWhatRan(t *testing.T) {
	embedded.SetClaimLogRotateForTest(256)
	defer embedded.SetClaimLogRotateForTest(4 << 20)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	now := time.Now()
	var jobs []*retry.Job
	for range 200 {
		jobs = append(jobs, &retry.Job{Kind: "k", Lane: "default", State: retry.StateAvailable, RunAt: now, MaxAttempts: 3,
			CreatedAt: now, UpdatedAt: now})
	}
	_, err = db.Retry().Enqueue(ctx, jobs, now.Add(-time.Hour))
	require.NoError(t, err)
	var kept *retry.Job
	for i := 0; ; i++ {
		js, err := db.Retry().Claim(ctx, "default", 3, now, now.Add(time.Minute))
		require.NoError(t, err)
		if len(js) == 0 {
			break
		}
		outs := make([]retry.Outcome, 0, len(js))
		for _, j := range js {
			if kept == nil && i == 20 {
				kept = j // left running at the "crash"
				continue
			}
			outs = append(outs, retry.Outcome{Lease: retry.Lease{ID: j.ID, Token: j.LeaseToken}, State: retry.StateCompleted, At: now})
		}
		errs, err := db.Retry().Finish(ctx, outs)
		require.NoError(t, err)
		for _, e := range errs {
			require.NoError(t, e)
		}
	}
	require.NotNil(t, kept)
	fi, err := os.Stat(path + "-claims")
	require.NoError(t, err)
	require.Less(t, fi.Size(), int64(512), "the log was rotated (200 claims are 3,200 bytes)")
	require.NoError(t, db.Close())

	db, err = embedded.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, 1, db.Recovered(), "only the job left running is handed back")
	g, err := db.Retry().Get(ctx, kept.ID)
	require.NoError(t, err)
	require.Equal(t, retry.StateAvailable, g.State)
	require.Equal(t, 1, g.Attempt, "its attempt counted")
	done, err := db.Retry().List(ctx, retry.Filter{States: []retry.State{retry.StateCompleted}})
	require.NoError(t, err)
	require.Len(t, done, 199)
}
