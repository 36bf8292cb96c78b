package retry_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/retrytest"
)

var bg = context.Background()

func TestEnqueueValidation(t *testing.T) {
	t.Parallel()
	q, clock := retrytest.NewQueue(t, &retry.Config{
		Lanes:           map[string]retry.LaneConfig{"transactional": {}, "campaign": {}},
		MaxPayloadBytes: 10,
	})
	now := clock.Now()
	cases := []struct {
		name  string
		p     retry.EnqueueParams
		want  error
		field string
	}{
		{"empty kind", retry.EnqueueParams{Lane: "campaign"}, retry.ErrInvalidJob, "Kind"},
		{"payload too large", retry.EnqueueParams{Kind: "k", Lane: "campaign", Payload: make([]byte, 11)}, retry.ErrPayloadTooLarge, "Payload"},
		{"expires before run-at", retry.EnqueueParams{Kind: "k", Lane: "campaign", RunAt: now.Add(time.Hour), ExpiresAt: now.Add(time.Minute)}, retry.ErrInvalidJob, "ExpiresAt"},
		{"expires at run-at", retry.EnqueueParams{Kind: "k", Lane: "campaign", ExpiresAt: now}, retry.ErrInvalidJob, "ExpiresAt"},
		{"unknown lane", retry.EnqueueParams{Kind: "k", Lane: "nope"}, retry.ErrUnknownLane, "Lane"},
		{"default lane not declared", retry.EnqueueParams{Kind: "k"}, retry.ErrUnknownLane, "Lane"},
		{"negative attempts", retry.EnqueueParams{Kind: "k", Lane: "campaign", MaxAttempts: -1}, retry.ErrInvalidJob, "MaxAttempts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := q.EnqueueBatch(bg, []retry.EnqueueParams{{Kind: "fine", Lane: "campaign"}, tc.p})
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, retry.ErrInvalidJob)
			var ve *retry.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.field, ve.Field)
			require.Equal(t, 1, ve.Index)
		})
	}
	// Nothing of the refused batches was written, not even the valid job.
	js, err := q.Jobs(bg, retry.Filter{})
	require.NoError(t, err)
	require.Empty(t, js)
}

func TestEnqueueStoreFailureIsNotAccepted(t *testing.T) {
	t.Parallel()
	store := retry.NewMemoryStore()
	q, err := retry.New(store, nil)
	require.NoError(t, err)
	require.NoError(t, store.Close())
	_, err = q.Enqueue(bg, retry.EnqueueParams{Kind: "k", IdempotencyKey: "abc"})
	require.ErrorIs(t, err, retry.ErrNotAccepted)
	require.ErrorIs(t, err, retry.ErrClosed)
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := retry.New(nil, nil)
	require.ErrorContains(t, err, "missing store")
	_, err = retry.New(retry.NewMemoryStore(), &retry.Config{Lanes: map[string]retry.LaneConfig{"x": {Concurrency: -1}}})
	require.ErrorContains(t, err, `Config.Lanes["x"].Concurrency`)
	_, err = retry.New(retry.NewMemoryStore(), &retry.Config{LeaseDuration: -time.Second})
	require.ErrorContains(t, err, "Config.LeaseDuration")
}

