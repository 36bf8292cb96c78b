package retry

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// errNoHandler is the retryable failure of a job whose kind has no handler here.
var errNoHandler = errors.New("retry: no handler registered for this kind")

type lane struct {
	name    string
	cfg     LaneConfig
	limiter *rate.Limiter // nil: no rate cap
	wakeCh  chan struct{}
}

func newLane(name string, lc LaneConfig) *lane {
	l := &lane{name: name, cfg: lc, wakeCh: make(chan struct{}, 1)}
	if lc.Rate > 0 {
		l.limiter = rate.NewLimiter(lc.Rate, lc.Burst)
	}
	return l
}

func (l *lane) wake() {
	select {
	case l.wakeCh <- struct{}{}:
	default:
	}
}

// runner is the working half of a Queue, alive between Start and Stop.
type runner struct {
	q *Queue

	stopCh      chan struct{}      // closed: claim nothing more
	claimCtx    context.Context    // ends at Stop or when Start's ctx ends
	cancelClaim context.CancelFunc //
	workCtx     context.Context    // parent of handler contexts; ends on a hard stop
	cancelWork  context.CancelCauseFunc

	fetchWG sync.WaitGroup
	jobWG   sync.WaitGroup
	bgWG    sync.WaitGroup

	completions chan *completion
	flush       chan struct{} // closed: the completer drains and exits
	gone        chan struct{} // closed when the completer exited
	abandon     chan struct{} // closed: stop retrying failed Finish calls

	mu      sync.Mutex
	running map[int64]*active
}

type active struct {
	job      *Job
	cancel   context.CancelCauseFunc // nil until the handler starts
	released bool                    // handed back at shutdown; its own outcome is dropped
}

type completion struct {
	out Outcome
	ev  Event
}

// Start begins working every lane in Config.Lanes in the background. It
// returns an error if the queue is already started. When ctx ends the
// workers stop claiming and running handlers see their contexts end; call
// Stop in every case to wait for them and release what is left.
func (q *Queue) Start(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.run != nil {
		return errors.New("retry: Queue.Start: already started")
	}
	r := &runner{
		q:           q,
		stopCh:      make(chan struct{}),
		completions: make(chan *completion, 1024),
		flush:       make(chan struct{}),
		gone:        make(chan struct{}),
		abandon:     make(chan struct{}),
		running:     map[int64]*active{},
	}
	r.workCtx, r.cancelWork = context.WithCancelCause(context.WithoutCancel(ctx))
	r.claimCtx, r.cancelClaim = context.WithCancel(ctx)
	q.run = r
	go r.completer()
	for _, l := range q.lanes {
		r.fetchWG.Add(1)
		go r.fetch(l)
	}
	r.bgWG.Add(2)
	go r.heartbeat()
	go r.maintain()
	if n, ok := q.store.(Notifier); ok {
		r.bgWG.Add(1)
		go func() {
			defer r.bgWG.Done()
			err := n.Listen(r.claimCtx, func(lane string) {
				if l := q.lanes[lane]; l != nil {
					l.wake()
				}
			})
			if err != nil && r.claimCtx.Err() == nil {
				q.cfg.Logger.Warn("retry: store notifications stopped; lanes poll", "err", err)
			}
		}()
	}
	return nil
}

