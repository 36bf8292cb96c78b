package herald

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// BreakerConfig tunes the circuit breaker each route (provider) has.
// After Threshold consecutive attempts that found the provider down
// (unavailable, rate limited, timed out, or refusing our credentials),
// the circuit opens: the route's messages are snoozed without calling the
// provider until the cool-down ends, then one attempt probes it. A probe
// that succeeds closes the circuit; one that fails reopens it for twice as
// long, up to MaxCooldown. Snoozed messages use no attempt and keep their
// TTL, so an outage longer than a message's TTL expires it, unsent.
//
// The state is per process: hosts sharing a store each find out for
// themselves, after Threshold attempts.
type BreakerConfig struct {
	Threshold   int           // default 10
	Cooldown    time.Duration // the first open period; default 2s
	MaxCooldown time.Duration // default 2 minutes
	Disabled    bool
}

type breaker struct {
	cfg       BreakerConfig
	mu        sync.Mutex
	failures  int
	openUntil time.Time // zero: closed
	cooldown  time.Duration
	probing   bool
}

func newBreaker(cfg BreakerConfig) *breaker {
	cfg.Threshold = cmp.Or(cfg.Threshold, 10)
	cfg.Cooldown = cmp.Or(cfg.Cooldown, 2*time.Second)
	cfg.MaxCooldown = max(cmp.Or(cfg.MaxCooldown, 2*time.Minute), cfg.Cooldown)
	return &breaker{cfg: cfg, cooldown: cfg.Cooldown}
}

// allow reports whether an attempt may call the provider now, or how long
// to wait: until the circuit's cool-down ends, spread by up to one more
// cool-down so the backlog does not return all at once.
func (b *breaker) allow(now time.Time) (wait time.Duration, ok bool) {
	if b.cfg.Disabled {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openUntil.IsZero():
		return 0, true
	case now.Before(b.openUntil):
		return b.openUntil.Sub(now) + jitter(b.cooldown), false
	case b.probing:
		return jitter(b.cooldown), false // one probe at a time
	}
	b.probing = true
	return 0, true
}

// remaining is how long the circuit stays open from now (0 when closed),
// spread like allow's waits; unlike allow it never starts a probe.
func (b *breaker) remaining(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() || !now.Before(b.openUntil) {
		return 0
	}
	return b.openUntil.Sub(now) + jitter(b.cooldown)
}

// success closes the circuit: the provider answered.
func (b *breaker) success() {
	if b.cfg.Disabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.openUntil, b.probing, b.cooldown = 0, time.Time{}, false, b.cfg.Cooldown
}

// failure counts an attempt that found the provider down and reports
// whether the circuit is open after it. Refused credentials open it at
// once, for the longest cool-down: only a person can fix them.
func (b *breaker) failure(now time.Time, auth bool) bool {
	if b.cfg.Disabled {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	switch {
	case auth:
		b.cooldown = b.cfg.MaxCooldown
	case b.probing:
		b.cooldown = min(2*b.cooldown, b.cfg.MaxCooldown)
	case b.failures < b.cfg.Threshold:
		return !b.openUntil.IsZero()
	}
	b.probing = false
	b.openUntil = now.Add(b.cooldown)
	return true
}

// CircuitOpen reports whether route's circuit is open (or probing): its
// messages wait instead of calling the provider. Routes are "apns",
// "fcm", "webpush", "email" and "sms"; an unknown route is never open.
func (d *Dispatcher) CircuitOpen(route string) bool {
	b := d.breakers[route]
	return b != nil && b.open(d.cfg.Now())
}

func (b *breaker) open(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openUntil.IsZero() && (now.Before(b.openUntil) || b.probing)
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// abstain ends an attempt that says nothing about the provider (the
// message was refused before reaching it): a probe it held is given back,
// so the next attempt probes instead.
func (b *breaker) abstain() {
	if b.cfg.Disabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// Circuit is one route's breaker as an operator sees it.
type Circuit struct {
	Route string
	// State is "closed", "open" (its messages wait) or "probing" (one
	// attempt is testing whether the provider is back).
	State string
	// Failures counts the provider-down answers since the last success.
	Failures int
	// OpenUntil is when an open circuit lets a probe through.
	OpenUntil time.Time
}

// Circuits returns every route's circuit, sorted by route.
func (d *Dispatcher) Circuits() []Circuit {
	now := d.cfg.Now()
	out := make([]Circuit, 0, len(d.breakers))
	for route, b := range d.breakers {
		b.mu.Lock()
		c := Circuit{Route: route, State: "closed", Failures: b.failures}
		switch {
		case b.probing:
			c.State = "probing"
		case !b.openUntil.IsZero() && now.Before(b.openUntil):
			c.State, c.OpenUntil = "open", b.openUntil
		}
		b.mu.Unlock()
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Circuit) int { return strings.Compare(a.Route, b.Route) })
	return out
}
