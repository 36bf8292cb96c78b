package tracking

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Tracker records events. Track never blocks on storage or sinks.
type Tracker interface {
	Track(ctx context.Context, events ...Event) error
}

// Sink receives events from the outbox in batches, in journal order (so in
// order per message). Write returns nil only when the whole batch is
// stored; on error the outbox retries the same batch (with the same event
// IDs) later, so a sink should deduplicate by Event.ID.
type Sink interface {
	Name() string
	Write(ctx context.Context, events []Event) error
}

// ErrBufferFull says Track could not buffer the events (the journal is not
// keeping up or is down); they were not recorded and a gap was noted.
var ErrBufferFull = errors.New("tracking: outbox buffer full; events dropped and recorded as a gap")

// OutboxConfig configures an Outbox.
type OutboxConfig struct {
	Sinks []Sink
	// Buffer is how many events Track can hold before the journal takes
	// them. Default 65,536.
	Buffer int
	// BatchSize is the most events per journal append and per sink write.
	// Default 500.
	BatchSize int
	// PollInterval is how often an idle sink looks for events. Default 100ms.
	PollInterval time.Duration
	// MaxBackoff caps the wait between retries to a failing sink or
	// journal. Default 30s.
	MaxBackoff time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	// Instance names this outbox's liveness marks in the store: one
	// running outbox per name. Outboxes on a shared store (PostgreSQL)
	// need one name each, stable across restarts (a host or pod name), for
	// a crash to be detected. Default "default".
	Instance string
	// Heartbeat is how often the outbox records that it is alive and up
	// to when everything tracked is in the journal. Default 1s.
	Heartbeat time.Duration
}

// livenessPrefix starts the names under which outboxes keep their
// liveness marks in the store's cursor table; sinks may not use it.
const livenessPrefix = "herald.outbox/"

// Outbox is the durable journal in front of the sinks. It is safe for
// concurrent use.
type Outbox struct {
	store Store
	cfg   OutboxConfig

	in      chan Event
	flushed chan chan struct{}
	notify  []chan struct{}
	// tails hold, per sink, the records the appender just made durable
	// (when the store says which: RecordAppender), so a sink that keeps up
	// is handed them without reading the journal back.
	tails []*tail
	// records is the store as a RecordAppender, or nil.
	records RecordAppender
	// appending is held by the appender while an append's records are on
	// their way into the tails; a forwarder that misses waits on it once,
	// so it does not read back what an append is about to hand it.
	appending sync.Mutex
	done      chan struct{}
	wg        sync.WaitGroup
	cancel    context.CancelFunc
	closed    atomic.Bool

	mu      sync.Mutex
	lost    *Gap // events dropped, not yet recorded as a gap
	status  map[string]*SinkStatus
	pending atomic.Int64 // events buffered, not yet appended

	// durableAt: everything tracked before it is in the journal (the
	// liveness goroutine's; read by Close after it stopped).
	durableAt time.Time
	// checked: the previous run's marks were examined (and a crash gap
	// recorded if there was one), so this run may overwrite them.
	checked  atomic.Bool
	checkedC chan struct{} // closed with checked
}

// SinkStatus is a sink's progress.
type SinkStatus struct {
	Sink string
	// Backlog is how many journal events the sink has not received.
	Backlog int64
	// OldestUndelivered is the time of the oldest event it has not received.
	OldestUndelivered time.Time
	LastError         string
	LastSuccess       time.Time
	Failures          int
}

// NewOutbox starts an outbox on store: one goroutine appends buffered
// events to the journal, one per sink forwards them. Close stops it.
func NewOutbox(store Store, cfg *OutboxConfig) (*Outbox, error) {
	if store == nil {
		return nil, errors.New("tracking: NewOutbox: missing store (try tracking.NewMemoryStore or embedded.Open(path).Tracking())")
	}
	o := &Outbox{store: store, status: map[string]*SinkStatus{}, checkedC: make(chan struct{})}
	o.records, _ = store.(RecordAppender)
	if cfg != nil {
		o.cfg = *cfg
	}
	c := &o.cfg
	c.Buffer = cmp.Or(c.Buffer, 65536)
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.PollInterval = cmp.Or(c.PollInterval, 100*time.Millisecond)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, 30*time.Second)
	c.Instance = cmp.Or(c.Instance, "default")
	c.Heartbeat = cmp.Or(c.Heartbeat, time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	names := map[string]bool{}
	for _, s := range c.Sinks {
		if s == nil || s.Name() == "" || names[s.Name()] {
			return nil, errors.New("tracking: OutboxConfig.Sinks: every sink needs a distinct, non-empty name")
		}
		if strings.HasPrefix(s.Name(), livenessPrefix) {
			return nil, fmt.Errorf("tracking: OutboxConfig.Sinks: sink name %q: the prefix %q is reserved", s.Name(), livenessPrefix)
		}
		names[s.Name()] = true
	}
	o.in = make(chan Event, c.Buffer)
	o.flushed = make(chan chan struct{})
	o.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	o.durableAt = c.Now() // nothing of this run is buffered yet
	o.wg.Add(2)
	go o.appender(ctx)
	go o.liveness(ctx)
	for _, s := range c.Sinks {
		n := make(chan struct{}, 1)
		t := &tail{max: 4 * c.BatchSize}
		o.notify = append(o.notify, n)
		o.tails = append(o.tails, t)
		o.status[s.Name()] = &SinkStatus{Sink: s.Name()}
		o.wg.Add(1)
		go o.forward(ctx, s, n, t)
	}
	return o, nil
}

