package retry

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/time/rate"
)

// DefaultLane is the lane of a job that names none.
const DefaultLane = "default"

// LaneConfig tunes one lane.
type LaneConfig struct {
	// Concurrency is how many of the lane's jobs run at once in this
	// process. Default 8.
	Concurrency int
	// Rate caps how many of the lane's jobs start per second in this
	// process, so a backlog drains at a pace providers accept. Zero (the
	// default) means no cap.
	Rate rate.Limit
	// Burst is how many starts may bunch up under Rate. Default 1.
	Burst int
}

// Config configures a Queue. The zero value is usable; each field
// documents its default.
type Config struct {
	// Lanes are the lanes this queue accepts and works. A job naming
	// another lane is refused with ErrUnknownLane, because nothing would
	// ever run it. Default: one lane, DefaultLane, with Concurrency 8.
	Lanes map[string]LaneConfig
	// MaxPayloadBytes refuses larger payloads. Default 256 KiB.
	MaxPayloadBytes int
	// DefaultMaxAttempts applies to jobs that set none. Default 25.
	DefaultMaxAttempts int
	// KeyRetention is how long an idempotency key is remembered. Default 24h.
	KeyRetention time.Duration
	// CompletedRetention is how long completed and expired jobs are kept
	// so their outcomes can be read back. Default 24h. Dead jobs stay
	// until requeued or purged.
	CompletedRetention time.Duration
	// LeaseDuration is how long a claim holds without a heartbeat; leases
	// are extended every LeaseDuration/3 while the handler runs. A crashed
	// worker's jobs run again after at most this long. Default 30s.
	LeaseDuration time.Duration
	// JobTimeout bounds one run of a handler. Default 1 minute; negative
	// means no bound.
	JobTimeout time.Duration
	// PollInterval is how often an idle lane looks for due jobs. Enqueues
	// through this Queue wake the lane at once. Default 200ms.
	PollInterval time.Duration
	// MaintenanceInterval is how often expired leases are rescued and
	// retention is applied. Default 1s.
	MaintenanceInterval time.Duration
	// Backoff returns the delay before retry number attempt (1 for the
	// first retry). A RetryAfter hint on the error overrides it. Default:
	// DefaultBackoff.
	Backoff func(attempt int, err error) time.Duration
	// Observer, when set, is called on every state change, after the change
	// is durable. It runs on the worker's goroutine: keep it fast (hand
	// events to tracking's outbox, which never blocks).
	Observer func(Event)
	// Logger receives operational messages. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultBackoff is exponential backoff with jitter from
// github.com/cenkalti/backoff/v4: 1s initial, doubling, ±25% jitter,
// capped at 1 hour.
func DefaultBackoff(attempt int, _ error) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(time.Second),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.25),
		backoff.WithMaxInterval(time.Hour),
		backoff.WithMaxElapsedTime(0),
	)
	var d time.Duration
	for i := 0; i < attempt && i < 64; i++ {
		d = b.NextBackOff()
	}
	return d
}

func (c *Config) withDefaults() *Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.MaxPayloadBytes = cmp.Or(out.MaxPayloadBytes, 256<<10)
	out.DefaultMaxAttempts = cmp.Or(out.DefaultMaxAttempts, 25)
	out.KeyRetention = cmp.Or(out.KeyRetention, 24*time.Hour)
	out.CompletedRetention = cmp.Or(out.CompletedRetention, 24*time.Hour)
	out.LeaseDuration = cmp.Or(out.LeaseDuration, 30*time.Second)
	out.JobTimeout = cmp.Or(out.JobTimeout, time.Minute)
	out.PollInterval = cmp.Or(out.PollInterval, 200*time.Millisecond)
	out.MaintenanceInterval = cmp.Or(out.MaintenanceInterval, time.Second)
	if out.Backoff == nil {
		out.Backoff = DefaultBackoff
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	lanes := make(map[string]LaneConfig, max(1, len(out.Lanes)))
	for name, lc := range out.Lanes {
		lc.Concurrency = cmp.Or(lc.Concurrency, 8)
		lc.Burst = cmp.Or(lc.Burst, 1)
		lanes[name] = lc
	}
	if len(lanes) == 0 {
		lanes[DefaultLane] = LaneConfig{Concurrency: 8, Burst: 1}
	}
	out.Lanes = lanes
	return &out
}

func (c *Config) validate() error {
	var errs []error
	for name, lc := range c.Lanes {
		switch {
		case name == "":
			errs = append(errs, errors.New("retry: Config.Lanes: a lane has an empty name"))
		case lc.Concurrency < 0:
			errs = append(errs, fmt.Errorf("retry: Config.Lanes[%q].Concurrency is negative (%d)", name, lc.Concurrency))
		case lc.Rate < 0:
			errs = append(errs, fmt.Errorf("retry: Config.Lanes[%q].Rate is negative", name))
		case lc.Burst < 0:
			errs = append(errs, fmt.Errorf("retry: Config.Lanes[%q].Burst is negative", name))
		}
	}
	check := func(name string, v time.Duration) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("retry: Config.%s is negative (%s)", name, v))
		}
	}
	check("KeyRetention", c.KeyRetention)
	check("CompletedRetention", c.CompletedRetention)
	check("LeaseDuration", c.LeaseDuration)
	check("PollInterval", c.PollInterval)
	check("MaintenanceInterval", c.MaintenanceInterval)
	if c.MaxPayloadBytes < 0 {
		errs = append(errs, fmt.Errorf("retry: Config.MaxPayloadBytes is negative (%d)", c.MaxPayloadBytes))
	}
	if c.DefaultMaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("retry: Config.DefaultMaxAttempts is negative (%d)", c.DefaultMaxAttempts))
	}
	return errors.Join(errs...)
}
