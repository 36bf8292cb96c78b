package embedded_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/retry"
)

// One file holds the queue, the capping counters and the tracking
// journal; what was enqueued survives a close (or a crash) and a reopen.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "herald-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "herald.db")
	ctx := context.Background()

	db, _ := embedded.Open(path, nil)
	q, _ := retry.New(db.Retry(), nil)
	r, _ := q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome", IdempotencyKey: "signup-42"})
	_ = db.Close()

	db, _ = embedded.Open(path, nil) // another process, after a restart
	defer db.Close()
	j, _ := db.Retry().Get(ctx, r.ID)
	fmt.Println(j.Kind, j.IdempotencyKey, j.State)
	// Output:
	// welcome signup-42 available
}
