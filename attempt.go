package herald

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// An attempt of one message is three steps: the gate (the breaker,
// capping, the deadline), the send, and the settlement (the circuit, the
// capping slot, the tracking event, the queue's verdict).

// attempt is one run of one message's job.
type attempt struct {
	job         *retry.Job
	m           Message
	b           *breaker
	reservation string // the capping slot, when one was taken
}

// handle runs one attempt of one message.
func (d *Dispatcher) handle(ctx context.Context, job *retry.Job) error {
	a := &attempt{job: job}
	if m, ok := job.Decoded.(*Message); ok && m.detachable() {
		// Handed over in memory by the store: no decoding. A copy still,
		// as an attempt changes its message (the deadline bound to the
		// provider) and a store may hand the same one to the next attempt.
		c, _ := m.detached()
		a.m = *c
	} else if err := json.Unmarshal(job.Payload, &a.m); err != nil {
		return retry.Permanent(fmt.Errorf("herald: job %d: undecodable message: %w", job.ID, err))
	}
	if a.b = d.breakers[a.m.route()]; a.b == nil {
		return retry.Permanent(fmt.Errorf("herald: job %d: no sender for route %q", job.ID, a.m.route()))
	}
	if verdict, pass := d.gate(ctx, a); !pass {
		return verdict
	}
	providerID, provider, err := d.sendOnce(ctx, a)
	return d.settle(ctx, a, providerID, provider, err)
}

// gate decides whether the message may go out now: a down provider's
// circuit, a cap or quiet hours, and its deadline, checked again at the
// last moment (a cap or a slow store may have taken the time). When it
// may not, verdict is what the queue is told.
func (d *Dispatcher) gate(ctx context.Context, a *attempt) (verdict error, pass bool) {
	now := d.cfg.Now()
	if wait, ok := a.b.allow(now); !ok {
		// The provider is down: wait without calling it (no attempt used;
		// the TTL still bounds the wait).
		d.track(ctx, &a.m, tracking.Deferred, now, a.job.Attempt, nil)
		return retry.Snooze(wait), false
	}
	if verdict, pass := d.eligible(ctx, a, now); !pass {
		return verdict, false
	}
	if l := d.cfg.Limiter; l != nil && a.m.User != "" {
		dec, err := l.ReserveFor(ctx, a.m.IdempotencyKey, a.m.subject(), now)
		if err != nil {
			return retry.Permanent(err), false
		}
		if !dec.Allowed {
			// A full cap drops the message unless DeferCapped; quiet
			// hours and a store outage defer it. Either way its TTL
			// bounds the wait: the queue expires it, never sends it late.
			if dec.Deferred() && (!d.rules[dec.CappedBy] || d.cfg.DeferCapped) {
				d.track(ctx, &a.m, tracking.Deferred, now, a.job.Attempt, nil)
				return retry.Snooze(dec.DeferUntil.Sub(now)), false
			}
			d.track(ctx, &a.m, tracking.Capped, now, a.job.Attempt, nil)
			return retry.Skip("capped by " + dec.CappedBy), false // done, not sent: the job says why
		}
		a.reservation = dec.Reservation
	}
	if exp := a.job.ExpiresAt; !exp.IsZero() && !d.cfg.Now().Before(exp) {
		if a.reservation != "" {
			_ = d.cfg.Limiter.Release(ctx, a.reservation, d.cfg.Now())
		}
		return retry.Snooze(0), false // the queue expires it: its next run would be too late
	}
	return nil, true
}

// sendOnce sends the message once, bounded by its deadline (a send that
// cannot finish by then is abandoned, not delivered late), and tells the
// breaker what the answer says about the provider.
func (d *Dispatcher) sendOnce(ctx context.Context, a *attempt) (providerID, provider string, err error) {
	bindDeadline(&a.m, a.job.ExpiresAt, d.cfg.Now())
	d.bindUnsubscribe(&a.m)
	if !a.job.ExpiresAt.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, a.job.ExpiresAt)
		defer cancel()
	}
	providerID, provider, err = d.deliver(ctx, &a.m)
	switch {
	case err != nil && delivery.ProviderDown(err):
		if a.b.failure(d.cfg.Now(), delivery.Of(err).Auth()) {
			d.cfg.Logger.Warn("herald: circuit open: the provider is down; its messages wait", "route", a.m.route(), "err", err)
		}
	case err == nil || delivery.Answered(err):
		a.b.success() // the provider answered, whatever it said about the message
	default:
		// Refused before it reached the provider (a header the transport
		// would not send, a local check): it says nothing about the
		// provider, and must not hold a probe slot either.
		a.b.abstain()
	}
	return providerID, provider, err
}

// settle ends the attempt: the capping slot is committed, released, or
// kept (an outcome nobody can know counts as sent when its lease ends,
// the safe side), the outcome is tracked, and the queue told what next.
func (d *Dispatcher) settle(ctx context.Context, a *attempt, providerID, provider string, err error) error {
	if err == nil {
		if a.reservation != "" {
			if cerr := d.cfg.Limiter.Commit(ctx, a.reservation); cerr != nil && !errors.Is(cerr, capping.ErrUnknownReservation) {
				d.cfg.Logger.Warn("herald: capping commit failed; the slot counts as sent when its lease ends", "job", a.job.ID, "err", cerr)
			}
		}
		d.trackSent(ctx, &a.m, provider, providerID, a.job.Attempt)
		return nil
	}
	if a.reservation != "" && delivery.NotSent(err) {
		if rerr := d.cfg.Limiter.Release(ctx, a.reservation, d.cfg.Now()); rerr != nil {
			d.cfg.Logger.Warn("herald: capping release failed", "job", a.job.ID, "err", rerr)
		}
	}
	class := delivery.Of(err)
	typ := tracking.Failed
	if class.Gone() {
		typ = tracking.RecipientGone
		d.suppressGone(ctx, &a.m, err)
	}
	d.track(ctx, &a.m, typ, d.cfg.Now(), a.job.Attempt, err)
	switch {
	case class.Auth():
		// Our credentials, not the message: keep it until someone fixes
		// them (or its TTL passes).
		return retry.Snooze(max(a.b.remaining(d.cfg.Now()), time.Second))
	case retryable(err):
		return err // the queue retries with backoff, or after the provider's Retry-After
	}
	return retry.Permanent(err)
}

// deliver sends m on its channel.
func (d *Dispatcher) deliver(ctx context.Context, m *Message) (id, provider string, err error) {
	ss, _ := d.senders(m)
	switch c := m.Channel(); {
	case c == Push && ss.Push[m.Push.Provider] != nil:
		r, err := ss.Push[m.Push.Provider].Send(ctx, &m.Push.Message)
		return r.ID, string(m.Push.Provider), err
	case c == Email && ss.Email != nil:
		r, err := ss.Email.Send(ctx, m.Email)
		return r.MessageID, "", err
	case c == SMS && ss.SMS != nil:
		r, err := ss.SMS.Send(ctx, m.SMS)
		return r.SID, "", err
	case c == Push || c == Email || c == SMS:
		return "", "", retry.Permanent(fmt.Errorf("herald: no sender for route %q", m.route()))
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
