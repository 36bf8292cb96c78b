package campaign

import (
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// Config configures a Runner.
type Config struct {
	Dispatcher *herald.Dispatcher
	// Store keeps the campaigns and their cursors: embedded.DB.Checkpoints()
	// on the Dispatcher's embedded store (the checkpoint and its messages
	// are then one durable write).
	Store checkpoint.Store
	// Audiences are the iterators campaigns name.
	Audiences map[string]Iterator
	// StoredAudiences, when set, holds every audience not in Audiences: a
	// campaign naming one targets that stored audience (Stored), so a
	// service can take uploads and campaigns by name at run time.
	StoredAudiences audience.Store
	// PageSize is the most recipients read (and messages enqueued) per
	// checkpoint. Default 500.
	PageSize int
	// MarketingPerSecond, when set, is a workspace-wide limit on the
	// messages all this runner's campaigns enqueue per second, shared in
	// FIFO order (Braze's rule): while an older campaign waits for the
	// limit, younger ones wait behind it. Transactional messages are
	// never counted (they do not go through campaigns).
	MarketingPerSecond float64
	// Owner names this runner in a campaign's lease: one runner at a time
	// runs a campaign (Run returns ErrElsewhere while another holds it).
	// Give a process that restarts the same Owner (heraldd uses its host
	// and listen address) so it takes its campaigns back at once; a
	// lease it left expires after Lease. Default: host, process ID and a
	// random suffix.
	Owner string
	// Lease is how long a runner's hold on a campaign lasts without
	// renewal (renewed every third of it while it runs). Default 30 s.
	Lease  time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// Runner creates campaigns and fans them out.
type Runner struct {
	cfg Config

	mu        sync.Mutex
	cancelled map[string]cancelState // what Eligible last read of each campaign

	marketing *rate.Limiter // nil: no workspace-wide limit
	line      fifo
}

// New returns a runner.
func New(cfg *Config) (*Runner, error) {
	if cfg == nil || cfg.Dispatcher == nil || cfg.Store == nil {
		return nil, errors.New("campaign: New: Config.Dispatcher and Config.Store are required")
	}
	r := &Runner{cfg: *cfg, cancelled: map[string]cancelState{}}
	r.cfg.PageSize = cmp.Or(r.cfg.PageSize, 500)
	r.cfg.Lease = cmp.Or(r.cfg.Lease, 30*time.Second)
	if r.cfg.Owner == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = crand.Read(b[:])
		r.cfg.Owner = fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
	}
	if r.cfg.MarketingPerSecond < 0 {
		return nil, errors.New("campaign: New: MarketingPerSecond is negative")
	}
	if r.cfg.MarketingPerSecond > 0 {
		r.marketing = rate.NewLimiter(rate.Limit(r.cfg.MarketingPerSecond), r.cfg.PageSize)
	}
	if r.cfg.Logger == nil {
		r.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if r.cfg.Now == nil {
		r.cfg.Now = time.Now
	}
	return r, nil
}

// audience returns the Iterator a campaign names: one of Config.Audiences,
// or else a stored audience of Config.StoredAudiences; nil when neither.
func (r *Runner) audience(name string) Iterator {
	if it := r.cfg.Audiences[name]; it != nil {
		return it
	}
	if r.cfg.StoredAudiences != nil && name != "" {
		return Stored(r.cfg.StoredAudiences, name)
	}
	return nil
}

// Create stores a new campaign, running; with a known key it returns the
// stored one (ErrConflict if its content differs). Bad input gets an
// *InvalidError and stores nothing.
func (r *Runner) Create(ctx context.Context, c Campaign) (Status, error) {
	now := r.cfg.Now()
	if err := c.validate(r.audience, now); err != nil {
		return Status{}, err
	}
	if _, err := compile(&c); err != nil {
		return Status{}, &InvalidError{Field: "Content", Reason: err.Error()}
	}
	spec, err := json.Marshal(c)
	if err != nil {
		return Status{}, &InvalidError{Field: "Content", Reason: "cannot be encoded"}
	}
	rec, created, err := r.cfg.Store.Create(ctx, checkpoint.Record{Key: c.Key, Spec: spec, State: Running, Created: now})
	if err != nil {
		return Status{}, err
	}
	if !created && !bytes.Equal(rec.Spec, spec) {
		return Status{}, fmt.Errorf("%w: %s", ErrConflict, c.Key)
	}
	return status(rec)
}

func status(rec checkpoint.Record) (Status, error) {
	st := Status{State: rec.State, Cursor: rec.Cursor, Recipients: rec.Recipients, Enqueued: rec.Enqueued,
		Invalid: rec.Invalid, FanoutDone: rec.Done, Created: rec.Created, Staged: rec.Staged, Drained: rec.Drained, Cancelled: rec.Cancelled}
	if err := json.Unmarshal(rec.Spec, &st.Campaign); err != nil {
		return Status{}, fmt.Errorf("campaign %s: stored campaign does not decode: %w", rec.Key, err)
	}
	return st, nil
}

// Status returns the campaign's progress.
func (r *Runner) Status(ctx context.Context, key string) (Status, error) {
	rec, err := r.cfg.Store.Get(ctx, key)
	if err != nil {
		return Status{}, mapNotFound(err)
	}
	return status(rec)
}

// List returns up to limit campaigns whose keys sort after after, in key
// order (pass the last key to read the next page).
func (r *Runner) List(ctx context.Context, after string, limit int) ([]Status, error) {
	recs, err := r.cfg.Store.List(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(recs))
	for _, rec := range recs {
		st, err := status(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func mapNotFound(err error) error {
	if errors.Is(err, checkpoint.ErrNotFound) {
		return fmt.Errorf("%w (%w)", ErrNotFound, err)
	}
	return err
}

// Pause stops the fan-out at its next page; Run again to resume.
func (r *Runner) Pause(ctx context.Context, key string) error {
	return r.cfg.Store.SetState(ctx, key, Paused)
}

// Resume marks a paused campaign running (Run fans it out again).
func (r *Runner) Resume(ctx context.Context, key string) error {
	return r.cfg.Store.SetState(ctx, key, Running)
}

// Cancel stops the fan-out, and its messages still waiting in the queue
// are refused at the moment of sending (recorded ineligible, "campaign
// cancelled"), when the Dispatcher's Config.Eligible asks Runner.Eligible.
// Messages already sent stay recorded.
func (r *Runner) Cancel(ctx context.Context, key string) error {
	if err := r.cfg.Store.SetState(ctx, key, Cancelled); err != nil {
		return err
	}
	r.mu.Lock()
	r.cancelled[key] = cancelState{cancelled: true, at: time.Now()}
	r.mu.Unlock()
	return nil
}

// cancelState is a campaign's cancellation as Eligible last read it. A
// cancellation is final and kept; "not cancelled" is read again after
// cancelRecheck, so a cancel by another process takes effect here too.
type cancelState struct {
	cancelled bool
	at        time.Time
}

const cancelRecheck = 2 * time.Second

// Eligible refuses the messages of cancelled campaigns. Wire it into
// herald.Config.Eligible (with the host's own predicate, if any).
func (r *Runner) Eligible(ctx context.Context, m *herald.Message) (bool, string) {
	if m.Campaign == "" {
		return true, ""
	}
	r.mu.Lock()
	c, known := r.cancelled[m.Campaign]
	r.mu.Unlock()
	if !known || (!c.cancelled && time.Since(c.at) > cancelRecheck) {
		rec, err := r.cfg.Store.Get(ctx, m.Campaign)
		if err == nil || errors.Is(err, checkpoint.ErrNotFound) { // not a campaign of this runner's: never cancelled here
			c = cancelState{cancelled: err == nil && rec.State == Cancelled, at: time.Now()}
			r.mu.Lock()
			r.cancelled[m.Campaign] = c
			r.mu.Unlock()
		}
	}
	if c.cancelled {
		return false, "campaign cancelled"
	}
	return true, ""
}

// Run fans the campaign out from its cursor and drains it into the queue
// until every message is enqueued (the campaign is then Done), it is
// paused or cancelled (ErrStopped), or ctx ends. It is safe to call
// again after a crash: it resumes from the last checkpoint. One Run per
// campaign at a time.
//
// The fan-out has two halves that run side by side. The stage reads the
// audience from its cursor as fast as the store takes it: each page's
// messages are built, checked at the door and stored as one row (a
// staged page) in the same write as the cursor after it. The drain takes
// the staged pages in order at the campaign's rate, each part of a page
// enqueued in the same write as the page's offset after it. Each write
// is exactly once, so a crash anywhere resumes with no recipient skipped
// and none enqueued twice; the queue holds only what the rate let
// through, and the audience is captured at the speed of reading it.
func (r *Runner) Run(ctx context.Context, key string) error {
	st, err := r.Status(ctx, key)
	if err != nil {
		return err
	}
	c := &st.Campaign
	it := r.audience(c.Audience)
	if it == nil {
		return &InvalidError{Field: "Audience", Reason: fmt.Sprintf("unknown audience %q", c.Audience)}
	}
	tpl, err := compile(c)
	if err != nil {
		return err
	}
	tpl.now = st.Created
	lim, err := r.limiter(ctx, st, it)
	if err != nil {
		return err
	}
	var place *member // in the marketing limit's line
	if r.marketing != nil {
		place = r.line.join(st.Created)
		defer r.line.leave(place)
	}
	switch st.State {
	case Paused, Cancelled:
		return ErrStopped
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	held, err := r.hold(ctx, key, cancel)
	if err != nil {
		return err
	}
	defer held()
	staged := make(chan struct{}, 1) // a page was staged
	stageOver := make(chan struct{})
	var stageErr error
	go func() {
		defer close(stageOver)
		if !st.FanoutDone {
			stageErr = r.stage(ctx, key, st, it, tpl, staged)
		}
	}()
	err = r.drain(ctx, key, c, tpl, lim, place, staged, stageOver, &stageErr)
	cancel(nil)
	<-stageOver
	if err == nil {
		err = stageErr
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrElsewhere) {
		return cause
	}
	if err != nil {
		return err
	}
	if st, err = r.Status(context.WithoutCancel(ctx), key); err != nil {
		return err
	}
	switch {
	case st.State == Done:
		return nil
	case st.State != Running:
		return ErrStopped
	case !st.FanoutDone:
		return fmt.Errorf("campaign %s: the fan-out stopped before the audience's end", key)
	}
	return r.cfg.Store.SetState(context.WithoutCancel(ctx), key, Done)
}

// hold takes the campaign's lease for this runner and renews it while
// the run lasts; losing it ends the run (cancel with ErrElsewhere). The
// returned func stops the renewal and gives the lease up. Leases are on
// the wall clock (time.Now, not Config.Now): they are between processes.
func (r *Runner) hold(ctx context.Context, key string, cancel context.CancelCauseFunc) (release func(), err error) {
	owner, lease := r.cfg.Owner, r.cfg.Lease
	now := time.Now()
	ok, err := r.cfg.Store.Claim(ctx, key, owner, now, now.Add(lease))
	if err != nil {
		return nil, mapNotFound(err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: campaign %s", ErrElsewhere, key)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			now := time.Now()
			ok, err := r.cfg.Store.Claim(ctx, key, owner, now, now.Add(lease))
			if err == nil && !ok {
				cancel(fmt.Errorf("%w: campaign %s (its lease was taken)", ErrElsewhere, key))
				return
			}
			// A failed renewal (store down) is tried again at the next
			// tick; the lease outlives two of them.
		}
	}()
	return func() {
		close(stop)
		<-done
		now := time.Now()
		_, _ = r.cfg.Store.Claim(context.WithoutCancel(ctx), key, owner, now, now)
	}, nil
}

// stateEvery is how often a fan-out reads its campaign's state again
// (to see a pause or cancel): a read per page would cost the stage a
// fifth of its speed.
const stateEvery = 50 * time.Millisecond

// stage reads the audience from the campaign's cursor to its end, a page
// at a time, storing each page's checked messages with the cursor after
// it, and signals staged after each. It stops (ErrStopped) when the
// campaign is paused or cancelled (seen within stateEvery). Pages are
// pipelined: while one page's write is in the store's writer, the next is
// read, rendered, checked and encoded; its write waits for the one
// before (and is not made if that one failed), so the cursor moves in
// order.
func (r *Runner) stage(ctx context.Context, key string, st Status, it Iterator, tpl *templates, staged chan<- struct{}) error {
	c := &st.Campaign
	var inFlight *pageWrite
	read := time.Now() // when st was read
	defer func() {
		if inFlight != nil {
			<-inFlight.done
		}
	}()
	settle := func() error { // waits for the page in flight and reads the state it left
		w := inFlight
		if w == nil {
			return nil
		}
		<-w.done
		inFlight = nil
		if w.err != nil {
			return w.err
		}
		if w.invalid > 0 {
			r.cfg.Logger.Warn("campaign: recipients refused at the door", "campaign", key, "count", w.invalid)
		}
		select {
		case staged <- struct{}{}:
		default:
		}
		if time.Since(read) < stateEvery {
			return nil
		}
		var err error
		st, err = r.Status(ctx, key)
		read = time.Now()
		return err
	}
	cursor, end := st.Cursor, st.FanoutDone
	for !end {
		if st.State != Running {
			if err := settle(); err != nil {
				return err
			}
			return ErrStopped
		}
		rs, next, err := it.Next(ctx, cursor)
		if err != nil {
			return fmt.Errorf("campaign %s: audience: %w", key, err)
		}
		data, count, invalid, err := r.encodePage(c, tpl, rs)
		if err != nil {
			return fmt.Errorf("campaign %s: %w", key, err)
		}
		w := &pageWrite{done: make(chan struct{}), after: inFlight, invalid: invalid}
		go func() {
			defer close(w.done)
			if w.err = w.after.wait(ctx); w.err == nil {
				w.err = r.cfg.Store.Stage(ctx, key, next, len(rs), invalid, next == "", data, count)
			}
		}()
		if err := settle(); err != nil {
			<-w.done
			return err
		}
		inFlight = w
		cursor, end = next, next == ""
	}
	return settle()
}

// stagedMessage is one message of a staged page: the recipient it is for
// and its channel. The message itself is built again from the campaign
// when it is drained: the same recipient builds the same message (its
// rendering, keys and local send time depend on nothing else), and a
// recipient is a tenth of its message's size.
type stagedMessage struct {
	Channel   herald.Channel `json:"c"`
	Recipient Recipient      `json:"r"`
}

// encodePage builds the recipients' messages, checks each at the door
// and encodes those it takes (as stagedMessages, a JSON array); the
// refused ones (a malformed address) are counted, not stored. A large
// page is built in parts, one per core, joined in order.
func (r *Runner) encodePage(c *Campaign, tpl *templates, rs []Recipient) (data []byte, count, invalid int, err error) {
	parts := min(runtime.GOMAXPROCS(0), 4, max(len(rs)/64, 1))
	type part struct {
		b              []byte
		count, invalid int
		err            error
	}
	out := make([]part, parts)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &out[i]
			p.b = make([]byte, 0, 64+len(rs)/parts*128)
			for j := i * len(rs) / parts; j < (i+1)*len(rs)/parts; j++ {
				var rj []byte
				for _, m := range tpl.messages(c, &rs[j]) {
					err := r.cfg.Dispatcher.Check(&m)
					var fe *herald.FieldError
					if errors.As(err, &fe) {
						p.invalid++
						continue
					}
					if err == nil && rj == nil {
						rj, err = json.Marshal(&rs[j])
					}
					if err != nil {
						p.err = err
						return
					}
					p.b = append(append(append(append(append(p.b, `,{"c":"`...), m.Channel()...), `","r":`...), rj...), '}')
					p.count++
				}
			}
		}()
	}
	wg.Wait()
	size := 2
	for _, p := range out {
		if p.err != nil {
			return nil, 0, 0, p.err
		}
		size += len(p.b)
		count += p.count
		invalid += p.invalid
	}
	data = make([]byte, 0, size)
	for _, p := range out {
		data = append(data, p.b...)
	}
	if len(data) == 0 {
		return []byte("[]"), 0, invalid, nil
	}
	data[0] = '[' // the first part's leading comma
	return append(data, ']'), count, invalid, nil
}

// decodePage builds a staged page's messages again.
func decodePage(c *Campaign, tpl *templates, p checkpoint.Page) ([]herald.Message, error) {
	var items []stagedMessage
	if err := json.Unmarshal(p.Data, &items); err != nil {
		return nil, err
	}
	if len(items) != p.Count {
		return nil, fmt.Errorf("%d messages, want %d", len(items), p.Count)
	}
	msgs := make([]herald.Message, 0, len(items))
	for i := range items {
		n := len(msgs)
		for _, m := range tpl.messages(c, &items[i].Recipient) {
			if m.Channel() == items[i].Channel {
				msgs = append(msgs, m)
				break
			}
		}
		if len(msgs) == n {
			return nil, fmt.Errorf("recipient %d builds no %s message", i, items[i].Channel)
		}
	}
	return msgs, nil
}

// drain enqueues the staged pages in order at the campaign's rate (and
// the marketing limit's), until the stage is over and no page is left,
// or the campaign is paused or cancelled (ErrStopped, seen within
// stateEvery). Parts are pipelined like the stage's pages: while one
// part's write is in the store's writer, the next is paced, built and
// checked; its write waits for the one before it.
func (r *Runner) drain(ctx context.Context, key string, c *Campaign, tpl *templates, lim *rate.Limiter, place *member, staged, stageOver <-chan struct{}, stageErr *error) error {
	d := &drainer{r: r, key: key, lim: lim, place: place}
	defer d.wait()
	var after int64
	over := false // the stage is over: the pages left are all there will be
	for {
		ps, err := r.cfg.Store.Pages(ctx, key, after, 4)
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			if over {
				return d.settle()
			}
			select {
			case <-staged:
			case <-stageOver:
				over = true
				if *stageErr != nil {
					return *stageErr
				}
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		for _, p := range ps {
			msgs, err := decodePage(c, tpl, p)
			if err != nil {
				return fmt.Errorf("campaign %s: staged page %d: %w", key, p.Seq, err)
			}
			for off := p.Offset; off < len(msgs); {
				n := min(len(msgs)-off, lim.Burst())
				if err := d.part(ctx, p.Seq, off+n, msgs[off:off+n]); err != nil {
					return err
				}
				off += n
			}
			after = p.Seq
		}
	}
}

// drainer keeps a drain's part in flight.
type drainer struct {
	r        *Runner
	key      string
	lim      *rate.Limiter
	place    *member
	inFlight *pageWrite
	read     time.Time // when the campaign's state was last read
}

// part paces msgs and starts their write, with the page's offset moved
// to offset, once the part before it has landed.
func (d *drainer) part(ctx context.Context, seq int64, offset int, msgs []herald.Message) error {
	if time.Since(d.read) >= stateEvery {
		st, err := d.r.Status(ctx, d.key)
		if err != nil {
			return err
		}
		if st.State != Running {
			return ErrStopped
		}
		d.read = time.Now()
	}
	if err := d.r.paceOwn(ctx, d.lim, len(msgs), d.place); err != nil {
		return err
	}
	if d.place != nil {
		if err := d.r.line.take(ctx, d.place, d.r.marketing, len(msgs)); err != nil {
			return err
		}
	}
	w := &pageWrite{done: make(chan struct{}), after: d.inFlight}
	part := slices.Clone(msgs)
	go func() {
		defer close(w.done)
		w.invalid, w.err = d.r.sendPart(ctx, d.key, seq, offset, part, w.after)
	}()
	if err := d.settle(); err != nil {
		<-w.done
		return err
	}
	d.inFlight = w
	return nil
}

// settle waits for the part in flight.
func (d *drainer) settle() error {
	w := d.inFlight
	if w == nil {
		return nil
	}
	<-w.done
	d.inFlight = nil
	if errors.Is(w.err, checkpoint.ErrNotFound) { // the page was dropped: the campaign was cancelled
		return ErrStopped
	}
	return w.err
}

func (d *drainer) wait() {
	if d.inFlight != nil {
		<-d.inFlight.done
	}
}

// sendPart enqueues a part of a staged page in the same write as the
// page's offset after it (once the part before it has landed: after). A
// message the door now refuses (its encoded size over the queue's limit,
// or the Dispatcher's limits changed since it was staged) is left out
// and counted.
func (r *Runner) sendPart(ctx context.Context, key string, seq int64, offset int, part []herald.Message, after *pageWrite) (invalid int, err error) {
	for {
		e := inOrder(r.cfg.Store.Drain(key, seq, offset, invalid), after)
		if len(part) == 0 { // every one refused: the offset still moves
			_, err := e.Enqueue(ctx, nil, time.Time{})
			return invalid, err
		}
		_, err := r.cfg.Dispatcher.SendTx(ctx, e, part...)
		var fe *herald.FieldError
		if err == nil || !errors.As(err, &fe) {
			return invalid, err
		}
		i := batchIndex(fe.Field)
		if i < 0 || i >= len(part) {
			if len(part) != 1 {
				return invalid, err
			}
			i = 0
		}
		part = append(part[:i], part[i+1:]...)
		invalid++
	}
}

// inOrder wraps a write so it waits for the one before it (after), and
// is not made if that one failed.
func inOrder(e retry.Enqueuer, after *pageWrite) retry.Enqueuer {
	if after == nil {
		return e
	}
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		if err := after.wait(ctx); err != nil {
			return nil, err
		}
		return e.Enqueue(ctx, jobs, since)
	})
}

// wait waits for the write before (none: nil) to land: errPageBefore if
// it failed. It waits even when ctx ends (a store's write always ends),
// so a chain of writes ends in order and none outlives its Run.
func (w *pageWrite) wait(ctx context.Context) error {
	if w == nil {
		return nil
	}
	<-w.done
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.err != nil {
		return errPageBefore
	}
	return nil
}

// pageWrite is a staged page on its way into the store.
type pageWrite struct {
	done    chan struct{} // closed when the write is over
	after   *pageWrite    // the page before it, whose write must land first
	invalid int
	err     error
}

// errPageBefore: a page's write was not made because the page before it
// failed (its error is the one Run returns).
var errPageBefore = errors.New("campaign: the page before failed")

// batchIndex reads i from a FieldError's "[i].Field".
func batchIndex(field string) int {
	if !strings.HasPrefix(field, "[") {
		return -1
	}
	end := strings.IndexByte(field, ']')
	if end < 0 {
		return -1
	}
	i, err := strconv.Atoi(field[1:end])
	if err != nil {
		return -1
	}
	return i
}

// limiter paces the fan-out at the campaign's rate, derived from FinishBy
// and what is left of the audience when set.
func (r *Runner) limiter(ctx context.Context, st Status, it Iterator) (*rate.Limiter, error) {
	c := &st.Campaign
	perSecond := c.PerSecond
	if !c.FinishBy.IsZero() {
		size, err := it.(Sizer).Size(ctx)
		if err != nil {
			return nil, err
		}
		start := r.cfg.Now()
		if c.StartAt.After(start) {
			start = c.StartAt
		}
		left := max(size-st.Recipients, 1)
		secs := c.FinishBy.Sub(start).Seconds()
		if secs <= 0 {
			return nil, &InvalidError{Field: "FinishBy", Reason: "passed"}
		}
		perSecond = float64(left) / secs
	}
	// The burst is the most messages enqueued at once: a fiftieth of a
	// second's worth (a campaign at 1 a second sends 1 each second, not
	// a page at a time), at most a page. Small parts keep the store's
	// writer, which transactional sends share, free of long writes: at
	// 1,000/s, parts of 20 took a transactional Send's p99 beside the
	// campaign from 13.4 to 9.0 ms (BENCHMARKS.md).
	burst := min(max(int(perSecond/50), 1), max(r.cfg.PageSize, 1))
	lim := rate.NewLimiter(rate.Limit(perSecond), burst)
	lim.AllowN(time.Now(), burst) // start empty: the first part waits its share too
	return lim, nil
}

// templates are a campaign's content, parsed once.
type templates struct {
	fields map[string]*template.Template
	html   *htmltemplate.Template
	now    time.Time // when the fan-out started
}

// sendAt is when the recipient's message should go: StartAt, or with
// LocalTime the first such time of day in the recipient's zone at or
// after StartAt (or now).
func sendAt(c *Campaign, rc *Recipient, now time.Time) time.Time {
	if c.LocalTime == "" {
		return c.StartAt
	}
	from := now
	if c.StartAt.After(from) {
		from = c.StartAt
	}
	loc := time.UTC
	if rc.TimeZone != "" {
		if l, err := time.LoadLocation(rc.TimeZone); err == nil {
			loc = l
		}
	}
	hm, _ := time.Parse("15:04", c.LocalTime)
	f := from.In(loc)
	at := time.Date(f.Year(), f.Month(), f.Day(), hm.Hour(), hm.Minute(), 0, 0, loc)
	if at.Before(f) {
		at = time.Date(f.Year(), f.Month(), f.Day()+1, hm.Hour(), hm.Minute(), 0, 0, loc)
	}
	return at
}

func compile(c *Campaign) (*templates, error) {
	t := &templates{fields: map[string]*template.Template{}}
	add := func(name, text string) error {
		if text == "" || !strings.Contains(text, "{{") {
			return nil
		}
		tp, err := template.New(name).Option("missingkey=error").Parse(text)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		t.fields[name] = tp
		return nil
	}
	if p := c.Content.Push; p != nil {
		for name, v := range map[string]string{"push.title": p.Notification.Title, "push.body": p.Notification.Body, "push.url": p.Notification.URL} {
			if err := add(name, v); err != nil {
				return nil, err
			}
		}
	}
	if e := c.Content.Email; e != nil {
		for name, v := range map[string]string{"email.subject": e.Subject, "email.text": e.Text} {
			if err := add(name, v); err != nil {
				return nil, err
			}
		}
		if strings.Contains(e.HTML, "{{") {
			h, err := htmltemplate.New("email.html").Option("missingkey=error").Parse(e.HTML)
			if err != nil {
				return nil, fmt.Errorf("email.html: %w", err)
			}
			t.html = h
		}
	}
	if s := c.Content.SMS; s != nil {
		if err := add("sms.body", s.Body); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// render substitutes the recipient's variables into text; a variable the
// recipient lacks leaves the text unrendered and the message is refused
// at the door by its validation (or sent as written when it has none).
func (t *templates) render(name, text string, vars map[string]string) string {
	tp := t.fields[name]
	if tp == nil {
		return text
	}
	var b strings.Builder
	if err := tp.Execute(&b, vars); err != nil {
		return text
	}
	return b.String()
}

// messages builds the recipient's messages: one per channel the content
// has and the recipient has an address for. Keys are campaign, user and
// channel: the same recipient read again is the same message.
func (t *templates) messages(c *Campaign, rc *Recipient) []herald.Message {
	vars := map[string]string{"User": rc.User}
	for k, v := range rc.Vars {
		vars[k] = v
	}
	base := herald.Message{User: rc.User, TimeZone: rc.TimeZone, Campaign: c.Key, Automation: c.Automation,
		Labels: c.Labels, Category: c.Category, TTL: c.TTL, SendAt: sendAt(c, rc, t.now)}
	var out []herald.Message
	if p := c.Content.Push; p != nil && rc.Token != "" {
		m := base
		pm := *p
		pm.Token, pm.IdempotencyKey = rc.Token, ""
		pm.Notification.Title = t.render("push.title", p.Notification.Title, vars)
		pm.Notification.Body = t.render("push.body", p.Notification.Body, vars)
		pm.Notification.URL = t.render("push.url", p.Notification.URL, vars)
		m.Push, m.IdempotencyKey = &pm, c.Key+"/"+rc.User+"/push"
		out = append(out, m)
	}
	if e := c.Content.Email; e != nil && rc.Email != "" {
		m := base
		em := *e
		em.To, em.Cc, em.Bcc, em.IdempotencyKey = []string{rc.Email}, nil, nil, ""
		em.Subject = t.render("email.subject", e.Subject, vars)
		em.Text = t.render("email.text", e.Text, vars)
		if t.html != nil {
			var b strings.Builder
			if t.html.Execute(&b, vars) == nil {
				em.HTML = b.String()
			}
		}
		m.Email, m.IdempotencyKey = &em, c.Key+"/"+rc.User+"/email"
		out = append(out, m)
	}
	if s := c.Content.SMS; s != nil && rc.Phone != "" {
		m := base
		sm := *s
		sm.To, sm.IdempotencyKey = rc.Phone, ""
		sm.Body = t.render("sms.body", s.Body, vars)
		m.SMS, m.IdempotencyKey = &sm, c.Key+"/"+rc.User+"/sms"
		out = append(out, m)
	}
	return out
}

// Progress is a campaign's status with what happened to its messages.
type Progress struct {
	Status
	// Counts are the distinct messages per outcome so far (sent, capped,
	// suppressed, opted_out, ineligible, expired, dead, ...), from the
	// tracking journal; Complete is false when a gap in the journal
	// overlaps the campaign.
	Counts   map[tracking.Type]int
	Complete bool
	// Size is the audience's size, when its Iterator knows it.
	Size int
	// Rate is messages drained into the queue per second since the
	// campaign was created; ExpectedFinish when the last should be at
	// that rate (zero when unknown, stopped or done).
	Rate           float64
	ExpectedFinish time.Time
}

// Progress reports a campaign's status and outcomes. outbox is the
// Dispatcher's tracker (nil: no outcome counts).
func (r *Runner) Progress(ctx context.Context, key string, outbox *tracking.Outbox) (Progress, error) {
	st, err := r.Status(ctx, key)
	if err != nil {
		return Progress{}, err
	}
	p := Progress{Status: st, Complete: true}
	now := r.cfg.Now()
	if outbox != nil {
		s, err := outbox.Stats(ctx, tracking.Query{Campaign: key, From: st.Created.Add(-time.Minute), To: now.Add(48 * time.Hour)})
		if err != nil {
			return Progress{}, err
		}
		p.Counts, p.Complete = s.Counts, s.Complete
	}
	if sz, ok := r.audience(st.Campaign.Audience).(Sizer); ok {
		p.Size, _ = sz.Size(ctx)
	}
	if el := now.Sub(st.Created).Seconds(); el > 0 {
		p.Rate = float64(st.Drained) / el
	}
	// Left: what is staged and waits, and, while the audience is read,
	// its unread part at the messages per recipient so far.
	left := float64(st.Staged - st.Drained - st.Cancelled)
	if !st.FanoutDone && p.Size > st.Recipients && st.Recipients > 0 {
		left += float64(p.Size-st.Recipients) * float64(st.Staged) / float64(st.Recipients)
	}
	if st.State == Running && left > 0 && p.Rate > 0 {
		p.ExpectedFinish = now.Add(time.Duration(left / p.Rate * float64(time.Second)))
	}
	return p, nil
}

// paceOwn waits for the campaign's own rate; while it truly waits, it
// leaves the marketing limit to younger campaigns.
func (r *Runner) paceOwn(ctx context.Context, lim *rate.Limiter, n int, place *member) error {
	for ; n > 0; n -= lim.Burst() {
		res := lim.ReserveN(time.Now(), min(n, lim.Burst()))
		if !res.OK() {
			return errors.New("campaign: rate limiter refused a reservation")
		}
		d := res.Delay()
		if d <= 0 {
			continue
		}
		if place != nil {
			r.line.pace(place, true)
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			res.Cancel()
			if place != nil {
				r.line.pace(place, false)
			}
			return ctx.Err()
		}
		if place != nil {
			r.line.pace(place, false)
		}
	}
	return nil
}

// waitTokens waits for n tokens of lim, a burst at a time.
func waitTokens(ctx context.Context, lim *rate.Limiter, n int) error {
	for ; n > 0; n -= lim.Burst() {
		if err := lim.WaitN(ctx, min(n, lim.Burst())); err != nil {
			return err
		}
	}
	return nil
}

// fifo orders the campaigns sharing the marketing limit: a campaign
// takes from it only while every older running campaign is pacing
// itself (waiting on its own rate) or done, so the oldest drains first
// and younger ones get what it leaves.
type fifo struct {
	mu      sync.Mutex
	seq     uint64
	members map[*member]bool
	changed chan struct{}
}

type member struct {
	created time.Time
	seq     uint64
	paced   bool // waiting on its own rate: it leaves the limit to others
}

func (m *member) older(o *member) bool {
	if !m.created.Equal(o.created) {
		return m.created.Before(o.created)
	}
	return m.seq < o.seq
}

func (f *fifo) notify() {
	if f.changed != nil {
		close(f.changed)
	}
	f.changed = make(chan struct{})
}

func (f *fifo) join(created time.Time) *member {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.members == nil {
		f.members = map[*member]bool{}
	}
	f.seq++
	m := &member{created: created, seq: f.seq}
	f.members[m] = true
	f.notify()
	return m
}

func (f *fifo) leave(m *member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.members, m)
	f.notify()
}

func (f *fifo) pace(m *member, paced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m.paced = paced
	f.notify()
}

// take takes n tokens of the shared limiter for m: at once (waiting as
// long as needed) when m is the oldest running campaign; otherwise only
// tokens that are there now, while every older one is pacing itself, so a
// younger campaign never delays an older one.
func (f *fifo) take(ctx context.Context, m *member, lim *rate.Limiter, n int) error {
	for {
		f.mu.Lock()
		oldest, olderConsuming := true, false
		for o := range f.members {
			if o != m && o.older(m) {
				oldest = false
				olderConsuming = olderConsuming || !o.paced
			}
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		if oldest {
			return waitTokens(ctx, lim, n)
		}
		if !olderConsuming && lim.AllowN(time.Now(), min(n, lim.Burst())) {
			if n -= lim.Burst(); n <= 0 {
				return nil
			}
			continue
		}
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}
