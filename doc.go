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
//   - Capping counts at the send path, not from analytics (package capping).
//   - Tracking is durable and honest: events are journaled and replayed to
//     sinks that were down, and windows with missing data are recorded and
//     reported with every rate they touch (package tracking).
//
// # Dispatcher
//
// Dispatcher composes the parts for a host that wants them all: Send
// validates a Message (push, email or SMS) at the door, enqueues it
// durably with its idempotency key and time-to-live, and returns; the
// queue's workers reserve a capping slot, send through the channel's
// client, commit or release the slot from the result, track every
// outcome, and retry or dead-letter.
//
//	d, _ := herald.New(&herald.Config{Store: db.Retry(), Push: map[push.Provider]push.Sender{push.APNs: apnsClient},
//		Email: smtpSender, Limiter: limiter, Tracker: outbox})
//	_ = d.Start(ctx)
//	res, err := d.Send(ctx, herald.Message{IdempotencyKey: "order-42-shipped", User: "u1", Transactional: true,
//		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: tok, Notification: n}}})
//	// err wraps ErrInvalid (fix the message) or ErrNotAccepted (retry with the same key)
//
// examples/outage replays the seed's outage through a Dispatcher and
// checks every promise.
//
// # Retry
//
// Package retry is the durable job queue everything else runs on: Enqueue
// (single or batch) returns only once the job is durable and deduplicates
// by idempotency key; workers claim jobs under leases fenced by a token,
// per-lane concurrency and rate limits, retry with backoff from
// github.com/cenkalti/backoff/v4 (or a provider's Retry-After), dead
// letters, expiry, pause and resume, stats with the lag of the oldest ready
// job, and an observer of every state change. retry/storetest is the
// conformance suite every store passes; retry/retrytest helps host apps
// test their handlers.
//
// # Push
//
// Package push models a notification once for every platform, with one
// error shape: sentinels (ErrUnregistered, ErrRateLimited, ...) over the
// classes of package delivery, which every channel shares, and a
// *push.Error carrying status, reason and RetryAfter, which the retry queue
// honours. push/apns (sideshow/apns2), push/fcm (FCM HTTP v1 over net/http,
// one request per attempt) and push/webpush (webpush-go, with an SSRF guard
// on subscription endpoints) are the clients; push/pushtest has fake APNs,
// FCM and Web Push servers that the real clients talk to (Config.UseFake).
//
// # Email and SMS
//
// Package email validates messages against header injection and sends them
// with email/smtp (go-mail, pooled connections); email/emailtest is a real
// SMTP server for tests. Package sms validates E.164 numbers and counts
// segments; sms/twilio sends with twilio-go and verifies status callbacks;
// sms/smstest fakes Twilio's API.
//
// # Capping
//
// Package capping reserves a slot in every matching rule (global, label,
// automation; rolling or calendar windows in the user's time zone; quiet
// hours) atomically before a send, and commits or releases it from the
// send's result, so caps stay exact when analytics are down.
//
// # Tracking
//
// Package tracking journals events through a durable outbox whose Track
// never blocks a send, forwards them to sinks (slog, SQL, a signed webhook,
// OpenTelemetry) that may fail for a while, records gaps, computes
// statistics that say when they are incomplete, and ingests engagement
// events from apps and browsers.
//
// # Embedded store
//
// Package embedded is the default store: one SQLite file written by pure Go
// (no cgo) holding the queue, the capping counters and the tracking
// journal, crash-safe, with group commit so concurrent writes share one
// fsync. For many hosts, package postgres has the same three stores on
// PostgreSQL and package redisstore the queue and capping on Redis; every
// store passes the same conformance suites.
//
// # Testing a host
//
// Package heraldtest runs a Dispatcher with recording senders for every
// channel, a manual clock and capping and tracking wired, so a host's unit
// test reads "order shipped: push and email sent, the cross-sell capped".
package herald