func TestIdempotentEnqueueThroughQueue(t *testing.T) {
	t.Parallel()
	rec := retrytest.NewRecorder()
	q, _ := retrytest.NewQueue(t, &retry.Config{Observer: rec.Observe})
	a, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "push", IdempotencyKey: "order-1"})
	require.NoError(t, err)
	b, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "push", IdempotencyKey: "order-1"})
	require.NoError(t, err)
	require.Equal(t, a.ID, b.ID)
	require.True(t, b.Duplicate)
	require.Equal(t, 1, rec.Count(retry.EventEnqueued), "a duplicate is not reported as enqueued")
	retrytest.RequireEnqueued(t, q, "push")
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	rec := retrytest.NewRecorder()
	q, clock := retrytest.NewQueue(t, &retry.Config{Observer: rec.Observe})
	var calls sync.Map
	count := func(id int64) int {
		v, _ := calls.LoadOrStore(id, new(atomic.Int32))
		return int(v.(*atomic.Int32).Add(1))
	}
	q.HandleFunc("ok", func(context.Context, *retry.Job) error { return nil })
	q.HandleFunc("flaky", func(_ context.Context, j *retry.Job) error {
		if count(j.ID) < 3 {
			return errors.New("provider 503")
		}
		return nil
	})
	q.HandleFunc("hinted", func(_ context.Context, j *retry.Job) error {
		if count(j.ID) == 1 {
			return retry.RetryAfter(errors.New("429"), 90*time.Second)
		}
		return nil
	})
	q.HandleFunc("perm", func(context.Context, *retry.Job) error { return retry.Permanent(errors.New("bad token")) })
	q.HandleFunc("always", func(context.Context, *retry.Job) error { return errors.New("down") })
	q.HandleFunc("snooze", func(_ context.Context, j *retry.Job) error {
		if count(j.ID) == 1 {
			return retry.Snooze(time.Minute)
		}
		return nil
	})
	q.HandleFunc("panic", func(context.Context, *retry.Job) error { panic("handler blew up") })
	q.HandleFunc("skip", func(context.Context, *retry.Job) error { return retry.Skip("capped by daily") })

	enq := func(p retry.EnqueueParams) int64 {
		r, err := q.Enqueue(bg, p)
		require.NoError(t, err)
		return r.ID
	}
	ok := enq(retry.EnqueueParams{Kind: "ok"})
	flaky := enq(retry.EnqueueParams{Kind: "flaky"})
	hinted := enq(retry.EnqueueParams{Kind: "hinted"})
	perm := enq(retry.EnqueueParams{Kind: "perm"})
	always := enq(retry.EnqueueParams{Kind: "always", MaxAttempts: 2})
	snooze := enq(retry.EnqueueParams{Kind: "snooze"})
	pan := enq(retry.EnqueueParams{Kind: "panic", MaxAttempts: 1})
	none := enq(retry.EnqueueParams{Kind: "unregistered"})
	skip := enq(retry.EnqueueParams{Kind: "skip"})

	retrytest.RequireDrained(t, q, 9)
	start := clock.Now()
	retrytest.RequireState(t, q, ok, retry.StateCompleted)
	j := retrytest.RequireState(t, q, flaky, retry.StateScheduled)
	require.Equal(t, start.Add(time.Second), j.RunAt, "backoff for attempt 1")
	require.Equal(t, "provider 503", j.LastError)
	j = retrytest.RequireState(t, q, hinted, retry.StateScheduled)
	require.Equal(t, start.Add(90*time.Second), j.RunAt, "the RetryAfter hint overrides backoff")
	j = retrytest.RequireState(t, q, perm, retry.StateDead)
	require.Contains(t, j.LastError, "bad token")
	require.Equal(t, 1, j.Attempt)
	j = retrytest.RequireState(t, q, snooze, retry.StateScheduled)
	require.Equal(t, 0, j.Attempt, "a snooze does not use an attempt")
	require.Equal(t, start.Add(time.Minute), j.RunAt)
	j = retrytest.RequireState(t, q, pan, retry.StateDead)
	require.Contains(t, j.LastError, "handler blew up")
	require.Contains(t, j.LastError, "goroutine", "the stack is kept")
	j = retrytest.RequireState(t, q, none, retry.StateScheduled)
	require.Contains(t, j.LastError, "no handler")
	j = retrytest.RequireState(t, q, skip, retry.StateCompleted)
	reason, skipped := retry.Skipped(j)
	require.True(t, skipped)
	require.Equal(t, "capped by daily", reason)
	_, skipped = retry.Skipped(retrytest.RequireState(t, q, ok, retry.StateCompleted))
	require.False(t, skipped, "a job that ran is not skipped")
	require.Equal(t, []retry.EventType{retry.EventEnqueued, retry.EventStarted, retry.EventSkipped}, rec.Types(skip))

	clock.Advance(time.Second)
	retrytest.RequireDrained(t, q, 3) // flaky (2nd), always (2nd, then dead), unregistered (2nd)
	retrytest.RequireState(t, q, always, retry.StateDead)
	j = retrytest.RequireState(t, q, flaky, retry.StateScheduled)
	require.Equal(t, clock.Now().Add(2*time.Second), j.RunAt, "backoff for attempt 2")
	clock.Advance(2 * time.Minute)
	retrytest.RequireDrained(t, q, 4) // flaky, hinted, snooze, unregistered
	retrytest.RequireState(t, q, flaky, retry.StateCompleted)
	retrytest.RequireState(t, q, hinted, retry.StateCompleted)
	retrytest.RequireState(t, q, snooze, retry.StateCompleted)

	require.Equal(t, []retry.EventType{retry.EventEnqueued, retry.EventStarted, retry.EventRetried,
		retry.EventStarted, retry.EventRetried, retry.EventStarted, retry.EventSucceeded}, rec.Types(flaky))
	require.Equal(t, []retry.EventType{retry.EventEnqueued, retry.EventStarted, retry.EventDead}, rec.Types(perm))
	require.Equal(t, []retry.EventType{retry.EventEnqueued, retry.EventStarted, retry.EventSnoozed, retry.EventStarted, retry.EventSucceeded}, rec.Types(snooze))
}

