package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/audience/audiencetest"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/checkpoint/checkpointtest"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/eligibility/eligibilitytest"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/inbox/inboxtest"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/internal/storereg"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
	"github.com/heraldhq/herald/tracking"
)

func TestMain(m *testing.M) {
	if os.Getenv(multiproc.EnvWorker) != "" {
		os.Exit(worker())
	}
	goleak.VerifyTestMain(m)
}

// worker is a worker process of TestThreeWorkerProcessesShareTheQueue.
func worker() int {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("HERALD_REDIS_ADDR")})
	defer c.Close()
	s, err := redisstore.New(context.Background(), c, &redisstore.Config{Prefix: os.Getenv(multiproc.EnvTarget)})
	if err != nil {
		return 1
	}
	return multiproc.Worker(s)
}

// Three worker processes share one queue; one is killed mid-run. Every job
// completes, and repeats stay within the jobs in flight at the kill.
func TestThreeWorkerProcessesShareTheQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test: skipped with -short")
	}
	c := client(t)
	ctx := context.Background()
	p := newPrefix(t, c)
	s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
	require.NoError(t, err)
	q, err := retry.New(s, nil)
	require.NoError(t, err)
	const jobs = 30_000
	batch := make([]retry.EnqueueParams, 1000)
	for i := range batch {
		batch[i] = retry.EnqueueParams{Kind: "send"}
	}
	for range jobs / len(batch) {
		_, err := q.EnqueueBatch(ctx, batch)
		require.NoError(t, err)
	}
	stat := func() retry.LaneStats {
		st, err := s.Stats(ctx, time.Now())
		require.NoError(t, err)
		return st[0]
	}
	multiproc.Run(t, filepath.Join(t.TempDir(), "ledger"), multiproc.Options{
		Jobs: jobs, Workers: 3, KillAfter: 5_000, Target: p,
		InFlight:  func() int { return stat().Running },
		Completed: func() int { return stat().Completed },
	})
}

// client connects to HERALD_REDIS_ADDR (set by .ci/run). Without it the
// test skips on a developer's machine and fails in CI.
func client(t testing.TB) *redis.Client {
	t.Helper()
	addr := os.Getenv("HERALD_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("HERALD_REDIS_ADDR is not set in CI: .ci/run must start Redis")
		}
		t.Skip("no Redis: run `bash .ci/run`, or set HERALD_REDIS_ADDR=127.0.0.1:6379")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newPrefix returns a fresh key prefix whose keys are deleted when tb ends.
func newPrefix(tb testing.TB, c *redis.Client) string {
	p := prefix()
	tb.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, "{"+p+"}:*").Result()
		for len(keys) > 0 {
			n := min(1000, len(keys))
			c.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
	})
	return p
}

func prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func TestRetryConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	ctx := context.Background()
	prefixes := storereg.New[retry.Store]()
	open := func(t *testing.T, p string) retry.Store {
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		require.NoError(t, err)
		return s
	}
	storetest.Run(t, func(t *testing.T) retry.Store {
		p := newPrefix(t, c)
		s := open(t, p)
		prefixes.Put(s, p)
		return s
	}, &storetest.Options{
		Reopen: func(t *testing.T, s retry.Store) retry.Store {
			require.NoError(t, s.Close())
			p := prefixes.Get(s)
			return open(t, p)
		},
	})
}

func TestDurabilityIsReported(t *testing.T) {
	t.Parallel()
	c := client(t)
	s, err := redisstore.New(context.Background(), c, nil)
	require.NoError(t, err)
	d, err := s.Durability(context.Background())
	require.NoError(t, err)
	require.Equal(t, d.AppendOnly == "yes" && d.AppendFsync == "always", d.Durable)
}

func TestCappingConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	ctx := context.Background()
	prefixes := storereg.New[capping.Store]()
	open := func(t *testing.T, p string) capping.Store {
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		require.NoError(t, err)
		return s.Capping()
	}
	cappingtest.Run(t, func(t *testing.T) capping.Store {
		p := newPrefix(t, c)
		s := open(t, p)
		prefixes.Put(s, p)
		return s
	}, &cappingtest.Options{
		Reopen: func(t *testing.T, s capping.Store) capping.Store {
			require.NoError(t, s.Close())
			p := prefixes.Get(s)
			return open(t, p)
		},
	})
}

// Connections dropped and Redis crashed (SIGKILL) and restarted with its
// append-only file: nothing acknowledged is lost.
func TestSurvivesRedisCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("failure test: skipped with -short")
	}
	c := client(t)
	ctx := context.Background()
	cmd := restartCommand(t)
	p := newPrefix(t, c)
	s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
	require.NoError(t, err)
	d, err := s.Durability(ctx)
	require.NoError(t, err)
	require.True(t, d.Durable, "the test needs appendonly yes + appendfsync always, as .ci/run starts Redis")
	q, err := retry.New(s, &retry.Config{PollInterval: 20 * time.Millisecond, LeaseDuration: 5 * time.Second})
	require.NoError(t, err)
	drop := func() { _ = c.ClientKillByFilter(ctx, "TYPE", "normal").Err() }
	multiproc.Survive(t, q, 3000, map[int]func(){300: drop, 1200: multiproc.Shell(t, cmd)})
}

