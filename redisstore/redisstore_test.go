package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

func prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func TestRetryConformance(t *testing.T) {
	t.Parallel()
	c := client(t)
	ctx := context.Background()
	var mu sync.Mutex
	prefixes := map[retry.Store]string{}
	open := func(t *testing.T, p string) retry.Store {
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		require.NoError(t, err)
		return s
	}
	storetest.Run(t, func(t *testing.T) retry.Store {
		p := prefix()
		s := open(t, p)
		mu.Lock()
		prefixes[s] = p
		mu.Unlock()
		t.Cleanup(func() {
			keys, _ := c.Keys(ctx, "{"+p+"}:*").Result()
			if len(keys) > 0 {
				c.Del(ctx, keys...)
			}
		})
		return s
	}, &storetest.Options{
		Reopen: func(t *testing.T, s retry.Store) retry.Store {
			require.NoError(t, s.Close())
			mu.Lock()
			p := prefixes[s]
			mu.Unlock()
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
	var mu sync.Mutex
	prefixes := map[capping.Store]string{}
	open := func(t *testing.T, p string) capping.Store {
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		require.NoError(t, err)
		return s.Capping()
	}
	cappingtest.Run(t, func(t *testing.T) capping.Store {
		p := prefix()
		s := open(t, p)
		mu.Lock()
		prefixes[s] = p
		mu.Unlock()
		t.Cleanup(func() {
			keys, _ := c.Keys(ctx, "{"+p+"}:*").Result()
			if len(keys) > 0 {
				c.Del(ctx, keys...)
			}
		})
		return s
	}, &cappingtest.Options{
		Reopen: func(t *testing.T, s capping.Store) capping.Store {
			require.NoError(t, s.Close())
			mu.Lock()
			p := prefixes[s]
			mu.Unlock()
			return open(t, p)
		},
	})
}