func TestExpiredJobsAreNotRun(t *testing.T) {
	t.Parallel()
	rec := retrytest.NewRecorder()
	q, clock := retrytest.NewQueue(t, &retry.Config{Observer: rec.Observe})
	var ran atomic.Int32
	q.HandleFunc("push", func(context.Context, *retry.Job) error { ran.Add(1); return errors.New("down") })
	now := clock.Now()
	late, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "push", ExpiresAt: now.Add(time.Minute)})
	require.NoError(t, err)
	// A retry whose next run would fall after expiry expires at once.
	soon, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "push", ExpiresAt: now.Add(2 * time.Hour), RunAt: now.Add(2 * time.Minute)})
	require.NoError(t, err)

	clock.Advance(time.Minute)
	retrytest.RequireDrained(t, q, 1)
	require.Zero(t, ran.Load(), "an expired job must not run")
	j := retrytest.RequireState(t, q, late.ID, retry.StateExpired)
	require.Equal(t, 0, j.Attempt-1, "claimed once, never run")
	require.Equal(t, []retry.EventType{retry.EventEnqueued, retry.EventExpired}, rec.Types(late.ID))

	q2, clock2 := retrytest.NewQueue(t, &retry.Config{Observer: rec.Observe,
		Backoff: func(int, error) time.Duration { return 3 * time.Hour }})
	q2.HandleFunc("push", func(context.Context, *retry.Job) error { return errors.New("down") })
	r, err := q2.Enqueue(bg, retry.EnqueueParams{Kind: "push", ExpiresAt: clock2.Now().Add(2 * time.Hour)})
	require.NoError(t, err)
	retrytest.RequireDrained(t, q2, 1)
	j = retrytest.RequireState(t, q2, r.ID, retry.StateExpired)
	require.Equal(t, "down", j.LastError)
	_ = soon
}

func TestDeadLettersRequeueAndPurge(t *testing.T) {
	t.Parallel()
	q, _ := retrytest.NewQueue(t, nil)
	fail := atomic.Bool{}
	fail.Store(true)
	q.HandleFunc("push", func(context.Context, *retry.Job) error {
		if fail.Load() {
			return retry.Permanent(errors.New("auth"))
		}
		return nil
	})
	for range 3 {
		_, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "push"})
		require.NoError(t, err)
	}
	retrytest.RequireDrained(t, q, 3)
	dead, err := q.DeadLetters(bg, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, dead, 3)

	fail.Store(false)
	require.NoError(t, q.Requeue(bg, dead[0].ID))
	require.ErrorIs(t, q.Requeue(bg, dead[0].ID), retry.ErrNotFound, "no longer dead")
	retrytest.RequireDrained(t, q, 1)
	retrytest.RequireState(t, q, dead[0].ID, retry.StateCompleted)

	n, err := q.Purge(bg, retry.Filter{IDs: []int64{dead[1].ID}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = q.RequeueMatching(bg, retry.Filter{Kind: "push"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	retrytest.RequireDrained(t, q, 1)
	dead, err = q.DeadLetters(bg, retry.Filter{})
	require.NoError(t, err)
	require.Empty(t, dead)
}

func TestStatsLag(t *testing.T) {
	t.Parallel()
	q, clock := retrytest.NewQueue(t, nil)
	_, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "a"})
	require.NoError(t, err)
	_, err = q.Enqueue(bg, retry.EnqueueParams{Kind: "b", RunAt: clock.Now().Add(time.Hour)})
	require.NoError(t, err)
	clock.Advance(5 * time.Minute)
	st, err := q.Stats(bg)
	require.NoError(t, err)
	require.Equal(t, []retry.LaneStats{{Lane: "default", Ready: 1, Scheduled: 1, OldestReady: 5 * time.Minute}}, st)
}

// The tests below run real workers, with the real clock.

func startQueue(t *testing.T, cfg *retry.Config) (*retry.Queue, *retrytest.Recorder) {
	t.Helper()
	rec := retrytest.NewRecorder()
	if cfg == nil {
		cfg = &retry.Config{}
	}
	cfg.Observer = rec.Observe
	cfg.PollInterval = cmpOr(cfg.PollInterval, 10*time.Millisecond)
	store := retry.NewMemoryStore()
	t.Cleanup(func() { _ = store.Close() })
	q, err := retry.New(store, cfg)
	require.NoError(t, err)
	return q, rec
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

func stop(t *testing.T, q *retry.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	require.NoError(t, q.Stop(ctx))
}

func TestWorkersRunJobsWithLaneConcurrency(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, &retry.Config{Lanes: map[string]retry.LaneConfig{
		"transactional": {Concurrency: 4},
		"campaign":      {Concurrency: 2},
	}})
	var cur, peak [2]atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 20)
	for i, lane := range []string{"transactional", "campaign"} {
		q.HandleFunc(lane, func(ctx context.Context, j *retry.Job) error {
			n := cur[i].Add(1)
			defer cur[i].Add(-1)
			for {
				p := peak[i].Load()
				if n <= p || peak[i].CompareAndSwap(p, n) {
					break
				}
			}
			entered <- struct{}{}
			<-release
			return nil
		})
	}
	require.NoError(t, q.Start(bg))
	for range 10 {
		_, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "transactional", Lane: "transactional"})
		require.NoError(t, err)
		_, err = q.Enqueue(bg, retry.EnqueueParams{Kind: "campaign", Lane: "campaign"})
		require.NoError(t, err)
	}
	for range 6 { // 4 + 2 handlers inside at once
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("handlers did not start")
		}
	}
	close(release)
	rec.WaitFor(t, retry.EventSucceeded, 20, 10*time.Second)
	stop(t, q)
	require.Equal(t, int32(4), peak[0].Load(), "transactional concurrency")
	require.Equal(t, int32(2), peak[1].Load(), "campaign concurrency")
}

