package redisstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
)

// The embedded store's scenarios on Redis (set HERALD_REDIS_ADDR):
//
//	go test -run '^$' -bench . -benchtime 1x -count 3 ./redisstore/
func BenchmarkQueue(b *testing.B) {
	ctx := context.Background()
	c := clientTB(b)
	newStore := func(b *testing.B) retry.Store {
		p := newPrefix(b, c)
		s, err := redisstore.New(ctx, c, &redisstore.Config{Prefix: p})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	newQueue := func(b *testing.B) *retry.Queue {
		q, err := retry.New(newStore(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		return q
	}
	b.Run("enqueue/producers=16", func(b *testing.B) {
		d, err := bench.Enqueue(ctx, newQueue(b), 16, 20_000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(20_000/d.Seconds(), "jobs/s")
	})
	b.Run("batch=100", func(b *testing.B) {
		d, err := bench.EnqueueBatch(ctx, newQueue(b), 100, 100_000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100_000/d.Seconds(), "jobs/s")
	})
	for _, failFirst := range []bool{false, true} {
		b.Run(fmt.Sprintf("end-to-end/retry-once=%v", failFirst), func(b *testing.B) {
			jobs := 100_000 // the embedded store's scenarios: 100k end to end, 50k failing once
			if failFirst {
				jobs = 50_000
			}
			d, err := bench.EndToEnd(ctx, newStore(b), jobs, 16, failFirst)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(jobs)/d.Seconds(), "jobs/s")
		})
	}
}

func clientTB(b *testing.B) *redis.Client { return client(b) }