// evalCounter counts the scripts a client sends.
type evalCounter struct{ n atomic.Int64 }

func (*evalCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (e *evalCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			e.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (*evalCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Concurrent enqueue calls share scripts (the coalescer), and each call
// still gets its own jobs: payloads land under the IDs returned to their
// caller, and a key used by several calls makes one job.
func TestConcurrentEnqueuesAreCoalescedAndKeepTheirOwnResults(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	var scripts evalCounter
	c.AddHook(&scripts)
	s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: newPrefix(t, c), EnqueueFlights: 1})
	require.NoError(t, err)
	q, err := retry.New(s, nil)
	require.NoError(t, err)
	const producers, each = 16, 40
	var mu sync.Mutex
	got := map[int64]string{} // ID -> payload its caller sent
	shared := map[int64]bool{}
	var wg sync.WaitGroup
	for w := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := retry.EnqueueParams{Kind: "k", Payload: fmt.Appendf(nil, "w%d-%d", w, i)}
				if i%10 == 0 {
					p.IdempotencyKey = fmt.Sprint("shared-", i) // every producer sends these keys
				}
				res, err := q.Enqueue(ctx, p)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				if p.IdempotencyKey != "" {
					shared[res.ID] = true
				} else {
					assert.NotContains(t, got, res.ID, "an ID given to two calls")
					got[res.ID] = string(p.Payload)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Len(t, shared, each/10, "one job per shared key, whoever's script carried it")
	require.Len(t, got, producers*(each-each/10))
	for id, payload := range got {
		j, err := s.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, payload, string(j.Payload), "job %d holds another call's payload", id)
	}
	calls := int64(producers * each)
	require.Less(t, scripts.n.Load(), calls, "%d scripts for %d concurrent calls: nothing was coalesced", scripts.n.Load(), calls)
	t.Logf("%d enqueue calls in %d scripts", calls, scripts.n.Load())
}

func TestEligibilityConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	ctx := context.Background()
	prefixes := storereg.New[eligibility.Store]()
	open := func(t *testing.T, p string) eligibility.Store {
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		require.NoError(t, err)
		return s.Eligibility()
	}
	eligibilitytest.Run(t, func(t *testing.T) eligibility.Store {
		p := newPrefix(t, c)
		s := open(t, p)
		prefixes.Put(s, p)
		return s
	}, &eligibilitytest.Options{
		Reopen: func(t *testing.T, s eligibility.Store) eligibility.Store {
			require.NoError(t, s.Close())
			return open(t, prefixes.Get(s))
		},
	})
}

func TestCheckpointConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	checkpointtest.Run(t, func(t *testing.T) (checkpoint.Store, retry.Store) {
		s, err := redisstore.New(context.Background(), c, &redisstore.Config{Prefix: newPrefix(t, c)})
		require.NoError(t, err)
		return s.Checkpoints(), s
	})
}

func TestAudienceConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	audiencetest.Run(t, func(t *testing.T) audience.Store {
		s, err := redisstore.New(context.Background(), c, &redisstore.Config{Prefix: newPrefix(t, c)})
		require.NoError(t, err)
		return s.Audiences()
	}, nil)
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	inboxtest.Run(t, func(t *testing.T) (inbox.Store, retry.Store) {
		s, err := redisstore.New(context.Background(), c, &redisstore.Config{Prefix: newPrefix(t, c)})
		require.NoError(t, err)
		return s.Inbox(), s
	})
}

// The whole send path through Redis crashes: clients killed, then the
// server SIGKILLed and restarted on its append-only file, while a
// Dispatcher with capping on the same server takes and sends messages.
// (Redis has no tracking journal: the journal here is in memory.)
func TestDispatcherSurvivesRedisCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("failure test: skipped with -short")
	}
	c := client(t)
	ctx := context.Background()
	cmd := restartCommand(t)
	s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: newPrefix(t, c)})
	require.NoError(t, err)
	drop := func() { _ = c.ClientKillByFilter(ctx, "TYPE", "normal").Err() }
	multiproc.SurviveDispatcher(t, multiproc.Stores{Retry: s, Capping: s.Capping(), Tracking: tracking.NewMemoryStore()},
		map[int]func(){200: drop, 700: multiproc.Shell(t, cmd)})
}

// restartCommand is the shell command that crashes and restarts Redis
// (.ci/run provides it): a failure under CI without it, a skip elsewhere.
func restartCommand(t *testing.T) string {
	t.Helper()
	cmd := os.Getenv("HERALD_REDIS_RESTART")
	if cmd == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("HERALD_REDIS_RESTART is not set in CI: .ci/run must provide the restart command")
		}
		t.Skip("HERALD_REDIS_RESTART not set (bash .ci/run sets it)")
	}
	return cmd
}
