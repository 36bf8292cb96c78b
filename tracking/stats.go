package tracking

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Rate is a ratio with its inputs and whether they are complete.
type Rate struct {
	Value       float64
	Numerator   int
	Denominator int
	// Complete is false when a gap overlaps the range the inputs come
	// from: the value may be wrong, and must be shown as such.
	Complete bool
}

// Stats is what Outbox.Stats reports for a campaign or automation.
type Stats struct {
	Query  Query
	Counts map[Type]int // distinct messages per type
	// DeliveryRate is delivered / sent; OpenRate and ClickRate are opened
	// and clicked / delivered (sent when no deliveries are reported).
	DeliveryRate, OpenRate, ClickRate Rate
	Gaps                              []Gap
	// Complete is true when no gap overlaps the range.
	Complete bool
}

// Stats counts a campaign's or automation's events in [q.From, q.To) and
// the gaps that overlap it.
func (o *Outbox) Stats(ctx context.Context, q Query) (Stats, error) {
	if q.Campaign == "" && q.Automation == "" {
		return Stats{}, errors.New("tracking: Stats: set Query.Campaign or Query.Automation")
	}
	if !q.From.Before(q.To) {
		return Stats{}, errors.New("tracking: Stats: From must be before To")
	}
	counts, err := o.store.Counts(ctx, q)
	if err != nil {
		return Stats{}, err
	}
	gaps, err := o.store.Gaps(ctx, q.From, q.To)
	if err != nil {
		return Stats{}, err
	}
	complete := len(gaps) == 0
	rate := func(num, den int) Rate {
		r := Rate{Numerator: num, Denominator: den, Complete: complete}
		if den > 0 {
			r.Value = float64(num) / float64(den)
		}
		return r
	}
	base := counts[Delivered]
	if base == 0 {
		base = counts[Sent]
	}
	return Stats{
		Query: q, Counts: counts, Gaps: gaps, Complete: complete,
		DeliveryRate: rate(counts[Delivered], counts[Sent]),
		OpenRate:     rate(counts[Opened], base),
		ClickRate:    rate(counts[Clicked], base),
	}, nil
}

// Outcome is how one message's delivery ended, as the queue that ran it
// keeps it: the input of Regenerate. The queue's owner makes them (the
// Dispatcher's Outcomes does, from its retained jobs), so tracking knows
// nothing of any queue.
type Outcome struct {
	// Event holds the fields Regenerate cannot know: message ID, user,
	// channel, campaign, ...
	Event Event
	// End is how it ended: Sent, Dead or Expired.
	End Type
	// Attempts is how many attempts it took; a sent message that took more
	// than one also gets a Failed event.
	Attempts int
	// At is when it ended.
	At time.Time
	// Ref names the outcome stably (a job ID), so the events regenerated
	// from it have the same IDs every time.
	Ref string
}

// Regenerate rebuilds sent, failed, expired and dead events for outcomes
// that ended in [from, to), and appends those the journal does not already
// have (by message and type). It returns how many it added. Use it after
// a window where the journal could not record: the delivery side is
// recovered; engagement is not.
func (o *Outbox) Regenerate(ctx context.Context, outcomes []Outcome, from, to time.Time) (int, error) {
	var events []Event
	for _, oc := range outcomes {
		if oc.At.Before(from) || !oc.At.Before(to) {
			continue
		}
		base := oc.Event
		var types []Type
		switch oc.End {
		case Sent:
			types = []Type{Sent}
			if oc.Attempts > 1 {
				types = append(types, Failed)
			}
		case Dead, Expired:
			types = []Type{oc.End}
		default:
			continue
		}
		for _, t := range types {
			has, err := o.store.Has(ctx, base.MessageID, t)
			if err != nil {
				return 0, err
			}
			if has {
				continue
			}
			e := base
			e.Type, e.At, e.Attempt = t, oc.At, oc.Attempts
			e.ID = fmt.Sprintf("regen:%s:%s", oc.Ref, t)
			if t == Failed {
				e.ErrorClass = "retried"
			}
			events = append(events, e)
		}
	}
	if len(events) == 0 {
		return 0, nil
	}
	return o.TrackDurable(ctx, events...)
}
