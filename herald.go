package herald

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/tracking"
)

// Channel is how a message reaches its recipient.
type Channel string

// Channels.
const (
	Push  Channel = "push"
	Email Channel = "email"
	SMS   Channel = "sms"
)

// Lane returns the queue lane of a message: one per class and route,
// "transactional.apns", "campaign.email", ... (routes: apns, fcm, webpush,
// email, sms). Transactional messages never wait behind a campaign's
// backlog, and a provider that fails or hangs holds only its own lanes'
// workers: email keeps flowing while APNs is down.
func Lane(transactional bool, route string) string {
	if transactional {
		return "transactional." + route
	}
	return "campaign." + route
}

// route names the provider a message goes through.
func (m *Message) route() string {
	switch m.Channel() {
	case Push:
		return string(m.Push.Provider)
	case Email:
		return "email"
	case SMS:
		return "sms"
	}
	return ""
}

// JobKind is the retry job kind of a message.
const JobKind = "herald.send"

// Errors of Send, checked with errors.Is.
var (
	// ErrInvalid: the message was refused at the door (a *FieldError says
	// which field and why). Nothing was stored; do not retry as is.
	ErrInvalid = errors.New("herald: invalid message")
	// ErrNotAccepted: the store could not make the message durable, so it
	// was not accepted. Retrying with the same idempotency key is safe.
	ErrNotAccepted = errors.New("herald: not accepted; retry with the same idempotency key")
	// ErrConflict: the idempotency key was already used for a different
	// message (another body, recipient or channel). Nothing was stored; a
	// service answers it as 409. Use a new key for new content.
	ErrConflict = errors.New("herald: idempotency key already used for a different message")
)

// Limits of the door.
const (
	// DefaultMinTTL is the shortest TTL Send takes unless Config.MinTTL
	// says otherwise: a message that expires sooner could hardly reach any
	// provider, only be recorded as expired.
	DefaultMinTTL = time.Second
	// DefaultMaxTTL is the longest TTL Send takes unless Config.MaxTTL
	// says otherwise: 28 days, what FCM and the Web Push services keep a
	// message at most.
	DefaultMaxTTL = 28 * 24 * time.Hour
	// DefaultMaxSchedule is how far ahead SendAt may be unless
	// Config.MaxSchedule says otherwise: 366 days.
	DefaultMaxSchedule = 366 * 24 * time.Hour
)

// FieldError names the field of a refused message. It wraps ErrInvalid
// and, when a channel's validation refused it, that channel's error.
type FieldError struct {
	Field  string
	Reason string
	Err    error // the channel's own error (a *push.Error, *email.Error, ...), if any
}

