// Package bench holds the queue scenarios that the Go benchmarks and the
// heraldbench program both run, so the figures in BENCHMARKS.md come from
// one implementation whatever the store.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Payload is the job body of every scenario: about 300 bytes, as in the
// engine measurements in the research notes.
var Payload = func() []byte {
	b := make([]byte, 300)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// FsyncRate measures how many write+fdatasync rounds of 4 KiB per second the
// disk under dir sustains for d: the ceiling of any durable queue there.
func FsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%64)*4096); err != nil {
			return 0, err
		}
		if err := fdatasync(f); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// Enqueue runs producers goroutines that enqueue total jobs one at a time
// and returns the elapsed time.
func Enqueue(ctx context.Context, q *retry.Queue, producers, total int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	start := time.Now()
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if _, err := q.Enqueue(ctx, retry.EnqueueParams{Kind: "bench", Payload: Payload}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return time.Since(start), <-errs
}

// EnqueueBatch enqueues total jobs in batches of size from one goroutine.
func EnqueueBatch(ctx context.Context, q *retry.Queue, size, total int) (time.Duration, error) {
	batch := make([]retry.EnqueueParams, size)
	for i := range batch {
		batch[i] = retry.EnqueueParams{Kind: "bench", Payload: Payload}
	}
	start := time.Now()
	for done := 0; done < total; done += size {
		if _, err := q.EnqueueBatch(ctx, batch[:min(size, total-done)]); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// Fill enqueues total jobs in batches of 1,000 (not timed by callers).
func Fill(ctx context.Context, q *retry.Queue, total int) error {
	_, err := EnqueueBatch(ctx, q, 1000, total)
	return err
}

// EndToEnd fills store with jobs, then works them with a no-op handler at
// the given concurrency and returns the time from Start until the last
// job completed. When failFirst is set every job fails once and is retried
// at once (the retry path), so each job is claimed twice. Each started
// function runs once the fill is done, just before the clock starts.
func EndToEnd(ctx context.Context, store retry.Store, jobs, concurrency int, failFirst bool, started ...func()) (time.Duration, error) {
	var completed atomic.Int64
	done := make(chan struct{})
	q, err := retry.New(store, &retry.Config{
		Lanes:        map[string]retry.LaneConfig{retry.DefaultLane: {Concurrency: concurrency}},
		PollInterval: 5 * time.Millisecond,
		Backoff:      func(int, error) time.Duration { return 0 },
		Observer: func(e retry.Event) {
			if e.Type == retry.EventSucceeded && completed.Add(1) == int64(jobs) {
				close(done)
			}
		},
	})
	if err != nil {
		return 0, err
	}
	errFail := errors.New("first attempt fails")
	q.HandleFunc("bench", func(_ context.Context, j *retry.Job) error {
		if failFirst && j.Attempt == 1 {
			return errFail
		}
		return nil
	})
	if err := Fill(ctx, q, jobs); err != nil {
		return 0, err
	}
	for _, f := range started {
		f()
	}
	start := time.Now()
	if err := q.Start(ctx); err != nil {
		return 0, err
	}
	var elapsed time.Duration
	select {
	case <-done:
		elapsed = time.Since(start)
	case <-time.After(10 * time.Minute):
		err = fmt.Errorf("bench: %d of %d jobs completed in 10 minutes", completed.Load(), jobs)
	}
	if stopErr := q.Stop(ctx); err == nil {
		err = stopErr
	}
	return elapsed, err
}

// TempPath returns a store path in a new temporary directory under dir
// (the system's when empty) and a function that removes it.
func TempPath(dir string) (string, func(), error) {
	d, err := os.MkdirTemp(dir, "heraldbench-*")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(d, "herald.db"), func() { _ = os.RemoveAll(d) }, nil
}
