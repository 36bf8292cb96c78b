package embedded_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/retry"
)

// Run with: go test -run '^$' -bench . -benchtime 3s ./embedded/
// Each benchmark reports jobs/s; b.N counts jobs (or batches for the batch
// benchmark), so ns/op is the cost of one job.

func benchQueue(b *testing.B) (*retry.Queue, *embedded.DB) {
	b.Helper()
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	q, err := retry.New(db.Retry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return q, db
}

func BenchmarkFsync(b *testing.B) {
	rate, err := bench.FsyncRate(b.TempDir(), 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate, "fsyncs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	for _, producers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			q, _ := benchQueue(b)
			b.ResetTimer()
			d, err := bench.Enqueue(context.Background(), q, producers, b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/d.Seconds(), "jobs/s")
		})
	}
}

func BenchmarkEnqueueBatch100(b *testing.B) {
	q, _ := benchQueue(b)
	b.ResetTimer()
	d, err := bench.EnqueueBatch(context.Background(), q, 100, 100*b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(100*b.N)/d.Seconds(), "jobs/s")
}

// BenchmarkEndToEnd works 100,000 waiting jobs with 16 workers per
// iteration: run it with -benchtime 1x (or Nx).
func BenchmarkEndToEnd(b *testing.B) {
	for _, failFirst := range []bool{false, true} {
		name := "noop"
		if failFirst {
			name = "retry-once"
		}
		b.Run(name, func(b *testing.B) {
			const jobs = 100_000
			var total time.Duration
			for range b.N {
				b.StopTimer()
				db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				d, err := bench.EndToEnd(context.Background(), db.Retry(), jobs, 16, failFirst)
				if err != nil {
					b.Fatal(err)
				}
				total += d
				b.StopTimer()
				_ = db.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(jobs*b.N)/total.Seconds(), "jobs/s")
		})
	}
}

func BenchmarkReserveCommit(b *testing.B) {
	bench.ReserveCommit(b, func(b *testing.B) capping.Store {
		db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		return db.Capping()
	})
}
