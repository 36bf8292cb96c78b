package tracking

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/retry"
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

// Describe turns a retry job into the event fields Regenerate cannot know
// (message ID, user, channel, campaign... usually from the job's payload);
// false skips the job.
type Describe func(j *retry.Job) (Event, bool)

// Regenerate rebuilds sent, failed, expired and dead events for jobs that
// finished in [from, to) from the retry queue's retained outcomes, and
// appends those the journal does not already have (by message and type).
// It returns how many it added. Use it after a window where the journal
// could not record: the delivery side is recovered; engagement is not.
func (o *Outbox) Regenerate(ctx context.Context, jobs []*retry.Job, from, to time.Time, describe Describe) (int, error) {
	var events []Event
	for _, j := range jobs {
		if j.FinishedAt.Before(from) || !j.FinishedAt.Before(to) {
			continue
		}
		base, ok := describe(j)
		if !ok {
			continue
		}
		var types []Type
		switch j.State {
		case retry.StateCompleted:
			types = []Type{Sent}
			if j.Attempt > 1 {
				types = append(types, Failed)
			}
		case retry.StateDead:
			types = []Type{Dead}
		case retry.StateExpired:
			types = []Type{Expired}
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
			e.Type, e.At, e.Attempt = t, j.FinishedAt, j.Attempt
			e.ID = fmt.Sprintf("regen:%d:%s", j.ID, t)
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
