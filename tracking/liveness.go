package tracking

import (
	"context"
	"fmt"
	"time"
)

// Crash detection. Track buffers events in memory, so a process that dies
// without Close loses what the journal had not taken yet. To keep the
// analytics honest, each outbox keeps two marks in the store (in the
// cursor table, under livenessPrefix+Instance):
//
//   - alive: the last heartbeat, or 0 once the outbox closed cleanly;
//   - durable: a time before which everything it tracked is in the
//     journal (the last heartbeat that found nothing pending).
//
// A new outbox that finds alive ≠ 0 waits two heartbeats and looks
// again: if alive has not moved, the previous run died, and the window
// from durable to this start — when the lost events were tracked: the
// store may have been down for the dead run's last heartbeats — is
// recorded as a gap. If alive moved, another outbox is running under the
// same Instance: that is logged (crash detection needs one name per
// running outbox) and no gap is recorded. The window is in wall-clock
// time, which is the events' time for events tracked as they happen; an
// event tracked with an older time and lost in a crash falls outside it.

func (o *Outbox) aliveKey() string   { return livenessPrefix + o.cfg.Instance + "/alive" }
func (o *Outbox) durableKey() string { return livenessPrefix + o.cfg.Instance + "/durable" }

// liveness checks the previous run's marks, then keeps this run's.
func (o *Outbox) liveness(ctx context.Context) {
	defer o.wg.Done()
	hb := o.cfg.Heartbeat
	bo := newBackoff(o.cfg.MaxBackoff)
	read := func(key string) (int64, bool) {
		for {
			v, err := o.store.Cursor(ctx, key)
			if err == nil {
				return v, true
			}
			select {
			case <-time.After(bo.NextBackOff()):
			case <-ctx.Done():
				return 0, false
			}
		}
	}
	start := o.cfg.Now()
	alive, ok := read(o.aliveKey())
	if !ok {
		return
	}
	if alive != 0 {
		durable, ok := read(o.durableKey())
		if !ok {
			return
		}
		select {
		case <-time.After(2*hb + hb/2):
		case <-ctx.Done():
			return // unchecked: the marks stay for the next run to examine
		}
		again, ok := read(o.aliveKey())
		if !ok {
			return
		}
		if again == alive {
			// It died after its last recorded heartbeat, but the store may
			// have been unreachable for its last heartbeats while Track
			// went on buffering: only this start bounds the window.
			// From a heartbeat before the durable mark: an event is stamped
			// (by its caller) a moment before Track counts it pending.
			last := time.Unix(0, alive).UTC()
			from, to := time.Unix(0, durable).UTC().Add(-hb), start.UTC()
			if to.Before(last.Add(2 * hb)) {
				to = last.Add(2 * hb) // clocks of two hosts sharing a name
			}
			if durable == 0 || !from.Before(to) {
				from = last
			}
			g := Gap{From: from, To: to, Reason: fmt.Sprintf(
				"outbox %q stopped without Close (a crash?) after %s: events it had buffered but not journaled are missing",
				o.cfg.Instance, last.Format(time.RFC3339))}
			for o.store.AddGap(ctx, g) != nil {
				select {
				case <-time.After(bo.NextBackOff()):
				case <-ctx.Done():
					return
				}
			}
			o.cfg.Logger.Warn("tracking: the previous outbox run did not close; recorded a gap", "instance", o.cfg.Instance, "from", g.From, "to", g.To)
		} else {
			o.cfg.Logger.Error("tracking: another outbox is running with this Instance name; give each running outbox its own OutboxConfig.Instance, or a crash of one goes unnoticed",
				"instance", o.cfg.Instance)
		}
	}
	o.checked.Store(true)
	close(o.checkedC)
	tick := time.NewTicker(hb)
	defer tick.Stop()
	for {
		now := o.cfg.Now()
		if o.pending.Load() == 0 { // read after now: all tracked before now is journaled
			o.durableAt = now
		}
		// Alive first: a crash between the two writes leaves an older
		// durable mark, so a wider window, never one that misses events.
		if err := o.store.SetCursor(ctx, o.aliveKey(), now.UnixNano()); err == nil {
			_ = o.store.SetCursor(ctx, o.durableKey(), o.durableAt.UnixNano())
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// Recovered is closed once the outbox has examined what the previous run
// under its Instance left in the store, and recorded a gap if that run
// died with events buffered: from then on Stats and Gaps tell the whole
// truth about it. It takes about two and a half heartbeats after a crash,
// and no time after a clean Close.
func (o *Outbox) Recovered() <-chan struct{} { return o.checkedC }

// markClosed records a clean close: everything tracked is in the journal
// or in a recorded gap. It is skipped when either is not so (a gap still
// pending, the previous run's marks not examined yet), leaving the marks
// to tell the next run.
func (o *Outbox) markClosed(ctx context.Context) {
	o.mu.Lock()
	unrecorded := o.lost != nil
	o.mu.Unlock()
	if unrecorded || !o.checked.Load() || o.pending.Load() != 0 {
		return
	}
	if err := o.store.SetCursor(ctx, o.aliveKey(), 0); err != nil {
		o.cfg.Logger.Warn("tracking: could not record a clean close; the next run will record a gap", "err", err)
	}
}
