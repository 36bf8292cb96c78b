// Package herald is an embeddable library for push, email and SMS delivery
// that keeps its promises when providers, databases and analytics pipelines
// fail. A host application imports the parts it needs and composes them in
// its own service; each part is useful alone.
//
// The promises, and where they are kept:
//
//   - Accepted means durable: an accepted send is on disk, or committed in
//     the shared database, before the call returns (package retry and its
//     stores).
//   - Refused means retryable: a refused call says so with a typed error,
//     and retrying it with the same idempotency key never sends twice.
//   - Late is bounded: every message has a deliver-by time; expired
//     messages are recorded, never delivered late, and backlogs drain at a
//     rate the providers accept.
//   - Capping counts at the send path, not from analytics (package capping,
//     to come).
//   - Tracking is durable and honest: events are buffered and replayed, and
//     windows with missing data are marked (package tracking, to come).
//
// # Retry
//
// Package retry is the durable job queue everything else runs on: Enqueue
// (single or batch) returns only once the job is durable and deduplicates
// by idempotency key; workers claim jobs under leases fenced by a token,
// per-lane concurrency and rate limits, retry with backoff from
// github.com/cenkalti/backoff/v4 (or a provider's Retry-After), dead
// letters, expiry, pause and resume, stats with the lag of the oldest ready
// job, and an observer of every state change. A Store interface is the seam
// to the storage engine; retry/storetest is the conformance suite every
// store passes, and retry/retrytest helps host apps test their handlers.
//
// # Embedded store
//
// Package embedded is the default store: one SQLite file written by pure Go
// (no cgo), crash-safe, with group commit so concurrent enqueues, claims
// and completions share one fsync. Open it, and hand db.Retry() to
// retry.New.
//
// # Still to come
//
// The provider clients (push: APNs, FCM, Web Push; email over SMTP; SMS over
// Twilio) with fakes that speak the real protocols, frequency capping,
// tracking, and PostgreSQL and Redis stores for many hosts are tracked as
// issues; ARCHITECTURE.md describes the whole design.
package herald
