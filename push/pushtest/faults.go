// Package pushtest has fake push services for host apps' tests: an APNs
// server (HTTP/2 over TLS, checks the provider JWT or client certificate,
// the topic and the payload limit), an FCM v1 server (checks the OAuth
// token, answers errors as the Firebase SDK parses them) and a Web Push
// server (checks the VAPID JWT and decrypts RFC 8291 payloads so tests see
// the plaintext). The real clients of push/apns, push/fcm and push/webpush
// talk to them over loopback.
//
// Each fake takes a testing.TB and shuts down with t.Cleanup, records what
// it received (safe for concurrent use), and can be scripted to fail: per
// token, for the next N requests, all requests until Up, with latency and
// Retry-After. Recorder is a push.Sender for tests that need no network.
package pushtest

import (
	"context"
	"sync"
	"time"
)

// Fault is a scripted answer.
type Fault struct {
	Status int
	// Reason is the provider's code: an APNs reason, an FCM error code
	// (UNREGISTERED, QUOTA_EXCEEDED, ...); Web Push sends it as the body.
	Reason string
	// RetryAfter is sent as the Retry-After header when not empty
	// (seconds or an HTTP-date).
	RetryAfter string
	// Timestamp is sent with APNs 410 answers.
	Timestamp time.Time
}

// Faults scripts failures. The zero value fails nothing.
type Faults struct {
	mu      sync.Mutex
	byToken map[string]Fault
	next    []Fault
	down    *Fault
	latency time.Duration
}

// FailToken answers every request for token with f until Heal.
func (s *Faults) FailToken(token string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byToken == nil {
		s.byToken = map[string]Fault{}
	}
	s.byToken[token] = f
}

// FailNext answers the next n requests with f (after per-token faults).
func (s *Faults) FailNext(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.next = append(s.next, f)
	}
}

// Down answers every request with f until Up.
func (s *Faults) Down(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = &f
}

// Up ends Down.
func (s *Faults) Up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = nil
}

// Heal removes every scripted fault and the latency.
func (s *Faults) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byToken, s.next, s.down, s.latency = nil, nil, nil, 0
}

// SetLatency delays every answer by d.
func (s *Faults) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// take returns the fault for a request to token, if any, after the latency.
func (s *Faults) take(ctx context.Context, token string) (Fault, bool) {
	s.mu.Lock()
	latency := s.latency
	f, ok := s.byToken[token]
	switch {
	case ok:
	case s.down != nil:
		f, ok = *s.down, true
	case len(s.next) > 0:
		f, ok = s.next[0], true
		s.next = s.next[1:]
	}
	s.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return f, ok
}