// Track validates events and buffers them for the journal without
// waiting. Invalid events are refused (nothing of the call is buffered);
// if the buffer is full the events are dropped, the window is recorded as a
// gap, and ErrBufferFull is returned.
func (o *Outbox) Track(_ context.Context, events ...Event) error {
	for i := range events {
		if err := events[i].Validate(); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	if o.closed.Load() {
		o.noteLost(events, "outbox closed")
		return ErrBufferFull
	}
	for i, e := range events {
		// Counted before it is buffered, so "nothing pending" really means
		// every event tracked so far is in the journal (see liveness).
		o.pending.Add(1)
		select {
		case o.in <- e:
		default:
			o.pending.Add(-1)
			o.noteLost(events[i:], "outbox buffer full")
			return ErrBufferFull
		}
	}
	return nil
}

// TrackDurable appends events to the journal and returns once they are
// durable, with how many were new (duplicates by ID are skipped). The
// ingest handler uses it to answer 202 only for durable batches.
func (o *Outbox) TrackDurable(ctx context.Context, events ...Event) (int, error) {
	n, err := o.store.Append(ctx, events)
	if err == nil {
		o.wake()
	}
	return n, err
}

// noteLost widens the pending gap to cover the times of events that were
// not recorded (event time, which is what Stats ranges are in).
func (o *Outbox) noteLost(events []Event, reason string) {
	if len(events) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lost == nil {
		o.lost = &Gap{From: events[0].At, To: events[0].At, Reason: reason}
	}
	for _, e := range events {
		if e.At.Before(o.lost.From) {
			o.lost.From = e.At
		}
		if e.At.After(o.lost.To) {
			o.lost.To = e.At
		}
	}
}

// recordLost writes the pending gap, if any; it stays pending on failure.
func (o *Outbox) recordLost(ctx context.Context) {
	o.mu.Lock()
	if o.lost == nil {
		o.mu.Unlock()
		return
	}
	pending := o.lost
	g := *pending
	o.mu.Unlock()
	g.To = g.To.Add(time.Nanosecond) // gaps are [From, To)
	if err := o.store.AddGap(ctx, g); err != nil {
		return
	}
	o.mu.Lock()
	if o.lost == pending && !o.lost.To.After(g.To) {
		o.lost = nil // nothing was added to it meanwhile
	} else if o.lost == pending {
		o.lost.From = g.To // keep only what came after
	}
	o.mu.Unlock()
	o.cfg.Logger.Warn("tracking: recorded a gap", "from", g.From, "to", g.To, "reason", g.Reason)
}

func (o *Outbox) wake() {
	for _, n := range o.notify {
		select {
		case n <- struct{}{}:
		default:
		}
	}
}

func newBackoff(maxWait time.Duration) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(maxWait),
		backoff.WithMaxElapsedTime(0),
	)
}

