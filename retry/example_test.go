package retry_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/retry"
)

// A handler steers retries with its return value; Drain works due jobs in
// the caller, which suits tests.
func ExampleQueue_Drain() {
	q, _ := retry.New(retry.NewMemoryStore(), nil)
	q.HandleFunc("welcome-email", func(ctx context.Context, j *retry.Job) error {
		fmt.Printf("sending %s (attempt %d)\n", j.Payload, j.Attempt)
		return nil
	})
	ctx := context.Background()
	r, _ := q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome-email", Payload: []byte("ada@example.com"), IdempotencyKey: "signup-42"})
	again, _ := q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome-email", Payload: []byte("ada@example.com"), IdempotencyKey: "signup-42"})
	fmt.Println("same job:", r.ID == again.ID, "duplicate:", again.Duplicate)
	n, _ := q.Drain(ctx)
	fmt.Println("handled:", n)
	// Output:
	// same job: true duplicate: true
	// sending ada@example.com (attempt 1)
	// handled: 1
}

// A permanent error skips the retries and goes to the dead letters, where an
// operator can requeue it once the cause is fixed.
func ExampleQueue_DeadLetters() {
	q, _ := retry.New(retry.NewMemoryStore(), nil)
	ctx := context.Background()
	fixed := false
	q.HandleFunc("sms", func(ctx context.Context, j *retry.Job) error {
		if !fixed {
			return retry.Permanent(errors.New("twilio 21211: invalid 'To' number"))
		}
		return nil
	})
	r, _ := q.Enqueue(ctx, retry.EnqueueParams{Kind: "sms"})
	q.Drain(ctx)
	dead, _ := q.DeadLetters(ctx, retry.Filter{})
	fmt.Println(len(dead), dead[0].LastError)
	fixed = true
	_ = q.Requeue(ctx, r.ID)
	q.Drain(ctx)
	j, _ := q.Job(ctx, r.ID)
	fmt.Println(j.State)
	// Output:
	// 1 permanent: twilio 21211: invalid 'To' number
	// completed
}
