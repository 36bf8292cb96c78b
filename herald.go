package herald

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/tracking"
)

// Config configures a Dispatcher.
type Config struct {
	// Store holds the queue: embedded.Open(path).Retry(), a PostgreSQL or
	// Redis store, or retry.NewMemoryStore() in tests. Required.
	Store retry.Store
	// Queue tunes the queue. The dispatcher adds two lanes per configured
	// route (see Lane) with Transactional's and Campaign's settings; a lane
	// named in Queue.Lanes keeps the settings given there (a campaign
	// lane's Rate is how fast a backlog drains into that provider). Its
	// Observer, if any, is called after the dispatcher's.
	Queue retry.Config
	// Transactional and Campaign are the default settings of every
	// route's lanes. Defaults: 8 and 4 workers, no rate limit.
	Transactional, Campaign retry.LaneConfig

	// The channels' senders; a message on a channel without one is
	// refused at Send.
	Push  map[push.Provider]push.Sender
	Email email.Sender
	SMS   sms.Sender
	// Apps are more senders, chosen per message by Message.App: several
	// APNs apps (bundle IDs and keys), Firebase projects, Web Push keys,
	// SMTP senders or Twilio accounts in one Dispatcher. A message naming
	// an app that is not here, or that has no sender for its channel, is
	// refused at Send.
	Apps map[string]Senders

	// Limiter caps marketing pressure at the send path. Optional.
	Limiter *capping.Limiter
	// DeferCapped makes a message refused by a full cap wait for a free
	// slot (within its TTL) instead of being dropped and recorded as
	// capped. Quiet hours and a capping store outage always defer.
	DeferCapped bool
	// Tracker records what happens to every message (a tracking.Outbox).
	// Optional.
	Tracker tracking.Tracker

	// Eligibility, when set, is checked for every message at the moment of
	// sending (when a worker takes it, however long it waited): a
	// recipient on the suppression list is not messaged (recorded
	// suppressed), nor a user who opted out of the message's Category or,
	// for non-transactional messages, of its channel (opted_out). Recipients
	// a provider says are gone (APNs 410, FCM UNREGISTERED, SMTP 5.1.1,
	// Twilio 21610) are added to the list automatically. A store that
	// cannot answer defers the message (within its TTL).
	Eligibility eligibility.Store
	// Eligible is the host's predicate, asked at the moment of sending with
	// the message as it waited: false refuses it for good (recorded
	// ineligible, with reason), none of it counted against caps.
	Eligible func(ctx context.Context, m *Message) (ok bool, reason string)
	// Unsubscribe, when set, gives every non-transactional email with a
	// Category and no List-Unsubscribe of its own a signed RFC 8058
	// one-click link to Unsubscribe.BaseURL (mount Unsubscribe.Handler
	// there), made at send time.
	Unsubscribe *eligibility.Links

	// Inbox keeps the Inbox items of messages with an InboxItem: the
	// Store's Inbox (embedded.DB.Inbox() on the same file), so items and
	// jobs are one write. InboxRetention is how long an item without an
	// Expires is kept. Default 30 days.
	Inbox          inbox.Store
	InboxRetention time.Duration
	// Notifier, when set, is told the user of every Inbox or in-app item
	// this process writes, so inbox.Handler's streams answer at once
	// (streams in other processes see the item at their next poll).
	Notifier *inbox.Notifier

	// Breaker tunes each route's circuit breaker.
	Breaker BreakerConfig

	// DefaultTTL applies to messages without a TTL. Default 4 hours.
	DefaultTTL time.Duration
	// MinTTL and MaxTTL bound the TTL Send takes. Defaults DefaultMinTTL
	// and DefaultMaxTTL; a MinTTL under 1 ms is refused (tests and demos
	// that replay an outage in seconds lower it).
	MinTTL, MaxTTL time.Duration
	// MaxSchedule is how far ahead SendAt may be. Default
	// DefaultMaxSchedule (and never past retry.MaxTime).
	MaxSchedule time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Senders are one app's senders (Config.Apps).
type Senders struct {
	Push  map[push.Provider]push.Sender
	Email email.Sender
	SMS   sms.Sender
}

// Dispatcher composes the parts: Send validates a message and enqueues it
// durably; the queue's workers check its expiry, reserve a capping slot,
// send it, track the outcome, commit or release the slot, and retry or
// dead-letter it.
type Dispatcher struct {
	cfg        Config
	maxPayload int // the queue's payload limit
	emailMax   int // the largest email (bodies and attachments) that fits it
	queue      *retry.Queue
	rules      map[string]bool     // the limiter's rule names
	breakers   map[string]*breaker // by route
}

// New validates cfg and returns a dispatcher; Start runs its workers.
func New(cfg *Config) (*Dispatcher, error) {
	if cfg == nil || cfg.Store == nil {
		return nil, errors.New("herald: New: Config.Store is required (embedded.Open(path).Retry() keeps everything in one local file)")
	}
	d := &Dispatcher{cfg: *cfg, rules: map[string]bool{}, breakers: map[string]*breaker{}}
	c := &d.cfg
	if err := c.defaults(); err != nil {
		return nil, fmt.Errorf("herald: New: %w", err)
	}
	if c.Limiter != nil {
		for _, r := range c.Limiter.Rules() {
			d.rules[r] = true
		}
	}
	routes, err := c.routes()
	if err != nil {
		return nil, fmt.Errorf("herald: New: %w", err)
	}
	for _, r := range routes {
		d.breakers[r] = newBreaker(c.Breaker)
	}
	qc := c.queueConfig(routes, d.observe)
	d.maxPayload = cmp.Or(qc.MaxPayloadBytes, 256<<10)
	d.emailMax = max((d.maxPayload-64<<10)*3/4, 1<<10)
	q, err := retry.New(c.Store, qc)
	if err != nil {
		return nil, fmt.Errorf("herald: New: %w", err)
	}
	q.Handle(JobKind, retry.HandlerFunc(d.handle))
	d.queue = q
	return d, nil
}

// defaults fills in and checks the Config's limits and helpers.
func (c *Config) defaults() error {
	c.DefaultTTL = cmp.Or(c.DefaultTTL, 4*time.Hour)
	c.MaxTTL = cmp.Or(c.MaxTTL, DefaultMaxTTL)
	c.MinTTL = cmp.Or(c.MinTTL, DefaultMinTTL)
	c.MaxSchedule = cmp.Or(c.MaxSchedule, DefaultMaxSchedule)
	switch {
	case c.MinTTL < time.Millisecond || c.MinTTL > c.MaxTTL || c.MaxTTL > retry.MaxTime.Sub(retry.MinTime)/2:
		return fmt.Errorf("Config.MinTTL %s and MaxTTL %s: want 1ms ≤ MinTTL ≤ MaxTTL, MaxTTL within what the stores keep", c.MinTTL, c.MaxTTL)
	case c.DefaultTTL < c.MinTTL || c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("Config.DefaultTTL %s is outside MinTTL %s to MaxTTL %s", c.DefaultTTL, c.MinTTL, c.MaxTTL)
	case c.MaxSchedule < 0:
		return errors.New("Config.MaxSchedule is negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Unsubscribe != nil && (!strings.HasPrefix(c.Unsubscribe.BaseURL, "https://") || c.Unsubscribe.Key.IsZero()) {
		return errors.New("Config.Unsubscribe needs an https BaseURL (RFC 8058) and a Key")
	}
	c.InboxRetention = cmp.Or(c.InboxRetention, 30*24*time.Hour)
	c.Transactional.Concurrency = cmp.Or(c.Transactional.Concurrency, 8)
	c.Campaign.Concurrency = cmp.Or(c.Campaign.Concurrency, 4)
	return nil
}

// routes lists the configured providers' routes (see Message.route).
func (c *Config) routes() ([]string, error) {
	var routes []string
	add := func(s Senders, suffix string) error {
		for p, ps := range s.Push {
			if ps == nil {
				return fmt.Errorf("Config.Push[%q] is nil", p)
			}
			routes = append(routes, string(p)+suffix)
		}
		if s.Email != nil {
			routes = append(routes, "email"+suffix)
		}
		if s.SMS != nil {
			routes = append(routes, "sms"+suffix)
		}
		return nil
	}
	if err := add(Senders{Push: c.Push, Email: c.Email, SMS: c.SMS}, ""); err != nil {
		return nil, err
	}
	for app, s := range c.Apps {
		if app == "" || len(app) > 100 || !printable(app) || strings.ContainsAny(app, "@ ") {
			return nil, fmt.Errorf("Config.Apps: app name %q: 1 to 100 printable bytes, no '@' or space", app)
		}
		if err := add(s, "@"+app); err != nil {
			return nil, fmt.Errorf("Config.Apps[%q]: %w", app, err)
		}
	}
	if len(routes) == 0 {
		return nil, errors.New("no sender configured (Config.Push, Email, SMS or Apps)")
	}
	return routes, nil
}

// senders returns the senders a message's App picks, and whether the app
// exists.
func (d *Dispatcher) senders(m *Message) (Senders, bool) {
	if m.App == "" {
		return Senders{Push: d.cfg.Push, Email: d.cfg.Email, SMS: d.cfg.SMS}, true
	}
	s, ok := d.cfg.Apps[m.App]
	return s, ok
}

// queueConfig is the queue's Config: the host's, with a transactional and
// a campaign lane per route (unless the host set them), the dispatcher's
// observer before the host's, and room for an email's attachments.
func (c *Config) queueConfig(routes []string, observe func(retry.Event)) *retry.Config {
	qc := c.Queue
	qc.Lanes = maps.Clone(qc.Lanes)
	if qc.Lanes == nil {
		qc.Lanes = map[string]retry.LaneConfig{}
	}
	for _, r := range routes {
		for t, lc := range map[bool]retry.LaneConfig{true: c.Transactional, false: c.Campaign} {
			if _, ok := qc.Lanes[Lane(t, r)]; !ok {
				qc.Lanes[Lane(t, r)] = lc
			}
		}
	}
	if qc.Now == nil {
		qc.Now = c.Now
	}
	if qc.Logger == nil {
		qc.Logger = c.Logger
	}
	hostObserver := qc.Observer
	qc.Observer = func(e retry.Event) {
		observe(e)
		if hostObserver != nil {
			hostObserver(e)
		}
	}
	hasEmail := c.Email != nil
	for _, s := range c.Apps {
		hasEmail = hasEmail || s.Email != nil
	}
	if qc.MaxPayloadBytes == 0 && hasEmail {
		// Room for email's default 10 MiB in JSON's base64 (4/3), with
		// the headers and fields around it.
		qc.MaxPayloadBytes = email.DefaultMaxSize*4/3 + 64<<10
	}
	return &qc
}

// Queue returns the dispatcher's queue, for operations: stats, pause and
// resume a lane, dead letters, requeue.
func (d *Dispatcher) Queue() *retry.Queue { return d.queue }

// Start runs the workers until Stop.
func (d *Dispatcher) Start(ctx context.Context) error { return d.queue.Start(ctx) }

// Stop stops taking messages and waits for those in flight until ctx ends
// (then they are handed back to the queue, unsent or to be retried).
func (d *Dispatcher) Stop(ctx context.Context) error { return d.queue.Stop(ctx) }
