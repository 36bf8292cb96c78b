package retrytest_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/retrytest"
)

// retrytest gives a host app a queue with a clock it controls, so a test
// can walk a job through its retries without waiting.
func ExampleNewQueue() {
	t := &exampletb.TB{}
	defer t.Done()
	q, clock := retrytest.NewQueue(t, nil) // attempt n backs off n seconds
	calls := 0
	q.HandleFunc("push", func(ctx context.Context, j *retry.Job) error {
		calls++
		if calls < 3 {
			return errors.New("APNs 503")
		}
		return nil
	})
	r, _ := q.Enqueue(context.Background(), retry.EnqueueParams{Kind: "push"})
	for range 3 {
		q.Drain(context.Background())
		j, _ := q.Job(context.Background(), r.ID)
		if j.State == retry.StateScheduled {
			fmt.Println(j.State, "after attempt", j.Attempt, "- next run in", j.RunAt.Sub(clock.Now()))
		} else {
			fmt.Println(j.State, "after attempt", j.Attempt)
		}
		clock.Advance(time.Hour)
	}
	// Output:
	// scheduled after attempt 1 - next run in 1s
	// scheduled after attempt 2 - next run in 2s
	// completed after attempt 3
}