// appender moves buffered events into the journal in batches, retrying a
// failing journal with backoff while the buffer absorbs new events.
func (o *Outbox) appender(ctx context.Context) {
	defer o.wg.Done()
	batch := make([]Event, 0, o.cfg.BatchSize)
	bo := newBackoff(o.cfg.MaxBackoff)
	for {
		batch = batch[:0]
		select {
		case e := <-o.in:
			batch = append(batch, e)
		case ack := <-o.flushed:
			o.recordLost(ctx)
			close(ack)
			continue
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case e := <-o.in:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		for {
			var err error
			if o.records != nil {
				o.appending.Lock()
				var recs []Record
				if recs, err = o.records.AppendRecords(ctx, batch); err == nil {
					for _, t := range o.tails {
						t.add(recs)
					}
				}
				o.appending.Unlock()
			} else {
				_, err = o.store.Append(ctx, batch)
			}
			if err == nil {
				o.pending.Add(-int64(len(batch)))
				bo.Reset()
				o.recordLost(ctx)
				o.wake()
				break
			}
			o.cfg.Logger.Warn("tracking: journal append failed; retrying", "events", len(batch), "err", err)
			select {
			case <-time.After(bo.NextBackOff()):
			case <-ctx.Done():
				o.noteLost(batch, "outbox stopped before the journal took these events")
				o.pending.Add(-int64(len(batch)))
				return
			}
		}
	}
}

// forward delivers journal events to one sink, retrying with backoff.
func (o *Outbox) forward(ctx context.Context, s Sink, notify chan struct{}, t *tail) {
	defer o.wg.Done()
	bo := newBackoff(o.cfg.MaxBackoff)
	timer := time.NewTimer(o.cfg.PollInterval)
	defer timer.Stop()
	wait := func(d time.Duration, wake <-chan struct{}) bool {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
		return true
	}
	for {
		cursor, err := o.store.Cursor(ctx, s.Name())
		var recs []Record
		if err == nil {
			if recs = t.take(cursor, o.cfg.BatchSize); recs == nil && o.records != nil {
				o.appending.Lock() // after an append in flight: its records join the tail
				recs = t.take(cursor, o.cfg.BatchSize)
				o.appending.Unlock()
			}
			if recs == nil {
				recs, err = o.store.Read(ctx, cursor, o.cfg.BatchSize)
			}
		}
		if err == nil && len(recs) == 0 {
			if !wait(o.cfg.PollInterval, notify) {
				return
			}
			continue
		}
		if err == nil {
			events := make([]Event, len(recs))
			for i := range recs {
				events[i] = recs[i].Event
			}
			if err = s.Write(ctx, events); err == nil {
				err = o.store.SetCursor(ctx, s.Name(), recs[len(recs)-1].Seq)
			}
		}
		o.mu.Lock()
		st := o.status[s.Name()]
		if err == nil {
			st.LastSuccess, st.LastError = o.cfg.Now(), ""
		} else if ctx.Err() == nil {
			st.LastError = err.Error()
			st.Failures++
		}
		o.mu.Unlock()
		if err == nil {
			bo.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		o.cfg.Logger.Warn("tracking: sink write failed; retrying", "sink", s.Name(), "err", err)
		if !wait(bo.NextBackOff(), nil) {
			return
		}
	}
}

// SinkStatus returns each sink's backlog, lag and last error.
func (o *Outbox) SinkStatus(ctx context.Context) ([]SinkStatus, error) {
	head, err := o.store.Head(ctx)
	if err != nil {
		return nil, err
	}
	var out []SinkStatus
	for _, s := range o.cfg.Sinks {
		cursor, err := o.store.Cursor(ctx, s.Name())
		if err != nil {
			return nil, err
		}
		o.mu.Lock()
		st := *o.status[s.Name()]
		o.mu.Unlock()
		st.Backlog = head - cursor
		if st.Backlog > 0 {
			if recs, err := o.store.Read(ctx, cursor, 1); err == nil && len(recs) > 0 {
				st.OldestUndelivered = recs[0].Event.At
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// Pending returns how many events are buffered but not yet in the journal.
func (o *Outbox) Pending() int64 { return o.pending.Load() }

// Flush waits until the events buffered before the call are in the
// journal (or ctx ends).
func (o *Outbox) Flush(ctx context.Context) error {
	for o.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	ack := make(chan struct{})
	select {
	case o.flushed <- ack:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DeclareGap records a window an operator knows is incomplete.
func (o *Outbox) DeclareGap(ctx context.Context, from, to time.Time, reason string) error {
	if !from.Before(to) {
		return errors.New("tracking: DeclareGap: from must be before to")
	}
	return o.store.AddGap(ctx, Gap{From: from, To: to, Reason: reason, Declared: true})
}

// Gaps lists the gaps overlapping [from, to).
func (o *Outbox) Gaps(ctx context.Context, from, to time.Time) ([]Gap, error) {
	return o.store.Gaps(ctx, from, to)
}

// Close flushes buffered events into the journal until ctx ends, records
// as a gap whatever could not be flushed, and stops the sinks' forwarders
// (what they have not received stays in the journal for next time).
func (o *Outbox) Close(ctx context.Context) error {
	if !o.closed.CompareAndSwap(false, true) {
		return nil
	}
	flushErr := o.Flush(ctx)
	if flushErr != nil {
		// Whatever is still buffered is lost: note it, and record the gap
		// with a fresh context since ctx has ended.
		var rest []Event
	drain:
		for {
			select {
			case e := <-o.in:
				rest = append(rest, e)
			default:
				break drain
			}
		}
		if len(rest) > 0 {
			o.noteLost(rest, "outbox closed before flushing")
		}
	}
	o.cancel()
	o.wg.Wait()
	gctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.recordLost(gctx)
	o.markClosed(gctx)
	return flushErr
}

// tail is the journal's newest records as the appender added them, for
// one sink: up to max, the oldest dropped first. A sink whose cursor is
// just before the first of them takes them from here; any other reads
// the journal.
type tail struct {
	mu   sync.Mutex
	recs []Record
	max  int
}

func (t *tail) add(recs []Record) {
	if len(recs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recs = append(t.recs, recs...)
	if over := len(t.recs) - t.max; over > 0 {
		t.recs = append(t.recs[:0:0], t.recs[over:]...)
	}
}

// take returns up to n records following after with no gap in their
// sequence, or nil when the tail does not start right after it (the
// journal holds records the tail does not: read them there).
func (t *tail) take(after int64, n int) []Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := 0
	for i < len(t.recs) && t.recs[i].Seq <= after {
		i++
	}
	t.recs = t.recs[i:]
	if len(t.recs) == 0 || t.recs[0].Seq != after+1 {
		return nil
	}
	j := 1
	for j < len(t.recs) && j < n && t.recs[j].Seq == t.recs[j-1].Seq+1 {
		j++
	}
	return slices.Clone(t.recs[:j])
}