// Stop shuts the workers down gracefully: it stops claiming, lets running
// handlers finish until ctx ends, then cancels the rest and hands their
// jobs back (available again, the attempt not counted), and waits for
// every outcome to be durable. It returns ctx's error if it had to cancel
// handlers. A handler that ignores its context keeps running after Stop
// returns, but its outcome is discarded.
func (q *Queue) Stop(ctx context.Context) error {
	q.mu.Lock()
	r := q.run
	q.run = nil
	q.mu.Unlock()
	if r == nil {
		return nil
	}
	close(r.stopCh)
	r.cancelClaim()
	r.fetchWG.Wait()

	var forced error
	done := make(chan struct{})
	go func() { r.jobWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		forced = ctx.Err()
		r.cancelWork(fmt.Errorf("retry: queue stopping: %w", ctx.Err()))
		r.releaseRunning()
		// Give cooperative handlers a moment to return before the flush.
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(r.flush)
	select {
	case <-r.gone:
	case <-ctx.Done():
		close(r.abandon)
		<-r.gone
	}
	r.cancelWork(ErrClosed)
	r.bgWG.Wait()
	return forced
}

// slots bound a lane's work in this process. A lane claims up to twice
// its concurrency, so the next batch is claimed while the current one runs
// and each claim (a store round trip, or an fsync) serves many jobs; its
// Concurrency workers run no more than that many handlers at once.
type slots struct {
	claimed chan struct{} // held from claim until the outcome is handed off
	freed   chan struct{} // signalled when a claimed slot frees
}

func newSlots(concurrency int) *slots {
	return &slots{
		claimed: make(chan struct{}, 2*concurrency),
		freed:   make(chan struct{}, 1),
	}
}

func (s *slots) release() {
	<-s.claimed
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// claimBatchWait is how long a lane waits for more free slots before
// claiming fewer than half its capacity.
const claimBatchWait = 2 * time.Millisecond

func (r *runner) fetch(l *lane) {
	defer r.fetchWG.Done()
	cfg := r.q.cfg
	sl := newSlots(l.cfg.Concurrency)
	// The lane's workers live as long as the fetcher (a goroutine per job
	// would grow a new stack for every delivery); work holds every claimed
	// job, so handing one over never blocks.
	work := make(chan *active, cap(sl.claimed))
	defer close(work)
	for range l.cfg.Concurrency {
		r.jobWG.Add(1)
		go r.worker(l, sl, work)
	}
	timer := time.NewTimer(cfg.PollInterval)
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
		case <-r.claimCtx.Done():
			return false
		}
		return true
	}
	grab := func(n int) int {
		for n < cap(sl.claimed) {
			select {
			case sl.claimed <- struct{}{}:
				n++
			default:
				return n
			}
		}
		return n
	}
	for {
		select {
		case sl.claimed <- struct{}{}:
		case <-r.claimCtx.Done():
			return
		}
		n := grab(1)
		if n < cap(sl.claimed)/2 {
			// Let running jobs finish so one claim serves many.
			deadline := time.Now().Add(claimBatchWait)
			for n < cap(sl.claimed)/2 && time.Now().Before(deadline) {
				if !wait(time.Until(deadline), sl.freed) {
					for range n {
						<-sl.claimed
					}
					return
				}
				n = grab(n)
			}
		}
		if l.limiter != nil {
			// Claim no more than the rate allows now (at least one, which
			// waits for its token), so claimed jobs do not sit leased.
			for want := max(1, min(n, int(l.limiter.Tokens()))); n > want; n-- {
				<-sl.claimed
			}
		}
		now := cfg.Now()
		jobs, err := r.q.store.Claim(r.claimCtx, l.name, n, now, now.Add(cfg.LeaseDuration))
		for range n - len(jobs) {
			<-sl.claimed
		}
		if err != nil {
			if r.claimCtx.Err() != nil {
				return
			}
			cfg.Logger.Warn("retry: claim failed", "lane", l.name, "err", err)
			if !wait(cfg.PollInterval, l.wakeCh) {
				return
			}
			continue
		}
		for _, j := range jobs {
			a := &active{job: j}
			r.mu.Lock()
			r.running[j.ID] = a
			r.mu.Unlock()
			work <- a
		}
		if len(jobs) < n && !wait(cfg.PollInterval, l.wakeCh) {
			return
		}
	}
}

// worker runs the lane's claimed jobs one at a time until the fetcher
// stops; jobs left when claiming has stopped are handed back unrun.
func (r *runner) worker(l *lane, sl *slots, work <-chan *active) {
	defer r.jobWG.Done()
	for a := range work {
		r.run(l, a, sl)
	}
}

func (r *runner) run(l *lane, a *active, sl *slots) {
	j := a.job
	release := func() {
		// Stopping before the job could start: hand it back unrun.
		now := r.q.cfg.Now()
		r.complete(a, Outcome{Lease: Lease{j.ID, j.LeaseToken}, State: StateAvailable, Uncount: true, At: now},
			EventReleased, nil, sl)
	}
	if r.claimCtx.Err() != nil {
		release()
		return
	}
	if l.limiter != nil {
		if err := l.limiter.Wait(r.claimCtx); err != nil {
			release()
			return
		}
	}
	out, ev := r.q.runJob(r.workCtx, j, func(cancel context.CancelCauseFunc) {
		r.mu.Lock()
		a.cancel = cancel
		r.mu.Unlock()
	})
	r.complete(a, out, ev.Type, ev.Err, sl)
}