func TestPauseAndResumeWithWorkers(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, nil)
	q.HandleFunc("k", func(context.Context, *retry.Job) error { return nil })
	require.NoError(t, q.Pause(bg, retry.DefaultLane))
	require.NoError(t, q.Start(bg))
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "k"})
	require.NoError(t, err)
	// Let the lane poll several times: nothing may start.
	require.Never(t, func() bool { return rec.Count(retry.EventStarted) > 0 }, 100*time.Millisecond, 10*time.Millisecond)
	st, err := q.Stats(bg)
	require.NoError(t, err)
	require.True(t, st[0].Paused)
	require.Equal(t, 1, st[0].Ready)
	require.NoError(t, q.Resume(bg, retry.DefaultLane))
	rec.WaitFor(t, retry.EventSucceeded, 1, 5*time.Second)
	stop(t, q)
	j, err := q.Job(bg, r.ID)
	require.NoError(t, err)
	require.Equal(t, retry.StateCompleted, j.State)
}

func TestRateLimitPerLane(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, &retry.Config{Lanes: map[string]retry.LaneConfig{
		"default": {Concurrency: 8, Rate: rate.Limit(100), Burst: 1},
	}})
	var mu sync.Mutex
	var starts []time.Time
	q.HandleFunc("k", func(context.Context, *retry.Job) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil
	})
	batch := make([]retry.EnqueueParams, 21)
	for i := range batch {
		batch[i] = retry.EnqueueParams{Kind: "k"}
	}
	_, err := q.EnqueueBatch(bg, batch)
	require.NoError(t, err)
	require.NoError(t, q.Start(bg))
	rec.WaitFor(t, retry.EventSucceeded, 21, 10*time.Second)
	stop(t, q)
	mu.Lock()
	defer mu.Unlock()
	first, last := starts[0], starts[0]
	for _, s := range starts {
		if s.Before(first) {
			first = s
		}
		if s.After(last) {
			last = s
		}
	}
	// 21 starts at 100/s with a burst of 1 need at least 200ms; unlimited
	// they take well under 10ms.
	require.GreaterOrEqual(t, last.Sub(first), 180*time.Millisecond)
}

func TestStopLetsRunningJobsFinish(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, nil)
	started := make(chan struct{})
	q.HandleFunc("k", func(ctx context.Context, j *retry.Job) error {
		close(started)
		time.Sleep(50 * time.Millisecond) // the work itself, not test ordering
		return nil
	})
	require.NoError(t, q.Start(bg))
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "k"})
	require.NoError(t, err)
	<-started
	stop(t, q)
	require.Equal(t, 1, rec.Count(retry.EventSucceeded))
	j, err := q.Job(bg, r.ID)
	require.NoError(t, err)
	require.Equal(t, retry.StateCompleted, j.State)
}

