package herald

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/tracking"
)

// Result is Send's answer.
type Result struct {
	// ID is the message's job ID in the queue.
	ID int64
	// Duplicate is true when the idempotency key was already used: ID is
	// the first message's and nothing new will be sent.
	Duplicate bool
}

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
	ps := make([]retry.EnqueueParams, 0, len(ms))
	jobOf := make([]int, len(ms)) // index in ps, or -1 for an Inbox-only message
	var items []inbox.Item
	for i := range ms {
		p, err := d.prepare(&ms[i], now)
		if err != nil {
			if fe, ok := err.(*FieldError); ok && len(ms) > 1 {
				fe.Field = "[" + strconv.Itoa(i) + "]." + fe.Field
			}
			return nil, err
		}
		jobOf[i] = -1
		if c := ms[i].Channel(); c != "" && c != InApp {
			jobOf[i] = len(ps)
			ps = append(ps, p)
		}
		if ms[i].Inbox != nil {
			items = append(items, d.inboxItem(&ms[i], now))
		}
		if ms[i].InApp != nil {
			it, err := d.inAppItem(&ms[i], now)
			if err != nil {
				return nil, err
			}
			items = append(items, it)
		}
	}
	e := tx
	if e == nil {
		e = d.cfg.Store
	}
	if len(items) > 0 {
		// The Inbox items go in the same durable write as the jobs.
		e = d.cfg.Inbox.Enqueuer(e, items)
	}
	if d.cfg.Notifier != nil && len(items) > 0 {
		defer func() {
			for _, it := range items {
				d.cfg.Notifier.Notify(inbox.FeedUser(it.User))
			}
		}()
	}
	var rs []retry.EnqueueResult
	var err error
	switch {
	case len(ps) == 0:
		_, err = e.Enqueue(ctx, nil, now) // Inbox-only messages
	case tx == nil && len(items) == 0:
		rs, err = d.queue.EnqueueBatch(ctx, ps)
	default:
		rs, err = d.queue.EnqueueTx(ctx, e, ps)
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
	out := make([]Result, len(ms))
	for i := range ms {
		if ms[i].InApp != nil {
			// No job: it waits in the store for its display. The event's
			// ID is derived from the key, so a retried call counts once.
			d.track(ctx, &ms[i], tracking.Accepted, now, 0, nil)
		}
		if jobOf[i] < 0 {
			continue // in the Inbox only, or in-app: no job
		}
		r := rs[jobOf[i]]
		out[i] = Result{ID: r.ID, Duplicate: r.Duplicate}
		if !r.Duplicate {
			d.track(ctx, &ms[i], tracking.Accepted, now, 0, nil)
		}
	}
	return out, nil
}

// Check validates m as Send would, at the door, and stores nothing —
// all but the queue's limit on its encoded size
// (Config.Queue.MaxPayloadBytes), which needs the encoding and which
// Send checks. A host that stores messages to send later (a campaign's
// staged pages) checks them with it. Its errors are Send's *FieldError.
func (d *Dispatcher) Check(m *Message) error { return d.check(m, d.cfg.Now()) }

// check is every rule of the door but the encoded size.
func (d *Dispatcher) check(m *Message, now time.Time) error {
	if err := d.checkEnvelope(m, now); err != nil {
		return err
	}
	return d.checkChannel(m)
}

// inboxItem is a message's Inbox item: its ID the message's key, kept
// until the item's Expires, or Config.InboxRetention.
func (d *Dispatcher) inboxItem(m *Message, now time.Time) inbox.Item {
	in := m.Inbox
	exp := in.Expires
	if exp.IsZero() {
		exp = now.Add(d.cfg.InboxRetention)
	}
	return inbox.Item{ID: m.IdempotencyKey, User: m.User, Title: in.Title, Body: in.Body, Data: in.Data,
		Category: m.Category, Campaign: m.Campaign, Created: now, Expires: exp}
}