// complete hands an outcome to the completer and frees the worker slot.
func (r *runner) complete(a *active, out Outcome, typ EventType, err error, sl *slots) {
	r.mu.Lock()
	released := a.released
	r.mu.Unlock()
	if !released {
		c := &completion{out: out, ev: Event{Type: typ, Err: err, At: out.At, RetryAt: retryAt(out)}}
		c.ev.Job = a.job
		select {
		case r.completions <- c:
		case <-r.gone:
		}
	}
	sl.release()
}

func retryAt(o Outcome) time.Time {
	if o.State == StateScheduled {
		return o.RunAt
	}
	return time.Time{}
}

// releaseRunning hands back every job still running at a hard stop.
func (r *runner) releaseRunning() {
	now := r.q.cfg.Now()
	r.mu.Lock()
	var cs []*completion
	for _, a := range r.running {
		if a.released {
			continue
		}
		a.released = true
		j := a.job
		cs = append(cs, &completion{
			out: Outcome{Lease: Lease{j.ID, j.LeaseToken}, State: StateAvailable, Uncount: true, At: now},
			ev:  Event{Type: EventReleased, Job: j, At: now},
		})
	}
	r.mu.Unlock()
	for _, c := range cs {
		r.completions <- c
	}
}

// completer applies outcomes in batches, so many workers share one durable
// write, then reports them.
func (r *runner) completer() {
	defer close(r.gone)
	const maxBatch = 512
	batch := make([]*completion, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case c := <-r.completions:
			batch = append(batch, c)
		case <-r.flush:
			for {
				select {
				case c := <-r.completions:
					batch = append(batch, c)
					if len(batch) == maxBatch {
						r.finish(batch)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				r.finish(batch)
			}
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-r.completions:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		r.finish(batch)
	}
}

func (r *runner) finish(batch []*completion) {
	outs := make([]Outcome, len(batch))
	for i, c := range batch {
		outs[i] = c.out
	}
	cfg := r.q.cfg
	delay := 10 * time.Millisecond
	var errs []error
	for {
		var err error
		errs, err = r.q.store.Finish(context.Background(), outs)
		if err == nil {
			break
		}
		cfg.Logger.Error("retry: recording outcomes failed; retrying", "jobs", len(outs), "err", err)
		select {
		case <-time.After(delay):
			delay = min(2*delay, time.Second)
		case <-r.abandon:
			// The jobs stay running in the store; their leases lapse and
			// they run again.
			r.forget(batch)
			return
		}
	}
	r.forget(batch)
	for i, c := range batch {
		if errs[i] != nil {
			cfg.Logger.Warn("retry: outcome discarded", "job", c.out.ID, "outcome", c.out.State, "err", errs[i])
			continue
		}
		j := c.ev.Job.Clone()
		c.out.Apply(j)
		c.ev.Job = j
		r.q.emit(c.ev)
	}
}

func (r *runner) forget(batch []*completion) {
	r.mu.Lock()
	for _, c := range batch {
		if a := r.running[c.out.ID]; a != nil && a.job.LeaseToken == c.out.Token {
			delete(r.running, c.out.ID)
		}
	}
	r.mu.Unlock()
}

func (r *runner) heartbeat() {
	defer r.bgWG.Done()
	cfg := r.q.cfg
	t := time.NewTicker(cfg.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-r.workCtx.Done():
			return
		}
		r.mu.Lock()
		leases := make([]Lease, 0, len(r.running))
		for id, a := range r.running {
			leases = append(leases, Lease{id, a.job.LeaseToken})
		}
		r.mu.Unlock()
		if len(leases) == 0 {
			continue
		}
		errs, err := r.q.store.ExtendLeases(r.workCtx, leases, cfg.Now().Add(cfg.LeaseDuration))
		if err != nil {
			cfg.Logger.Warn("retry: extending leases failed", "jobs", len(leases), "err", err)
			continue
		}
		r.mu.Lock()
		for i, e := range errs {
			if e == nil {
				continue
			}
			if a := r.running[leases[i].ID]; a != nil && a.job.LeaseToken == leases[i].Token {
				delete(r.running, leases[i].ID)
				if a.cancel != nil {
					a.cancel(ErrLeaseLost)
				}
			}
		}
		r.mu.Unlock()
	}
}

func (r *runner) maintain() {
	defer r.bgWG.Done()
	cfg := r.q.cfg
	t := time.NewTicker(cfg.MaintenanceInterval)
	defer t.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-t.C:
		case <-r.workCtx.Done():
			return
		}
		now := cfg.Now()
		rescued, err := r.q.store.Rescue(r.workCtx, now)
		if err != nil {
			cfg.Logger.Warn("retry: rescuing lapsed leases failed", "err", err)
		}
		for _, j := range rescued {
			r.q.emit(Event{Type: EventRescued, Job: j, At: now})
		}
		if len(rescued) > 0 {
			r.q.wakeAll()
		}
		if now.Sub(lastPrune) >= time.Minute {
			lastPrune = now
			if _, err := r.q.store.Prune(r.workCtx, now.Add(-cfg.CompletedRetention), now.Add(-cfg.KeyRetention)); err != nil {
				cfg.Logger.Warn("retry: pruning failed", "err", err)
			}
		}
	}
}

