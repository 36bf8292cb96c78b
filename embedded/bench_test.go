package embedded_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
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
			var total, busy time.Duration
			for range b.N {
				b.StopTimer()
				db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var before embedded.WriteStats
				d, err := bench.EndToEnd(context.Background(), db.Retry(), jobs, 16, failFirst, func() { before = db.WriteStats() })
				if err != nil {
					b.Fatal(err)
				}
				total += d
				busy += db.WriteStats().Busy - before.Busy
				b.StopTimer()
				_ = db.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(jobs*b.N)/total.Seconds(), "jobs/s")
			// The writer's share of the worked time (the fill excluded).
			b.ReportMetric(busy.Seconds()/total.Seconds(), "writer-busy")
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

// BenchmarkTrack measures tracking through the durable outbox on the
// embedded store: caller latency of Track (median, per call) and events
// per second until the journal holds them all (Flush included).
//
//	go test -run '^$' -bench 'Track|Ingest' -benchtime 200000x ./embedded/
func BenchmarkTrack(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("goroutines=%d", par), func(b *testing.B) {
			db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			o, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{Buffer: b.N + 1})
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close(context.Background())
			at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			var seq atomic.Int64
			lat := make([][]time.Duration, par)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := seq.Add(1)
						if i > int64(b.N) {
							return
						}
						e := tracking.Event{ID: strconv.FormatInt(i, 10), MessageID: "m" + strconv.FormatInt(i, 10), Type: tracking.Sent,
							Channel: "push", Provider: "apns", Campaign: "spring", At: at}
						t := time.Now()
						if err := o.Track(context.Background(), e); err != nil {
							b.Error(err)
							return
						}
						lat[g] = append(lat[g], time.Since(t))
					}
				}()
			}
			wg.Wait()
			if err := o.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-track-ns")
			b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-track-ns")
		})
	}
}

// BenchmarkIngest posts batches of 10 engagement events to the ingest
// handler (in process, no network) on the embedded store.
func BenchmarkIngest(b *testing.B) {
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	o, err := tracking.NewOutbox(db.Tracking(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close(context.Background())
	h := tracking.IngestHandler(o, &tracking.IngestConfig{MaxInFlight: 1024})
	var seq atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			var sb strings.Builder
			sb.WriteString(`{"events":[`)
			for k := range 10 {
				if k > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, `{"id":"c%d-%d","message_id":"m%d","type":"opened","at":"2026-01-01T00:00:00Z","campaign":"spring"}`, n, k, n)
			}
			sb.WriteString(`]}`)
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(http.MethodPost, "/events", strings.NewReader(sb.String())))
			if rr.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", rr.Code, rr.Body.String())
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "requests/s")
	b.ReportMetric(10*float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkDrainPart is a campaign's drained part in the store's writer:
// 20 jobs (about 1 KB each, as a push campaign's) enqueued in the same
// write as their staged page's offset (a page of 100, ~25 KB), beside the
// same 20 jobs enqueued alone. ns/op is one part, its commit included.
func BenchmarkDrainPart(b *testing.B) {
	for _, paged := range []bool{false, true} {
		b.Run(fmt.Sprintf("paged=%v", paged), func(b *testing.B) { benchDrainPart(b, paged) })
	}
}

func benchDrainPart(b *testing.B, paged bool) {
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	cks := db.Checkpoints()
	if _, _, err := cks.Create(ctx, checkpoint.Record{Key: "c", Spec: []byte(strings.Repeat("s", 2000)), Created: time.Now()}); err != nil {
		b.Fatal(err)
	}
	const part, page = 20, 100
	page0 := []byte(strings.Repeat("p", 25000))
	payload := []byte(strings.Repeat("j", 1000))
	seq, off := int64(0), page
	b.ResetTimer()
	for i := range b.N {
		if off == page && paged {
			b.StopTimer()
			if err := cks.Stage(ctx, "c", strconv.Itoa(i), page, 0, false, page0, page); err != nil {
				b.Fatal(err)
			}
			seq, off = seq+1, 0
			b.StartTimer()
		}
		jobs := make([]*retry.Job, part)
		for j := range jobs {
			jobs[j] = &retry.Job{Kind: "push", Lane: "campaign", Payload: payload, IdempotencyKey: fmt.Sprintf("c/%d/%d", i, j), MaxAttempts: 5, RunAt: time.Now()}
		}
		off += part
		var e retry.Enqueuer = db.Retry()
		if paged {
			e = cks.Drain("c", seq, off, 0)
		}
		if _, err := e.Enqueue(ctx, jobs, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}
