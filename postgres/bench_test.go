package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/retry"
)

// The embedded store's scenarios on PostgreSQL (set HERALD_POSTGRES_URL):
//
//	go test -run '^$' -bench . -benchtime 1x -count 3 ./postgres/
func BenchmarkQueue(b *testing.B) {
	p := benchPool(b)
	ctx := context.Background()
	newQueue := func(b *testing.B) (*retry.Queue, retry.Store) {
		db, _ := freshDB(b, p)
		q, err := retry.New(db.Retry(), nil)
		if err != nil {
			b.Fatal(err)
		}
		return q, db.Retry()
	}
	b.Run("enqueue/producers=16", func(b *testing.B) {
		q, _ := newQueue(b)
		d, err := bench.Enqueue(ctx, q, 16, 20_000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(20_000/d.Seconds(), "jobs/s")
	})
	b.Run("batch=100", func(b *testing.B) {
		q, _ := newQueue(b)
		d, err := bench.EnqueueBatch(ctx, q, 100, 100_000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100_000/d.Seconds(), "jobs/s")
	})
	for _, failFirst := range []bool{false, true} {
		b.Run(fmt.Sprintf("end-to-end/retry-once=%v", failFirst), func(b *testing.B) {
			_, s := newQueue(b)
			jobs := 100_000 // the embedded store's scenarios: 100k end to end, 50k failing once
			if failFirst {
				jobs = 50_000
			}
			d, err := bench.EndToEnd(ctx, s, jobs, 16, failFirst)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(jobs)/d.Seconds(), "jobs/s")
		})
	}
}