func TestStopReleasesJobsThatOutliveTheDeadline(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, nil)
	started := make(chan struct{})
	q.HandleFunc("k", func(ctx context.Context, j *retry.Job) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	require.NoError(t, q.Start(bg))
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "k"})
	require.NoError(t, err)
	<-started
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.Stop(ctx), context.DeadlineExceeded)
	j, err := q.Job(bg, r.ID)
	require.NoError(t, err)
	require.Equal(t, retry.StateAvailable, j.State, "handed back for the next worker")
	require.Equal(t, 0, j.Attempt, "the interrupted run is not counted")
	require.Equal(t, 1, rec.Count(retry.EventReleased))
	require.Zero(t, rec.Count(retry.EventRetried))
}

func TestHeartbeatKeepsLongJobsLeased(t *testing.T) {
	t.Parallel()
	// A lease generous enough for a loaded CI machine (the heartbeat runs
	// every lease/3), a job four leases long.
	q, rec := startQueue(t, &retry.Config{LeaseDuration: 300 * time.Millisecond, MaintenanceInterval: 10 * time.Millisecond})
	q.HandleFunc("slow", func(ctx context.Context, j *retry.Job) error {
		select {
		case <-time.After(1200 * time.Millisecond): // four leases long
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	require.NoError(t, q.Start(bg))
	_, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "slow"})
	require.NoError(t, err)
	rec.WaitFor(t, retry.EventSucceeded, 1, 5*time.Second)
	stop(t, q)
	require.Zero(t, rec.Count(retry.EventRescued), "the heartbeat must extend the lease")
	require.Equal(t, 1, rec.Count(retry.EventStarted))
}

func TestLostLeaseCancelsHandlerAndDiscardsOutcome(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, &retry.Config{LeaseDuration: 30 * time.Millisecond, MaintenanceInterval: time.Hour})
	cause := make(chan error, 1)
	started := make(chan struct{})
	q.HandleFunc("k", func(ctx context.Context, j *retry.Job) error {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil // claims success, but it no longer holds the job
	})
	require.NoError(t, q.Start(bg))
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "k"})
	require.NoError(t, err)
	<-started
	// Another worker takes the job over: rescue as if the lease lapsed, then claim.
	store := q.Store()
	future := time.Now().Add(time.Hour)
	_, err = store.Rescue(bg, future)
	require.NoError(t, err)
	other, err := store.Claim(bg, retry.DefaultLane, 1, future, future.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, other, 1)
	select {
	case c := <-cause:
		require.ErrorIs(t, c, retry.ErrLeaseLost)
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled after the lease was lost")
	}
	stop(t, q)
	j, err := q.Job(bg, r.ID)
	require.NoError(t, err)
	require.Equal(t, retry.StateRunning, j.State, "the stale worker's success was fenced off")
	require.Equal(t, other[0].LeaseToken, j.LeaseToken)
	require.Zero(t, rec.Count(retry.EventSucceeded))
}

func TestCrashedWorkersJobsAreRescued(t *testing.T) {
	t.Parallel()
	q, rec := startQueue(t, &retry.Config{LeaseDuration: 30 * time.Millisecond, MaintenanceInterval: 5 * time.Millisecond})
	store := q.Store()
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "k"})
	require.NoError(t, err)
	// A worker that claims and dies.
	now := time.Now()
	_, err = store.Claim(bg, retry.DefaultLane, 1, now, now.Add(30*time.Millisecond))
	require.NoError(t, err)
	q.HandleFunc("k", func(context.Context, *retry.Job) error { return nil })
	require.NoError(t, q.Start(bg))
	rec.WaitFor(t, retry.EventSucceeded, 1, 5*time.Second)
	stop(t, q)
	require.Equal(t, 1, rec.Count(retry.EventRescued))
	j, err := q.Job(bg, r.ID)
	require.NoError(t, err)
	require.Equal(t, 2, j.Attempt)
}

func TestStartTwiceFails(t *testing.T) {
	t.Parallel()
	q, _ := startQueue(t, nil)
	require.NoError(t, q.Start(bg))
	require.Error(t, q.Start(bg))
	stop(t, q)
	require.NoError(t, q.Stop(bg), "a second Stop is a no-op")
}

func TestPanicErrorKeepsStack(t *testing.T) {
	t.Parallel()
	q, _ := retrytest.NewQueue(t, nil)
	q.HandleFunc("p", func(context.Context, *retry.Job) error { panic(errors.New("nil map")) })
	r, err := q.Enqueue(bg, retry.EnqueueParams{Kind: "p"})
	require.NoError(t, err)
	retrytest.RequireDrained(t, q, 1)
	j := retrytest.RequireState(t, q, r.ID, retry.StateScheduled)
	require.True(t, strings.HasPrefix(j.LastError, "panic: nil map"), j.LastError)
	require.Contains(t, j.LastError, "queue_test.go")
}
