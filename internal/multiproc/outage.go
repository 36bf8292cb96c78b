package multiproc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Survive enqueues jobs with idempotency keys from 4 producers, retrying
// refused enqueues with the same key, while q works them; at the given
// numbers of acknowledged enqueues it runs the disruptions (restart the
// server, drop connections). It then waits for every acknowledged job to
// have run and checks that none was lost.
func Survive(t *testing.T, q *retry.Queue, jobs int, disruptions map[int]func()) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	sent := map[int64]int{}
	q.HandleFunc("send", func(_ context.Context, j *retry.Job) error {
		mu.Lock()
		sent[j.ID]++
		mu.Unlock()
		return nil
	})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var acked sync.Map // key -> job ID
	var ackCount, refused int
	var ackMu sync.Mutex
	fired := map[int]bool{}
	var wg sync.WaitGroup
	next := make(chan int, jobs)
	for i := range jobs {
		next <- i
	}
	close(next)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				key := fmt.Sprint("outage-", i)
				for {
					r, err := q.Enqueue(ctx, retry.EnqueueParams{Kind: "send", IdempotencyKey: key})
					if err == nil {
						acked.Store(key, r.ID)
						break
					}
					if !errors.Is(err, retry.ErrNotAccepted) {
						t.Errorf("enqueue: %v", err)
						return
					}
					ackMu.Lock()
					refused++
					ackMu.Unlock()
					time.Sleep(50 * time.Millisecond) // the caller's retry with the same key
				}
				ackMu.Lock()
				ackCount++
				run := due(disruptions, fired, ackCount)
				ackMu.Unlock()
				if run != nil {
					run()
				}
			}
		}()
	}
	wg.Wait()
	ids := map[int64]bool{}
	acked.Range(func(_, v any) bool { ids[v.(int64)] = true; return true })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		missing := 0
		for id := range ids {
			if sent[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged jobs never ran", missing, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = q.Stop(sctx)
	if len(ids) != jobs {
		t.Fatalf("%d distinct jobs for %d keys: a retried enqueue made a second job", len(ids), jobs)
	}
	t.Logf("jobs=%d acknowledged=%d refused_then_retried=%d disruptions=%d lost=0", jobs, len(ids), refused, len(fired))
}

// Shell runs a command (a server restart that .ci/run provides).
func Shell(t *testing.T, command string) func() {
	return func() {
		out, err := exec.Command("sh", "-c", command).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", command, err, out)
		}
	}
}

// due returns the first disruption whose count has been reached and that
// has not fired yet, marking it fired (the caller holds the lock on fired).
func due(disruptions map[int]func(), fired map[int]bool, count int) func() {
	for at, d := range disruptions {
		if count >= at && !fired[at] {
			fired[at] = true
			return d
		}
	}
	return nil
}
