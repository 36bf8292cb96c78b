// Command quickstart shows the queue alone, without the Dispatcher (the
// main job is examples/outage): it opens the embedded store (one file, no
// external service), enqueues a burst of "send" jobs
// with idempotency keys, works them with retries, expiry and a dead
// letter, and prints what happened.
//
//	go run ./examples/quickstart            # store in a temporary directory
//	go run ./examples/quickstart -db my.db  # keep the store; run it twice to see
//	                                        # idempotency keys refuse the repeats
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/retry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dbPath := flag.String("db", "", "store file (default: a new temporary file)")
	n := flag.Int("n", 1000, "jobs to enqueue")
	flag.Parse()
	if *dbPath == "" {
		dir, err := os.MkdirTemp("", "herald-quickstart-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*dbPath = filepath.Join(dir, "herald.db")
	}

	db, err := embedded.Open(*dbPath, nil)
	if err != nil {
		return err
	}
	defer db.Close()

	var succeeded, retried, dead, expired, finished atomic.Int64
	q, err := retry.New(db.Retry(), &retry.Config{
		Lanes: map[string]retry.LaneConfig{
			"transactional": {Concurrency: 8},
			"campaign":      {Concurrency: 4, Rate: 2000, Burst: 50}, // drain at a pace providers accept
		},
		Backoff: func(attempt int, _ error) time.Duration { return 50 * time.Millisecond * time.Duration(attempt) },
		Observer: func(e retry.Event) {
			switch e.Type {
			case retry.EventSucceeded:
				succeeded.Add(1)
			case retry.EventRetried:
				retried.Add(1)
				return
			case retry.EventDead:
				dead.Add(1)
			case retry.EventExpired:
				expired.Add(1)
			default:
				return
			}
			finished.Add(1)
		},
	})
	if err != nil {
		return err
	}

	// The "provider": fails every 10th message once, refuses every 100th for good.
	q.HandleFunc("send", func(ctx context.Context, j *retry.Job) error {
		var i int
		fmt.Sscanf(string(j.Payload), "message %d", &i)
		switch {
		case i%100 == 99:
			return retry.Permanent(errors.New("invalid device token"))
		case i%10 == 9 && j.Attempt == 1:
			return retry.RetryAfter(errors.New("provider busy"), 20*time.Millisecond)
		}
		return nil
	})

	now := time.Now()
	batch := make([]retry.EnqueueParams, *n)
	for i := range batch {
		lane := "campaign"
		if i%4 == 0 {
			lane = "transactional"
		}
		batch[i] = retry.EnqueueParams{
			Kind:           "send",
			Lane:           lane,
			Payload:        fmt.Appendf(nil, "message %d", i),
			IdempotencyKey: fmt.Sprintf("quickstart-%d", i),
			ExpiresAt:      now.Add(time.Hour),
		}
	}
	// One message that stopped mattering before it could be sent.
	batch = append(batch, retry.EnqueueParams{Kind: "send", Lane: "campaign", Payload: []byte("message 0"),
		IdempotencyKey: "quickstart-stale", RunAt: now, ExpiresAt: now.Add(time.Millisecond)})
	res, err := q.EnqueueBatch(ctx, batch)
	if err != nil {
		return err
	}
	fresh := 0
	for _, r := range res {
		if !r.Duplicate {
			fresh++
		}
	}
	fmt.Printf("enqueued %d jobs durably in %s (%d already known by idempotency key)\n", fresh, time.Since(now).Round(time.Millisecond), len(res)-fresh)
	time.Sleep(2 * time.Millisecond) // let the stale message pass its deadline

	start := time.Now()
	if err := q.Start(ctx); err != nil {
		return err
	}
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for finished.Load() < int64(fresh) {
		select {
		case <-ctx.Done():
			return q.Stop(context.Background())
		case <-ticker.C:
		}
	}
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := q.Stop(stopCtx); err != nil {
		return err
	}
	fmt.Printf("worked in %s: %d succeeded, %d retries, %d dead letters, %d expired unsent\n",
		time.Since(start).Round(time.Millisecond), succeeded.Load(), retried.Load(), dead.Load(), expired.Load())
	stats, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	for _, s := range stats {
		fmt.Printf("lane %-13s ready %d, scheduled %d, running %d, completed %d, dead %d, expired %d\n",
			s.Lane, s.Ready, s.Scheduled, s.Running, s.Completed, s.Dead, s.Expired)
	}
	deadJobs, err := q.DeadLetters(ctx, retry.Filter{Limit: 1})
	if err != nil {
		return err
	}
	if len(deadJobs) > 0 {
		fmt.Printf("first dead letter: job %d, %q\n", deadJobs[0].ID, deadJobs[0].LastError)
	}
	return nil
}
