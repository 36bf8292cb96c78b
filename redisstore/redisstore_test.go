package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/internal/storereg"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
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
	cmd := os.Getenv("HERALD_REDIS_RESTART")
	if cmd == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("HERALD_REDIS_RESTART is not set in CI: .ci/run must provide the restart command")
		}
		t.Skip("HERALD_REDIS_RESTART not set (bash .ci/run sets it)")
	}
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