// prepare validates m and builds its job.
func (d *Dispatcher) prepare(m *Message, now time.Time) (retry.EnqueueParams, error) {
	if err := d.check(m, now); err != nil {
		return retry.EnqueueParams{}, err
	}
	return d.job(m, now)
}

func refuse(field, reason string, err error) error {
	return &FieldError{Field: field, Reason: reason, Err: err}
}

// checkEnvelope checks what every message has, whatever its channel: its
// key, its times against what every store keeps, and the identity fields
// that reach logs, metrics and tracking.
func (d *Dispatcher) checkEnvelope(m *Message, now time.Time) error {
	switch {
	case m.IdempotencyKey == "":
		return refuse("IdempotencyKey", "required: it is what makes a retried call safe", nil)
	case len(m.IdempotencyKey) > 200:
		return refuse("IdempotencyKey", "over 200 bytes", nil)
	case !printable(m.IdempotencyKey):
		return refuse("IdempotencyKey", "has a control character or invalid UTF-8", nil)
	case m.TTL < 0:
		return refuse("TTL", "negative", nil)
	case m.TTL != 0 && m.TTL < d.cfg.MinTTL:
		return refuse("TTL", fmt.Sprintf("%s is under the minimum of %s (Config.MinTTL): the message would expire before any provider could take it", m.TTL, d.cfg.MinTTL), nil)
	case m.TTL > d.cfg.MaxTTL:
		return refuse("TTL", fmt.Sprintf("%s is over the maximum of %s (Config.MaxTTL)", m.TTL, d.cfg.MaxTTL), nil)
	case !m.SendAt.IsZero() && (m.SendAt.After(now.Add(d.cfg.MaxSchedule)) || m.SendAt.After(retry.MaxTime)):
		return refuse("SendAt", fmt.Sprintf("%s is more than %s ahead (Config.MaxSchedule)", m.SendAt.UTC().Format(time.RFC3339), d.cfg.MaxSchedule), nil)
	case !m.SendAt.IsZero() && m.SendAt.Before(retry.MinTime):
		return refuse("SendAt", "before 1970: zero means now", nil)
	case len(m.Labels) > 32:
		return refuse("Labels", fmt.Sprintf("%d labels, over 32", len(m.Labels)), nil)
	}
	for _, f := range []struct{ name, v string }{{"User", m.User}, {"Device", m.Device}, {"Campaign", m.Campaign}, {"Automation", m.Automation}, {"TimeZone", m.TimeZone}, {"Category", m.Category}, {"App", m.App}} {
		if len(f.v) > 200 {
			return refuse(f.name, "over 200 bytes", nil)
		}
		if !printable(f.v) {
			return refuse(f.name, "has a control character or invalid UTF-8", nil)
		}
	}
	if d.cfg.Limiter != nil && !m.Transactional && m.User == "" {
		return refuse("User", "required for capped (non-transactional) messages", nil)
	}
	if m.TimeZone != "" {
		if _, err := time.LoadLocation(m.TimeZone); err != nil {
			return refuse("TimeZone", fmt.Sprintf("unknown time zone %q", m.TimeZone), nil)
		}
	}
	return nil
}

