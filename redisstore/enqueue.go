package redisstore

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/retry"
)

// maxCoalesced caps the jobs one coalesced enqueue script carries (a
// larger call goes alone).
const maxCoalesced = 1000

// enqOp is one Enqueue call.
type enqOp struct {
	ctx       context.Context
	jobs      []*retry.Job
	keysSince time.Time
	res       []retry.EnqueueResult
	err       error
	// wake tells a queued call either that another call's script carried
	// it (false: res and err are set) or that it leads the next script
	// (true).
	wake chan bool
}

// coalescer is Redis's group commit. With appendfsync always Redis fsyncs
// once per event-loop turn and answers the turn's writes after it, so
// single enqueues are bounded by how many arrive per fsync and by the
// server's work per call. The coalescer lets at most max scripts fly at
// once; calls that arrive meanwhile queue, and when a script returns, the
// first queued call leads the next script with every call queued behind
// it: one request, one script, one MULTI/EXEC in the AOF for many jobs.
// No call waits for company (a free flight takes whatever is queued, even
// one call), and no goroutine runs but the callers'.
type coalescer struct {
	s      *Store
	max    int
	mu     sync.Mutex
	flying int
	queue  []*enqOp
}

// enqueue returns once o's jobs were written or failed. A queued call
// waits for its script's verdict even after its context ends (the script
// may already carry it); the script itself is canceled only when every
// caller in it has given up, and then, as for any call cut off mid-way,
// the caller gets an error and its jobs may or may not exist: a retry
// with the same idempotency key is safe.
func (c *coalescer) enqueue(o *enqOp) error {
	o.wake = make(chan bool, 1)
	c.mu.Lock()
	lead := c.flying < c.max
	if lead {
		c.flying++
	} else {
		c.queue = append(c.queue, o)
	}
	c.mu.Unlock()
	if lead || <-o.wake {
		c.lead(o)
	}
	return o.err
}

// lead runs one script for o and the calls queued behind it, then hands
// the flight to the next queued call, if any.
func (c *coalescer) lead(o *enqOp) {
	// Let the callers woken by the last script queue up first: they are
	// runnable now, and a script that carries them costs the server far
	// less than one each.
	runtime.Gosched()
	group := []*enqOp{o}
	n := len(o.jobs)
	c.mu.Lock()
	i := 0
	for ; i < len(c.queue) && n+len(c.queue[i].jobs) <= maxCoalesced; i++ {
		group = append(group, c.queue[i])
		n += len(c.queue[i].jobs)
	}
	c.queue = c.queue[i:]
	c.mu.Unlock()
	// The script is abandoned only when no caller in it waits any more:
	// one caller's deadline must not fail the others' jobs.
	gctx, cancel := context.WithCancel(context.WithoutCancel(o.ctx))
	var waiting atomic.Int64
	waiting.Store(int64(len(group)))
	stops := make([]func() bool, len(group))
	for i, g := range group {
		stops[i] = context.AfterFunc(g.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	err := c.s.enqueueNow(gctx, group)
	for _, stop := range stops {
		stop()
	}
	cancel()
	for _, g := range group {
		if err != nil {
			g.err = err // else enqueueNow set each op's own verdict
		}
		if g != o {
			g.wake <- false
		}
	}
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.queue = nil
		c.flying--
		c.mu.Unlock()
		return
	}
	next := c.queue[0]
	c.queue = c.queue[1:]
	c.mu.Unlock()
	next.wake <- true
}

// Enqueue implements retry.Store. Calls that arrive while earlier enqueue
// scripts are in flight are coalesced into one script (Config.
// EnqueueFlights): each call still gets its own results, in order, and
// returns only once Redis has answered — after its fsync, with appendfsync
// always. Idempotency keys are checked job by job inside the script, so
// two calls with one key in one script still enqueue once.
func (s *Store) Enqueue(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	o := &enqOp{ctx: ctx, jobs: jobs, keysSince: keysSince}
	var err error
	if s.enq == nil || len(jobs) >= maxCoalesced {
		err = s.enqueueNow(ctx, []*enqOp{o})
	} else {
		err = s.enq.enqueue(o)
	}
	if err == nil {
		err = o.err // the op's own verdict: a conflict
	}
	if err != nil {
		return nil, err
	}
	return o.res, nil
}