func (e *FieldError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("herald: invalid message: %s: %s: %v", e.Field, e.Reason, e.Err)
	}
	return fmt.Sprintf("herald: invalid message: %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalid and the channel's error.
func (e *FieldError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// ConflictError is Send's answer to an idempotency key already used for
// a different message. It wraps ErrConflict. The key itself is not
// repeated (the caller has it, and logs need not).
type ConflictError struct {
	Field string // "IdempotencyKey", or "[i].IdempotencyKey" in a batch
	ID    int64  // the first message's job ID, when the store knows it
}

func (e *ConflictError) Error() string {
	return "herald: " + e.Field + ": already used for a different message (nothing was stored; use a new key for new content)"
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Message is one message to one recipient on one channel: set exactly one
// of Push, Email and SMS.
type Message struct {
	// IdempotencyKey identifies the message. A second Send with the same
	// key (within the queue's KeyRetention) returns the first message's
	// ID and sends nothing, so a caller may retry any failed call. It
	// also derives the collapse identifiers and the email Message-ID, so a
	// repeat after a crash replaces the first notification instead of
	// doubling it. Required.
	IdempotencyKey string

	// User is the recipient's ID in the host's terms (not an address): the
	// subject of capping and of tracking events. Required for capping.
	User string
	// Device is the recipient's device, for per-device caps.
	Device string
	// TimeZone is the user's IANA time zone, for calendar caps and quiet
	// hours. Default: the limiter's default (UTC).
	TimeZone string
	// Transactional messages (receipts, codes, alerts the user asked for)
	// run in their own lane and are exempt from caps unless a rule
	// includes them.
	Transactional bool
	Campaign      string
	Automation    string
	Labels        []string

	// TTL is how long the message stays worth sending: not sent by then,
	// it is dropped and recorded as expired, never delivered late. Zero:
	// Config.DefaultTTL.
	TTL time.Duration
	// SendAt delays the first attempt. Zero: now.
	SendAt time.Time

	Push  *PushMessage   `json:",omitempty"`
	Email *email.Message `json:",omitempty"`
	SMS   *sms.Message   `json:",omitempty"`
}

// PushMessage is a push notification and the provider that carries it.
type PushMessage struct {
	Provider push.Provider
	push.Message
}

// Channel returns the message's channel, or "" when not exactly one is set.
func (m *Message) Channel() Channel {
	var c Channel
	n := 0
	if m.Push != nil {
		c, n = Push, n+1
	}
	if m.Email != nil {
		c, n = Email, n+1
	}
	if m.SMS != nil {
		c, n = SMS, n+1
	}
	if n != 1 {
		return ""
	}
	return c
}

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

	// Limiter caps marketing pressure at the send path. Optional.
	Limiter *capping.Limiter
	// DeferCapped makes a message refused by a full cap wait for a free
	// slot (within its TTL) instead of being dropped and recorded as
	// capped. Quiet hours and a capping store outage always defer.
	DeferCapped bool
	// Tracker records what happens to every message (a tracking.Outbox).
	// Optional.
	Tracker tracking.Tracker

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

// Result is Send's answer.
type Result struct {
	// ID is the message's job ID in the queue.
	ID int64
	// Duplicate is true when the idempotency key was already used: ID is
	// the first message's and nothing new will be sent.
	Duplicate bool
}

// New validates cfg and returns a dispatcher; Start runs its workers.
func New(cfg *Config) (*Dispatcher, error) {
	if cfg == nil || cfg.Store == nil {
		return nil, errors.New("herald: New: Config.Store is required (embedded.Open(path).Retry() keeps everything in one local file)")
	}
	d := &Dispatcher{cfg: *cfg, rules: map[string]bool{}, breakers: map[string]*breaker{}}
	c := &d.cfg
	if c.Limiter != nil {
		for _, r := range c.Limiter.Rules() {
			d.rules[r] = true
		}
	}
	c.DefaultTTL = cmp.Or(c.DefaultTTL, 4*time.Hour)
	c.MaxTTL = cmp.Or(c.MaxTTL, DefaultMaxTTL)
	c.MinTTL = cmp.Or(c.MinTTL, DefaultMinTTL)
	if c.MinTTL < time.Millisecond || c.MinTTL > c.MaxTTL || c.MaxTTL > retry.MaxTime.Sub(retry.MinTime)/2 {
		return nil, fmt.Errorf("herald: New: Config.MinTTL %s and MaxTTL %s: want 1ms ≤ MinTTL ≤ MaxTTL, MaxTTL within what the stores keep", c.MinTTL, c.MaxTTL)
	}
	c.MaxSchedule = cmp.Or(c.MaxSchedule, DefaultMaxSchedule)
	if c.DefaultTTL < c.MinTTL || c.DefaultTTL > c.MaxTTL {
		return nil, fmt.Errorf("herald: New: Config.DefaultTTL %s is outside MinTTL %s to MaxTTL %s", c.DefaultTTL, c.MinTTL, c.MaxTTL)
	}
	if c.MaxSchedule < 0 {
		return nil, errors.New("herald: New: Config.MaxSchedule is negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	for p, s := range c.Push {
		if s == nil {
			return nil, fmt.Errorf("herald: New: Config.Push[%q] is nil", p)
		}
	}
	qc := c.Queue
	qc.Lanes = maps.Clone(qc.Lanes)
	if qc.Lanes == nil {
		qc.Lanes = map[string]retry.LaneConfig{}
	}
	if c.Transactional.Concurrency == 0 {
		c.Transactional.Concurrency = 8
	}
	if c.Campaign.Concurrency == 0 {
		c.Campaign.Concurrency = 4
	}
	var routes []string
	for p := range c.Push {
		routes = append(routes, string(p))
	}
	if c.Email != nil {
		routes = append(routes, "email")
	}
	if c.SMS != nil {
		routes = append(routes, "sms")
	}
	if len(routes) == 0 {
		return nil, errors.New("herald: New: no sender configured (Config.Push, Email or SMS)")
	}
	for _, r := range routes {
		d.breakers[r] = newBreaker(c.Breaker)
		for _, t := range []bool{true, false} {
			if _, ok := qc.Lanes[Lane(t, r)]; ok {
				continue
			}
			lc := c.Campaign
			if t {
				lc = c.Transactional
			}
			qc.Lanes[Lane(t, r)] = lc
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
		d.observe(e)
		if hostObserver != nil {
			hostObserver(e)
		}
	}
	if qc.MaxPayloadBytes == 0 && c.Email != nil {
		// Room for email's default 10 MiB in JSON's base64 (4/3), with
		// the headers and fields around it.
		qc.MaxPayloadBytes = email.DefaultMaxSize*4/3 + 64<<10
	}
	d.maxPayload = cmp.Or(qc.MaxPayloadBytes, 256<<10)
	d.emailMax = max((d.maxPayload-64<<10)*3/4, 1<<10)
	q, err := retry.New(c.Store, &qc)
	if err != nil {
		return nil, fmt.Errorf("herald: New: %w", err)
	}
	q.Handle(JobKind, retry.HandlerFunc(d.handle))
	d.queue = q
	return d, nil
}

// Queue returns the dispatcher's queue, for operations: stats, pause and
// resume a lane, dead letters, requeue.
func (d *Dispatcher) Queue() *retry.Queue { return d.queue }

// Start runs the workers until Stop.
func (d *Dispatcher) Start(ctx context.Context) error { return d.queue.Start(ctx) }

// Stop stops taking messages and waits for those in flight until ctx ends
// (then they are handed back to the queue, unsent or to be retried).
func (d *Dispatcher) Stop(ctx context.Context) error { return d.queue.Stop(ctx) }

// Send validates m and enqueues it durably. It returns only once the
// message is on disk (or committed in the shared database): from then on
// a crash delays it, never drops it. Errors wrap ErrInvalid (fix the
// message) or ErrNotAccepted (retry with the same key).
func (d *Dispatcher) Send(ctx context.Context, m Message) (Result, error) {
	res, err := d.SendBatch(ctx, []Message{m})
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// SendBatch is Send for many messages in one durable write: all are
// accepted or none (a refused message's *FieldError names its Field as
// "[i].Field").
func (d *Dispatcher) SendBatch(ctx context.Context, ms []Message) ([]Result, error) {
	return d.send(ctx, nil, ms)
}

// SendTx is SendBatch inside the host's own database transaction: e is
// the store's Enqueuer bound to it (postgres.DB.Tx(tx)), so the messages
// exist if and only if the host's business write commits — no "order
// saved, confirmation lost", no "confirmation sent, order rolled back".
// The accepted events are tracked when the insert is done, before the
// host commits.
func (d *Dispatcher) SendTx(ctx context.Context, e retry.Enqueuer, ms ...Message) ([]Result, error) {
	if e == nil {
		return nil, errors.New("herald: SendTx: nil Enqueuer (postgres.DB.Tx(tx))")
	}
	return d.send(ctx, e, ms)
}

func (d *Dispatcher) send(ctx context.Context, tx retry.Enqueuer, ms []Message) ([]Result, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	now := d.cfg.Now()
	ps := make([]retry.EnqueueParams, len(ms))
	for i := range ms {
		p, err := d.prepare(&ms[i], now)
		if err != nil {
			if fe, ok := err.(*FieldError); ok && len(ms) > 1 {
				fe.Field = "[" + strconv.Itoa(i) + "]." + fe.Field
			}
			return nil, err
		}
		ps[i] = p
	}
	var rs []retry.EnqueueResult
	var err error
	if tx != nil {
		rs, err = d.queue.EnqueueTx(ctx, tx, ps)
	} else {
		rs, err = d.queue.EnqueueBatch(ctx, ps)
	}
	if err != nil {
		var ce *retry.ConflictError
		if errors.As(err, &ce) {
			field := "IdempotencyKey"
			if len(ms) > 1 {
				field = "[" + strconv.Itoa(ce.Index) + "]." + field
			}
			return nil, &ConflictError{Field: field, ID: ce.ID}
		}
		if errors.Is(err, retry.ErrInvalidJob) {
			return nil, &FieldError{Field: "message", Reason: "refused by the queue", Err: err}
		}
		return nil, fmt.Errorf("%w: %w", ErrNotAccepted, err)
	}
	out := make([]Result, len(rs))
	for i, r := range rs {
		out[i] = Result{ID: r.ID, Duplicate: r.Duplicate}
		if !r.Duplicate {
			d.track(ctx, &ms[i], tracking.Accepted, now, 0, nil)
		}
	}
	return out, nil
}

// prepare validates m and builds its job.
func (d *Dispatcher) prepare(m *Message, now time.Time) (retry.EnqueueParams, error) {
	bad := func(field, reason string, err error) (retry.EnqueueParams, error) {
		return retry.EnqueueParams{}, &FieldError{Field: field, Reason: reason, Err: err}
	}
	if m.IdempotencyKey == "" {
		return bad("IdempotencyKey", "required: it is what makes a retried call safe", nil)
	}
	if len(m.IdempotencyKey) > 200 {
		return bad("IdempotencyKey", "over 200 bytes", nil)
	}
	switch {
	case m.TTL < 0:
		return bad("TTL", "negative", nil)
	case m.TTL != 0 && m.TTL < d.cfg.MinTTL:
		return bad("TTL", fmt.Sprintf("%s is under the minimum of %s (Config.MinTTL): the message would expire before any provider could take it", m.TTL, d.cfg.MinTTL), nil)
	case m.TTL > d.cfg.MaxTTL:
		return bad("TTL", fmt.Sprintf("%s is over the maximum of %s (Config.MaxTTL)", m.TTL, d.cfg.MaxTTL), nil)
	}
	if !m.SendAt.IsZero() {
		limit := now.Add(d.cfg.MaxSchedule)
		if m.SendAt.After(limit) || m.SendAt.After(retry.MaxTime) {
			return bad("SendAt", fmt.Sprintf("%s is more than %s ahead (Config.MaxSchedule)", m.SendAt.UTC().Format(time.RFC3339), d.cfg.MaxSchedule), nil)
		}
		if m.SendAt.Before(retry.MinTime) {
			return bad("SendAt", "before 1970: zero means now", nil)
		}
	}
	if len(m.Labels) > 32 {
		return bad("Labels", fmt.Sprintf("%d labels, over 32", len(m.Labels)), nil)
	}
	for _, f := range []struct{ name, v string }{{"User", m.User}, {"Device", m.Device}, {"Campaign", m.Campaign}, {"Automation", m.Automation}, {"TimeZone", m.TimeZone}} {
		if len(f.v) > 200 {
			return bad(f.name, "over 200 bytes", nil)
		}
		if !printable(f.v) {
			return bad(f.name, "has a control character or invalid UTF-8", nil)
		}
	}
	if !printable(m.IdempotencyKey) {
		return bad("IdempotencyKey", "has a control character or invalid UTF-8", nil)
	}
	if d.cfg.Limiter != nil && !m.Transactional && m.User == "" {
		return bad("User", "required for capped (non-transactional) messages", nil)
	}
	if m.TimeZone != "" {
		if _, err := time.LoadLocation(m.TimeZone); err != nil {
			return bad("TimeZone", fmt.Sprintf("unknown time zone %q", m.TimeZone), nil)
		}
	}
	switch m.Channel() {
	case Push:
		s := d.cfg.Push[m.Push.Provider]
		if s == nil {
			return bad("Push.Provider", fmt.Sprintf("no sender configured for %q", m.Push.Provider), nil)
		}
		if m.Push.IdempotencyKey == "" {
			m.Push.IdempotencyKey = m.IdempotencyKey
		}
		if v, ok := s.(push.Validator); ok {
			if err := v.Validate(&m.Push.Message); err != nil {
				return bad("Push", "refused by "+string(m.Push.Provider), err)
			}
		}
	case Email:
		if d.cfg.Email == nil {
			return bad("Email", "no email sender configured", nil)
		}
		if m.Email.IdempotencyKey == "" {
			m.Email.IdempotencyKey = m.IdempotencyKey
		}
		if _, _, err := email.Validate(m.Email, &email.Options{MaxSize: d.emailMax}); err != nil {
			return bad("Email", "refused", err)
		}
		if v, ok := d.cfg.Email.(interface{ Validate(*email.Message) error }); ok {
			if err := v.Validate(m.Email); err != nil {
				return bad("Email", "refused by the sender", err)
			}
		}
	case SMS:
		if d.cfg.SMS == nil {
			return bad("SMS", "no SMS sender configured", nil)
		}
		if m.SMS.IdempotencyKey == "" {
			m.SMS.IdempotencyKey = m.IdempotencyKey
		}
		if v, ok := d.cfg.SMS.(interface{ Validate(*sms.Message) error }); ok {
			if err := v.Validate(m.SMS); err != nil {
				return bad("SMS", "refused by the sender", err)
			}
		} else if err := sms.Validate(m.SMS); err != nil {
			return bad("SMS", "refused", err)
		}
	default:
		return bad("Push/Email/SMS", "set exactly one channel", nil)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return bad("message", "cannot be encoded", err)
	}
	if len(payload) > d.maxPayload {
		return bad(string(m.Channel()), fmt.Sprintf("%d bytes encoded, over the queue's limit of %d (Config.Queue.MaxPayloadBytes)", len(payload), d.maxPayload), nil)
	}
	// The digest of the canonical message (encoding/json sorts map keys)
	// is kept with the key: the same key with other content is a conflict.
	sum := sha256.Sum256(payload)
	start := now
	if m.SendAt.After(now) {
		start = m.SendAt
	}
	lane := Lane(m.Transactional, m.route())
	return retry.EnqueueParams{
		Kind:           JobKind,
		Payload:        payload,
		IdempotencyKey: m.IdempotencyKey,
		Digest:         hex.EncodeToString(sum[:16]),
		Lane:           lane,
		// RunAt set (never zero) so the deadline is always after it, even
		// when the queue's clock has moved past a short TTL by the time it
		// stores the job: such a message is accepted and expires, recorded.
		RunAt:     start,
		ExpiresAt: start.Add(cmp.Or(m.TTL, d.cfg.DefaultTTL)),
	}, nil
}

// handle runs one attempt of one message.
func (d *Dispatcher) handle(ctx context.Context, job *retry.Job) error {
	var m Message
	if err := json.Unmarshal(job.Payload, &m); err != nil {
		return retry.Permanent(fmt.Errorf("herald: job %d: undecodable message: %w", job.ID, err))
	}
	now := d.cfg.Now()
	b := d.breakers[m.route()]
	if b == nil {
		return retry.Permanent(fmt.Errorf("herald: job %d: no sender for route %q", job.ID, m.route()))
	}
	if wait, ok := b.allow(now); !ok {
		// The provider is down: wait without calling it (no attempt used;
		// the TTL still bounds the wait).
		d.track(ctx, &m, tracking.Deferred, now, job.Attempt, nil)
		return retry.Snooze(wait)
	}
	var reservation string
	if l := d.cfg.Limiter; l != nil && m.User != "" {
		dec, err := l.ReserveFor(ctx, m.IdempotencyKey, m.subject(), now)
		if err != nil {
			return retry.Permanent(err)
		}
		if !dec.Allowed {
			// A full cap drops the message unless DeferCapped; quiet
			// hours and a store outage defer it. Either way its TTL
			// bounds the wait: the queue expires it, never sends it late.
			if dec.Deferred() && (!d.rules[dec.CappedBy] || d.cfg.DeferCapped) {
				d.track(ctx, &m, tracking.Deferred, now, job.Attempt, nil)
				return retry.Snooze(dec.DeferUntil.Sub(now))
			}
			d.track(ctx, &m, tracking.Capped, now, job.Attempt, nil)
			return retry.Skip("capped by " + dec.CappedBy) // done, not sent: the job says why
		}
		reservation = dec.Reservation
	}
	// The deadline is checked again at the last moment (a cap or a slow
	// store may have taken the time), and bounds the request itself: a
	// send that cannot finish by then is abandoned, not delivered late.
	if !job.ExpiresAt.IsZero() && !d.cfg.Now().Before(job.ExpiresAt) {
		if reservation != "" {
			_ = d.cfg.Limiter.Release(ctx, reservation, d.cfg.Now())
		}
		return retry.Snooze(0) // the queue expires it: its next run would be too late
	}
	bindDeadline(&m, job.ExpiresAt, d.cfg.Now())
	sendCtx := ctx
	if !job.ExpiresAt.IsZero() {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, job.ExpiresAt)
		defer cancel()
	}
	providerID, provider, err := d.deliver(sendCtx, &m)
	switch {
	case err != nil && delivery.ProviderDown(err):
		if b.failure(d.cfg.Now(), delivery.Of(err).Auth()) {
			d.cfg.Logger.Warn("herald: circuit open: the provider is down; its messages wait", "route", m.route(), "err", err)
		}
	case err == nil || delivery.Answered(err):
		b.success() // the provider answered, whatever it said about the message
	default:
		// Refused before it reached the provider (a header the transport
		// would not send, a local check): it says nothing about the
		// provider, and must not hold a probe slot either.
		b.abstain()
	}
	if err == nil {
		if reservation != "" {
			if cerr := d.cfg.Limiter.Commit(ctx, reservation); cerr != nil && !errors.Is(cerr, capping.ErrUnknownReservation) {
				d.cfg.Logger.Warn("herald: capping commit failed; the slot counts as sent when its lease ends", "job", job.ID, "err", cerr)
			}
		}
		d.trackSent(ctx, &m, provider, providerID, job.Attempt)
		return nil
	}
	if reservation != "" && delivery.NotSent(err) {
		if rerr := d.cfg.Limiter.Release(ctx, reservation, d.cfg.Now()); rerr != nil {
			d.cfg.Logger.Warn("herald: capping release failed", "job", job.ID, "err", rerr)
		}
	}
	// An outcome we cannot know (a timeout after the request left) keeps
	// the slot: it counts as sent when its lease ends, the safe side.
	switch {
	case delivery.Of(err).Auth():
		// Our credentials, not the message: keep it until someone fixes
		// them (or its TTL passes).
		d.track(ctx, &m, tracking.Failed, d.cfg.Now(), job.Attempt, err)
		return retry.Snooze(max(b.remaining(d.cfg.Now()), time.Second))
	case delivery.Of(err).Gone():
		d.track(ctx, &m, tracking.RecipientGone, d.cfg.Now(), job.Attempt, err)
		return retry.Permanent(err)
	case retryable(err):
		d.track(ctx, &m, tracking.Failed, d.cfg.Now(), job.Attempt, err)
		return err // the queue retries with backoff, or after the provider's Retry-After
	default:
		d.track(ctx, &m, tracking.Failed, d.cfg.Now(), job.Attempt, err)
		return retry.Permanent(err)
	}
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// deliver sends m on its channel.
func (d *Dispatcher) deliver(ctx context.Context, m *Message) (id, provider string, err error) {
	switch m.Channel() {
	case Push:
		s := d.cfg.Push[m.Push.Provider]
		if s == nil {
			return "", "", retry.Permanent(fmt.Errorf("herald: no sender for %q", m.Push.Provider))
		}
		r, err := s.Send(ctx, &m.Push.Message)
		return r.ID, string(m.Push.Provider), err
	case Email:
		r, err := d.cfg.Email.Send(ctx, m.Email)
		return r.MessageID, "", err
	case SMS:
		r, err := d.cfg.SMS.Send(ctx, m.SMS)
		return r.SID, "", err
	}
	return "", "", retry.Permanent(errors.New("herald: message has no channel"))
}

// retryable reports whether a failed attempt is worth another: the
// channel error's class decides; outside any channel, a retry.Permanent
// error is not, and anything else (a deadline, a network error) is.
func retryable(err error) bool {
	if _, ok := delivery.DetailOf(err); !ok && retry.IsPermanent(err) {
		return false
	}
	return delivery.Retryable(err)
}

// observe turns the queue's outcomes that no handler sees into events.
func (d *Dispatcher) observe(e retry.Event) {
	if d.cfg.Tracker == nil || e.Job == nil || e.Job.Kind != JobKind {
		return
	}
	var t tracking.Type
	switch e.Type {
	case retry.EventExpired:
		t = tracking.Expired
	case retry.EventDead:
		t = tracking.Dead
	default:
		return
	}
	var m Message
	if err := json.Unmarshal(e.Job.Payload, &m); err != nil {
		return
	}
	d.track(context.Background(), &m, t, cmp.Or(e.At, d.cfg.Now()), e.Job.Attempt, e.Err)
}

func (d *Dispatcher) trackSent(ctx context.Context, m *Message, provider, providerID string, attempt int) {
	if d.cfg.Tracker == nil {
		return
	}
	ev := d.event(m, tracking.Sent, d.cfg.Now(), attempt, nil)
	ev.ProviderMessageID = providerID
	if provider != "" {
		ev.Provider = provider
	}
	d.record(ctx, ev)
}

func (d *Dispatcher) track(ctx context.Context, m *Message, t tracking.Type, at time.Time, attempt int, err error) {
	if d.cfg.Tracker == nil {
		return
	}
	d.record(ctx, d.event(m, t, at, attempt, err))
}

func (d *Dispatcher) record(ctx context.Context, ev tracking.Event) {
	if err := d.cfg.Tracker.Track(ctx, ev); err != nil {
		// The outbox has recorded the loss as a gap; never fail a send for it.
		d.cfg.Logger.Warn("herald: tracking refused an event", "type", ev.Type, "err", err)
	}
}

// event builds a tracking event. Its ID is derived from the message, the
// type and the attempt, so a repeat after a crash is deduplicated.
func (d *Dispatcher) event(m *Message, t tracking.Type, at time.Time, attempt int, err error) tracking.Event {
	ev := tracking.Event{
		ID:         m.IdempotencyKey + "/" + string(t) + "/" + strconv.Itoa(attempt),
		MessageID:  m.IdempotencyKey,
		User:       m.User,
		Device:     m.Device,
		Channel:    string(m.Channel()),
		Campaign:   m.Campaign,
		Automation: m.Automation,
		Labels:     m.Labels,
		Type:       t,
		At:         at,
		Attempt:    attempt,
	}
	if m.Push != nil {
		ev.Provider = string(m.Push.Provider)
	}
	if err != nil {
		ev.ErrorClass = errorClass(err)
	}
	return ev
}

// errorClass names an error's class for tracking (never its text, which
// may hold masked addresses the analytics do not need).
func errorClass(err error) string { return delivery.Of(err).Name() }

// decodeJob returns the message of one of the dispatcher's jobs.
func decodeJob(j *retry.Job) (*Message, bool) {
	if j == nil || j.Kind != JobKind {
		return nil, false
	}
	var m Message
	if json.Unmarshal(j.Payload, &m) != nil {
		return nil, false
	}
	return &m, true
}

// Describe gives tracking.Outbox.Regenerate the event fields of one of the
// dispatcher's finished jobs, so the delivery events of a window the
// journal could not record can be rebuilt from the queue's retained jobs.
// Messages dropped by a cap (retry.Skipped) are left out: they were never
// sent.
func (d *Dispatcher) Describe(j *retry.Job) (tracking.Event, bool) {
	m, ok := decodeJob(j)
	if !ok {
		return tracking.Event{}, false
	}
	if _, skipped := retry.Skipped(j); skipped {
		return tracking.Event{}, false
	}
	return d.event(m, "", j.FinishedAt, j.Attempt, nil), true
}

// Sends lists the messages among jobs that were sent (completed, not
// skipped), for capping.Limiter.Reconcile: after the capping store lost
// counters, or after AllowAndJournal decisions, the counters are rebuilt
// from what the queue knows went out.
func (d *Dispatcher) Sends(jobs []*retry.Job) []capping.Send {
	var out []capping.Send
	for _, j := range jobs {
		m, ok := decodeJob(j)
		if !ok || j.State != retry.StateCompleted {
			continue
		}
		if _, skipped := retry.Skipped(j); skipped {
			continue
		}
		out = append(out, capping.Send{ID: m.IdempotencyKey, At: j.FinishedAt, Subject: m.subject()})
	}
	return out
}

// subject is m as capping sees it.
func (m *Message) subject() capping.Subject {
	return capping.Subject{
		User: m.User, Device: m.Device, TimeZone: m.TimeZone, Channel: string(m.Channel()),
		Labels: m.Labels, Automation: m.Automation, Transactional: m.Transactional,
	}
}

// bindDeadline hands the message's deadline to the provider, so late stays
// bounded after herald lets go: APNs, FCM and Web Push drop a notification
// they cannot deliver by its expiry (a phone offline for hours gets
// nothing stale when it comes back), Twilio a text not sent within its
// validity period. A message that sets its own expiry keeps it.
func bindDeadline(m *Message, deadline, now time.Time) {
	if deadline.IsZero() {
		return
	}
	if p := m.Push; p != nil && p.Notification.Expiry.IsZero() && p.Notification.TTL == 0 {
		p.Notification.Expiry = deadline
	}
	if s := m.SMS; s != nil && s.ValidityPeriod == 0 {
		s.ValidityPeriod = min(max(deadline.Sub(now).Truncate(time.Second), time.Second), 36000*time.Second)
	}
}
