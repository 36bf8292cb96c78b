package herald

import (
	"cmp"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

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

// trackReason records a refusal at the moment of sending with its reason.
func (d *Dispatcher) trackReason(ctx context.Context, m *Message, t tracking.Type, at time.Time, attempt int, reason string) {
	if d.cfg.Tracker == nil {
		return
	}
	ev := d.event(m, t, at, attempt, nil)
	ev.Reason = reason
	d.record(ctx, ev)
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

// Outcomes gives tracking.Outbox.Regenerate the outcomes of the
// dispatcher's finished jobs, so the delivery events of a window the
// journal could not record can be rebuilt from the queue's retained jobs.
// Messages dropped by a cap (retry.Skipped) are left out: they were never
// sent.
func (d *Dispatcher) Outcomes(jobs []*retry.Job) []tracking.Outcome {
	var out []tracking.Outcome
	for _, j := range jobs {
		m, ok := decodeJob(j)
		if !ok {
			continue
		}
		if _, skipped := retry.Skipped(j); skipped {
			continue
		}
		var end tracking.Type
		switch j.State {
		case retry.StateCompleted:
			end = tracking.Sent
		case retry.StateDead:
			end = tracking.Dead
		case retry.StateExpired:
			end = tracking.Expired
		default:
			continue
		}
		out = append(out, tracking.Outcome{Event: d.event(m, "", j.FinishedAt, j.Attempt, nil), End: end,
			Attempts: j.Attempt, At: j.FinishedAt, Ref: strconv.FormatInt(j.ID, 10)})
	}
	return out
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