// checkChannel runs the channel's own validation, with the sender's
// settings when the sender validates (what its Send would refuse, refused
// at the door). The channel's message inherits the idempotency key.
func (d *Dispatcher) checkChannel(m *Message) error {
	ss, ok := d.senders(m)
	if !ok {
		return refuse("App", fmt.Sprintf("unknown app %q (Config.Apps)", m.App), nil)
	}
	switch m.Channel() {
	case Push:
		s := ss.Push[m.Push.Provider]
		if s == nil {
			return refuse("Push.Provider", fmt.Sprintf("no sender configured for %q%s", m.Push.Provider, inApp(m.App)), nil)
		}
		m.Push.IdempotencyKey = cmp.Or(m.Push.IdempotencyKey, m.IdempotencyKey)
		if v, ok := s.(push.Validator); ok {
			if err := v.Validate(&m.Push.Message); err != nil {
				return refuse("Push", "refused by "+string(m.Push.Provider), err)
			}
		}
	case Email:
		if ss.Email == nil {
			return refuse("Email", "no email sender configured"+inApp(m.App), nil)
		}
		m.Email.IdempotencyKey = cmp.Or(m.Email.IdempotencyKey, m.IdempotencyKey)
		if _, _, err := email.Validate(m.Email, &email.Options{MaxSize: d.emailMax}); err != nil {
			return refuse("Email", "refused", err)
		}
		if v, ok := ss.Email.(interface{ Validate(*email.Message) error }); ok {
			if err := v.Validate(m.Email); err != nil {
				return refuse("Email", "refused by the sender", err)
			}
		}
	case SMS:
		if ss.SMS == nil {
			return refuse("SMS", "no SMS sender configured"+inApp(m.App), nil)
		}
		m.SMS.IdempotencyKey = cmp.Or(m.SMS.IdempotencyKey, m.IdempotencyKey)
		validate := sms.Validate
		if v, ok := ss.SMS.(interface{ Validate(*sms.Message) error }); ok {
			validate = v.Validate
		}
		if err := validate(m.SMS); err != nil {
			return refuse("SMS", "refused by the sender", err)
		}
	case InApp:
		if err := d.checkInApp(m); err != nil {
			return err
		}
	case "":
		if m.Inbox == nil || m.Push != nil || m.Email != nil || m.SMS != nil || m.InApp != nil {
			return refuse("Push/Email/SMS/InApp", "set exactly one channel (or only Inbox)", nil)
		}
	}
	if m.Inbox != nil {
		switch {
		case d.cfg.Inbox == nil:
			return refuse("Inbox", "no Inbox store configured (Config.Inbox)", nil)
		case m.User == "":
			return refuse("User", "required for an Inbox item (whose feed it goes to)", nil)
		case len(m.Inbox.Title)+len(m.Inbox.Body) > 4096:
			return refuse("Inbox", "title and body over 4,096 bytes", nil)
		case len(m.Inbox.Data) > 64:
			return refuse("Inbox.Data", "over 64 keys", nil)
		}
	}
	return nil
}

// job builds a validated message's job: its payload, the digest of the
// canonical message (encoding/json sorts map keys) kept with its key, so
// the same key with other content is a conflict, and its deadline.
func (d *Dispatcher) job(m *Message, now time.Time) (retry.EnqueueParams, error) {
	if c := m.Channel(); c == "" || c == InApp {
		return retry.EnqueueParams{}, nil // Inbox only or in-app: no job
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return retry.EnqueueParams{}, refuse("message", "cannot be encoded", err)
	}
	if len(payload) > d.maxPayload {
		return retry.EnqueueParams{}, refuse(string(m.Channel()), fmt.Sprintf("%d bytes encoded, over the queue's limit of %d (Config.Queue.MaxPayloadBytes)", len(payload), d.maxPayload), nil)
	}
	sum := sha256.Sum256(payload)
	start := now
	if m.SendAt.After(now) {
		start = m.SendAt
	}
	var decoded any
	if dm, ok := m.detached(); ok {
		decoded = dm
	}
	return retry.EnqueueParams{
		Kind:           JobKind,
		Payload:        payload,
		Decoded:        decoded,
		IdempotencyKey: m.IdempotencyKey,
		Digest:         hex.EncodeToString(sum[:16]),
		Lane:           Lane(m.Transactional, m.route()),
		// RunAt set (never zero) so the deadline is always after it, even
		// when the queue's clock has moved past a short TTL by the time it
		// stores the job: such a message is accepted and expires, recorded.
		RunAt:     start,
		ExpiresAt: start.Add(cmp.Or(m.TTL, d.cfg.DefaultTTL)),
	}, nil
}

// inApp names an app in a refusal.
func inApp(app string) string {
	if app == "" {
		return ""
	}
	return fmt.Sprintf(" for app %q", app)
}
