package herald

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/tracking"
)

// In-app messages wait in the Inbox store, in a feed of their own per
// user (inbox.InAppFeed), each item holding the whole message. Nothing is
// decided when they are sent: when the user's client asks what to show,
// ShowInApp takes each due message (only one caller can: the read mark
// is the claim), decides it again — expiry, suppression, preferences, the
// host's predicate with the user's attributes of that moment, caps — and
// returns the eligible ones, their displays counted against the caps. A
// message is settled by archiving it: read when it was displayed, unread
// when it was refused (and recorded with its reason).

// inAppMessageKey holds the message in its item's Data (a control
// character: no key of the host's can collide with it).
const inAppMessageKey = "\x1emessage"

// staleClaim is how long a display may be in progress before another
// caller settles it (its caller died between the claim and the answer).
const staleClaim = time.Minute

// checkInApp is the door of the in-app channel.
func (d *Dispatcher) checkInApp(m *Message) error {
	in := m.InApp
	switch {
	case d.cfg.Inbox == nil:
		return refuse("InApp", "no Inbox store configured (Config.Inbox keeps in-app messages)", nil)
	case m.User == "":
		return refuse("User", "required for an in-app message (whose app shows it)", nil)
	case len(in.Title)+len(in.Body) > 4096:
		return refuse("InApp", "title and body over 4,096 bytes", nil)
	case len(in.Data) > 64:
		return refuse("InApp.Data", "over 64 keys", nil)
	case in.Title == "" && in.Body == "" && len(in.Data) == 0:
		return refuse("InApp", "empty: set a title, a body or data", nil)
	}
	for k, v := range in.Data {
		if k == "" || len(k) > 100 || !printable(k) {
			return refuse("InApp.Data", "keys are 1 to 100 printable bytes", nil)
		}
		if len(v) > 2048 {
			return refuse("InApp.Data["+k+"]", "over 2,048 bytes", nil)
		}
	}
	return nil
}

// inAppItem is the stored form of an in-app message: due at SendAt (or
// now), expiring with its TTL.
func (d *Dispatcher) inAppItem(m *Message, now time.Time) (inbox.Item, error) {
	start := now
	if m.SendAt.After(now) {
		start = m.SendAt
	}
	b, err := json.Marshal(m)
	if err != nil {
		return inbox.Item{}, refuse("InApp", "cannot be encoded", err)
	}
	data := maps.Clone(m.InApp.Data)
	if data == nil {
		data = map[string]string{}
	}
	data[inAppMessageKey] = string(b)
	return inbox.Item{ID: m.IdempotencyKey, User: inbox.InAppFeed(m.User), Title: m.InApp.Title, Body: m.InApp.Body,
		Data: data, Category: m.Category, Campaign: m.Campaign, Created: start,
		Expires: start.Add(cmp.Or(m.TTL, d.cfg.DefaultTTL))}, nil
}

// ShowInApp returns user's in-app messages to display now, newest first,
// each decided eligible at this moment and handed to one caller once
// (concurrent callers never both get a message): its display is tracked
// (displayed) and counted against the caps. Messages no longer eligible
// are recorded (expired, suppressed, opted_out, ineligible, capped) and
// never shown; those deferred by quiet hours, or whose eligibility or
// caps cannot be read now, wait for a later call.
func (d *Dispatcher) ShowInApp(ctx context.Context, user string) ([]inbox.Shown, error) {
	st := d.cfg.Inbox
	if st == nil {
		return nil, errors.New("herald: ShowInApp: no Inbox store (Config.Inbox)")
	}
	feed := inbox.InAppFeed(user)
	// No Now in the query: expired messages are listed too, to be recorded.
	items, _, err := st.Feed(ctx, feed, inbox.Query{Limit: 200})
	if err != nil {
		return nil, err
	}
	now := d.cfg.Now()
	var out []inbox.Shown
	for i := range items {
		it := &items[i]
		switch {
		case it.Created.After(now):
			continue // scheduled for later
		case !it.ReadAt.IsZero():
			if now.Sub(it.ReadAt) > staleClaim {
				d.settleInApp(ctx, feed, it.ID, true)
			}
			continue // another caller is deciding it
		}
		n, err := st.Mark(ctx, feed, []string{it.ID}, inbox.Read, now)
		if err != nil {
			return out, err
		}
		if n == 0 {
			continue // another caller took it first
		}
		shown, final := d.display(ctx, it, now)
		switch {
		case shown != nil:
			out = append(out, *shown)
			d.settleInApp(ctx, feed, it.ID, true)
		case final:
			d.settleInApp(ctx, feed, it.ID, false)
		default:
			// Not now: give the claim back for a later call.
			if _, err := st.Mark(ctx, feed, []string{it.ID}, inbox.Unread, now); err != nil {
				d.cfg.Logger.Warn("herald: in-app: could not give a deferred message back; it is settled at the next call after a minute", "err", err)
			}
		}
	}
	return out, nil
}

