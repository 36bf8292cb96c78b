// Package retry is herald's durable job queue, the part every promise
// stands on: a job enqueued is on stable storage (or committed in the
// shared database) before Enqueue returns, and it runs until it
// succeeds, fails for good, or passes its deadline — never after it.
//
// A Queue runs on a Store: the embedded SQLite file
// (github.com/heraldhq/herald/embedded, the default), PostgreSQL
// (github.com/heraldhq/herald/postgres), Redis
// (github.com/heraldhq/herald/redisstore) or the in-memory store of
// NewMemoryStore for tests. Every store passes the conformance suite in
// retry/storetest; retry/retrytest helps host apps test code that
// enqueues.
//
// What the queue does: idempotent enqueues (a key names a job for
// Config.KeyRetention; the same key with another Digest is ErrConflict),
// named lanes with their own concurrency, rate and pause switch, leases
// with heartbeats and fencing tokens (a worker that lost its lease cannot
// finish the job), backoff with jitter or the provider's Retry-After,
// Permanent errors, Snooze and Skip, panics kept with their stack,
// deadlines (ExpiresAt: a job not started by then is marked expired and
// reported), dead letters with requeue and purge, stats with lag, and an
// observer of every state change.
//
//	q, _ := retry.New(store, &retry.Config{Lanes: map[string]retry.LaneConfig{"email": {Concurrency: 4}}})
//	q.HandleFunc("welcome", func(ctx context.Context, j *retry.Job) error { return send(ctx, j.Payload) })
//	q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome", Lane: "email", IdempotencyKey: "signup-42", Payload: p})
//	q.Start(ctx)
package retry
