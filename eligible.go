package herald

import (
	"context"
	"fmt"
	"net/mail"
	"time"

	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// eligible decides, at the moment of sending, whether the message may
// still go: its recipients not suppressed, its user not opted out, the
// host's predicate content. A refusal completes the job unsent (a skip,
// final, recorded with its kind and reason, not counted against caps).
func (d *Dispatcher) eligible(ctx context.Context, a *attempt, now time.Time) (verdict error, pass bool) {
	r, err := d.refusal(ctx, &a.m)
	switch {
	case err != nil:
		return d.eligibilityDown(ctx, a, now, err)
	case r != nil:
		d.trackReason(ctx, &a.m, r.typ, now, a.job.Attempt, r.reason)
		return retry.Skip(string(r.kind) + ": " + r.reason), false
	}
	return nil, true
}

// refused is why a message may not go (or be shown) now.
type refused struct {
	kind   eligibility.Kind
	typ    tracking.Type
	reason string
}

// refusal asks the suppression list, the preferences and the host's
// predicate about m, now: nil when it may go; an error when the
// eligibility store cannot answer (then it must wait, not go).
func (d *Dispatcher) refusal(ctx context.Context, m *Message) (*refused, error) {
	if s := d.cfg.Eligibility; s != nil {
		for _, r := range m.recipients() {
			sup, found, err := s.Suppressed(ctx, eligibility.RecipientKey(r[0], r[1]))
			if err != nil {
				return nil, err
			}
			if found {
				return &refused{eligibility.Suppressed, tracking.Suppressed, sup.Reason}, nil
			}
		}
		if topics := m.topics(); len(topics) > 0 && m.User != "" {
			topic, out, err := s.OptedOut(ctx, m.User, topics)
			if err != nil {
				return nil, err
			}
			if out {
				return &refused{eligibility.OptedOut, tracking.OptedOut, "opted out of " + topic}, nil
			}
		}
	}
	if f := d.cfg.Eligible; f != nil {
		if ok, reason := f(ctx, m); !ok {
			return &refused{eligibility.Ineligible, tracking.Ineligible, cmpOr(reason, "the host's predicate said no")}, nil
		}
	}
	return nil, nil
}

// eligibilityDown defers a message whose eligibility cannot be read: it
// is not sent to a recipient who may have opted out; its TTL bounds the
// wait.
func (d *Dispatcher) eligibilityDown(ctx context.Context, a *attempt, now time.Time, err error) (error, bool) {
	d.cfg.Logger.Warn("herald: eligibility store unavailable; the message waits", "job", a.job.ID, "err", err)
	d.track(ctx, &a.m, tracking.Deferred, now, a.job.Attempt, nil)
	return retry.Snooze(2 * time.Second), false
}

// suppressGone adds the recipient a provider said is gone to the
// suppression list (an email with several recipients is left alone: the
// server's answer does not say which one).
func (d *Dispatcher) suppressGone(ctx context.Context, m *Message, cause error) {
	s := d.cfg.Eligibility
	rs := m.recipients()
	if s == nil || len(rs) != 1 {
		return
	}
	det, _ := delivery.DetailOf(cause)
	reason := fmt.Sprintf("%s %d %s", cmpOr(det.Provider, rs[0][0]), det.Status, det.Code)
	sup := eligibility.Suppression{Key: eligibility.RecipientKey(rs[0][0], rs[0][1]), Channel: rs[0][0],
		Masked: eligibility.Mask(rs[0][0], rs[0][1]), Reason: reason, Source: "provider", At: d.cfg.Now()}
	if err := s.Suppress(ctx, sup); err != nil {
		d.cfg.Logger.Warn("herald: could not suppress a gone recipient", "channel", sup.Channel, "recipient", sup.Masked, "err", err)
	}
}

// bindUnsubscribe gives a marketing email with a Category a signed
// one-click unsubscribe link, unless it has one.
func (d *Dispatcher) bindUnsubscribe(m *Message) {
	l := d.cfg.Unsubscribe
	if l == nil || m.Email == nil || m.Transactional || m.Category == "" || m.User == "" || len(m.Email.ListUnsubscribe) > 0 {
		return
	}
	m.Email.ListUnsubscribe = []string{l.URL(m.User, eligibility.CategoryTopic(m.Category), d.cfg.Now())}
	m.Email.OneClickUnsubscribe = true
}

// recipients lists the message's (channel, recipient) pairs.
func (m *Message) recipients() [][2]string {
	switch {
	case m.Push != nil:
		return [][2]string{{"push", m.Push.Token}}
	case m.SMS != nil:
		return [][2]string{{"sms", m.SMS.To}}
	case m.InApp != nil:
		// An in-app message reaches a user, not an address: a host
		// suppresses the user (RecipientKey("inapp", user)).
		return [][2]string{{"inapp", m.User}}
	case m.Email != nil:
		var out [][2]string
		for _, list := range [][]string{m.Email.To, m.Email.Cc, m.Email.Bcc} {
			for _, a := range list {
				out = append(out, [2]string{"email", addressOf(a)})
			}
		}
		return out
	}
	return nil
}

// topics are the preference topics that can refuse the message: its
// category, and its channel unless it is transactional (a user cannot opt
// out of a password reset by turning email off).
func (m *Message) topics() []string {
	var t []string
	if m.Category != "" {
		t = append(t, eligibility.CategoryTopic(m.Category))
	}
	if !m.Transactional {
		t = append(t, eligibility.ChannelTopic(string(m.Channel())))
	}
	return t
}

// addressOf is the address in "Name <addr>", or a as it is.
func addressOf(a string) string {
	if p, err := mail.ParseAddress(a); err == nil {
		return p.Address
	}
	return a
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