// settleInApp archives a decided message: read if it was displayed,
// unread if it was refused (ReactInApp tells them apart).
func (d *Dispatcher) settleInApp(ctx context.Context, feed, id string, displayed bool) {
	now := d.cfg.Now()
	if !displayed {
		if _, err := d.cfg.Inbox.Mark(ctx, feed, []string{id}, inbox.Unread, now); err != nil {
			d.cfg.Logger.Warn("herald: in-app: could not settle a refused message", "err", err)
		}
	}
	if _, err := d.cfg.Inbox.Mark(ctx, feed, []string{id}, inbox.Archived, now); err != nil {
		d.cfg.Logger.Warn("herald: in-app: could not settle a message", "err", err)
	}
}

// display decides one claimed message: shown (and counted), refused for
// good (final, recorded), or not now (neither).
func (d *Dispatcher) display(ctx context.Context, it *inbox.Item, now time.Time) (shown *inbox.Shown, final bool) {
	var m Message
	if err := json.Unmarshal([]byte(it.Data[inAppMessageKey]), &m); err != nil || m.InApp == nil {
		d.cfg.Logger.Warn("herald: in-app: an undecodable message is dropped", "err", err)
		return nil, true
	}
	if !it.Expires.IsZero() && !now.Before(it.Expires) {
		d.track(ctx, &m, tracking.Expired, now, 0, nil)
		return nil, true
	}
	r, err := d.refusal(ctx, &m)
	switch {
	case err != nil:
		d.cfg.Logger.Warn("herald: in-app: eligibility store unavailable; the message waits", "err", err)
		return nil, false
	case r != nil:
		d.trackReason(ctx, &m, r.typ, now, 0, r.reason)
		return nil, true
	}
	if l := d.cfg.Limiter; l != nil {
		dec, err := l.ReserveFor(ctx, m.IdempotencyKey, m.subject(), now)
		if err != nil {
			d.cfg.Logger.Warn("herald: in-app: capping unavailable; the message waits", "err", err)
			return nil, false
		}
		if !dec.Allowed {
			if dec.Deferred() && (!d.rules[dec.CappedBy] || d.cfg.DeferCapped) {
				d.track(ctx, &m, tracking.Deferred, now, 0, nil)
				return nil, false
			}
			d.trackReason(ctx, &m, tracking.Capped, now, 0, "capped by "+dec.CappedBy)
			return nil, true
		}
		// The display is the send: it counts now.
		if err := l.Commit(ctx, dec.Reservation); err != nil && !errors.Is(err, capping.ErrUnknownReservation) {
			d.cfg.Logger.Warn("herald: in-app: capping commit failed; the slot counts when its lease ends", "err", err)
		}
	}
	d.track(ctx, &m, tracking.Displayed, now, 0, nil)
	data := maps.Clone(m.InApp.Data)
	return &inbox.Shown{ID: m.IdempotencyKey, Title: m.InApp.Title, Body: m.InApp.Body, Data: data,
		Category: m.Category, Campaign: m.Campaign, Created: it.Created, Expires: it.Expires}, true
}

// ReactInApp records what user did with a displayed in-app message
// (clicked or dismissed; a repeat is recorded once). It reports false
// when user has no such displayed message: another user's, a refused
// one, or none.
func (d *Dispatcher) ReactInApp(ctx context.Context, user, id string, r inbox.Reaction) (bool, error) {
	var t tracking.Type
	switch r {
	case inbox.Clicked:
		t = tracking.Clicked
	case inbox.Dismissed:
		t = tracking.Dismissed
	default:
		return false, fmt.Errorf("herald: ReactInApp: reaction %q: clicked or dismissed", r)
	}
	if d.cfg.Inbox == nil {
		return false, errors.New("herald: ReactInApp: no Inbox store (Config.Inbox)")
	}
	it, err := d.findDisplayed(ctx, inbox.InAppFeed(user), id)
	if err != nil || it == nil {
		return false, err
	}
	var m Message
	if err := json.Unmarshal([]byte(it.Data[inAppMessageKey]), &m); err != nil {
		return false, nil
	}
	d.track(ctx, &m, t, d.cfg.Now(), 0, nil)
	return true, nil
}

// findDisplayed looks for a displayed message among the newest 1,000
// settled ones of a feed.
func (d *Dispatcher) findDisplayed(ctx context.Context, feed, id string) (*inbox.Item, error) {
	after := ""
	for range 5 {
		items, next, err := d.cfg.Inbox.Feed(ctx, feed, inbox.Query{Archived: true, Limit: 200, After: after})
		if err != nil {
			return nil, err
		}
		for i := range items {
			if items[i].ID == id {
				if items[i].ReadAt.IsZero() {
					return nil, nil // refused, never displayed
				}
				return &items[i], nil
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	return nil, nil
}