// runJob runs one claimed job and decides its outcome. onStart receives the
// job context's cancel function before the handler runs.
func (q *Queue) runJob(parent context.Context, j *Job, onStart func(context.CancelCauseFunc)) (Outcome, Event) {
	now := q.cfg.Now()
	lease := Lease{j.ID, j.LeaseToken}
	if !j.ExpiresAt.IsZero() && !now.Before(j.ExpiresAt) {
		return Outcome{Lease: lease, State: StateExpired, Error: "expired before it could run", At: now},
			Event{Type: EventExpired}
	}
	h := q.handler(j.Kind)
	var err error
	if h == nil {
		err = fmt.Errorf("%w: %q", errNoHandler, j.Kind)
	} else {
		ctx, cancel := context.WithCancelCause(parent)
		if onStart != nil {
			onStart(cancel)
		}
		if q.cfg.JobTimeout > 0 {
			var stop context.CancelFunc
			ctx, stop = context.WithTimeout(ctx, q.cfg.JobTimeout)
			defer stop()
		}
		q.emit(Event{Type: EventStarted, Job: j, At: now})
		err = callHandler(ctx, h, j)
		cancel(nil)
	}
	return q.decide(j, err, q.cfg.Now())
}

func callHandler(ctx context.Context, h Handler, j *Job) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h.Handle(ctx, j)
}

// decide turns a handler's result into the job's next state.
func (q *Queue) decide(j *Job, err error, now time.Time) (Outcome, Event) {
	o := Outcome{Lease: Lease{j.ID, j.LeaseToken}, At: now}
	ev := Event{Err: err}
	var snooze *snoozeError
	var skip *skipError
	switch {
	case err == nil:
		o.State, ev.Type = StateCompleted, EventSucceeded
		return o, ev
	case errors.As(err, &skip):
		o.State, o.Error, o.Skip, ev.Type, ev.Err = StateCompleted, skip.Error(), true, EventSkipped, nil
		return o, ev
	case errors.As(err, &snooze):
		o.State, o.RunAt, o.Uncount, ev.Type, ev.Err = StateScheduled, now.Add(snooze.d), true, EventSnoozed, nil
	case IsPermanent(err) || j.Attempt >= j.MaxAttempts:
		o.State, o.Error, ev.Type = StateDead, err.Error(), EventDead
		return o, ev
	default:
		delay := retryHint(err)
		if delay <= 0 {
			delay = q.cfg.Backoff(j.Attempt, err)
		}
		o.State, o.RunAt, o.Error, ev.Type = StateScheduled, now.Add(delay), err.Error(), EventRetried
	}
	if !j.ExpiresAt.IsZero() && !o.RunAt.Before(j.ExpiresAt) {
		// The next run would be too late: expire now rather than deliver late.
		o.State, o.RunAt, ev.Type = StateExpired, time.Time{}, EventExpired
		if o.Error == "" {
			o.Error = "expired before it could run"
		}
	}
	return o, ev
}

// Drain works due jobs in the calling goroutine, one at a time, until no
// lane has a due job, and returns how many it handled (expired jobs
// included). It is meant for tests and tools; it does not need Start.
func (q *Queue) Drain(ctx context.Context) (int, error) {
	n := 0
	for {
		worked := false
		for _, l := range q.lanes {
			now := q.cfg.Now()
			jobs, err := q.store.Claim(ctx, l.name, 1, now, now.Add(q.cfg.LeaseDuration))
			if err != nil {
				return n, err
			}
			for _, j := range jobs {
				out, ev := q.runJob(ctx, j, nil)
				errs, err := q.store.Finish(ctx, []Outcome{out})
				if err != nil {
					return n, err
				}
				n++
				worked = true
				if errs[0] != nil {
					continue
				}
				ev.Job = j.Clone()
				out.Apply(ev.Job)
				ev.At, ev.RetryAt = out.At, retryAt(out)
				q.emit(ev)
			}
		}
		if !worked {
			return n, ctx.Err()
		}
	}
}
