package retry

import (
	"cmp"
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a Store that keeps everything in memory: for host apps'
// unit tests and for work that may be lost with the process. It passes the
// conformance suite except the durability case.
type MemoryStore struct {
	mu      sync.Mutex
	closed  bool
	nextID  int64
	jobs    map[int64]*Job
	keys    map[string]memKey
	lanes   map[string]*memLane
	running map[int64]struct{}
}

var _ Store = (*MemoryStore)(nil)

type memKey struct {
	id     int64
	at     time.Time
	digest string
}

type memLane struct {
	paused bool
	ready  readyHeap
	sched  schedHeap
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		jobs:    map[int64]*Job{},
		keys:    map[string]memKey{},
		lanes:   map[string]*memLane{},
		running: map[int64]struct{}{},
	}
}

func (s *MemoryStore) lane(name string) *memLane {
	l := s.lanes[name]
	if l == nil {
		l = &memLane{}
		s.lanes[name] = l
	}
	return l
}

// push files j (available or scheduled) in its lane's heap.
func (s *MemoryStore) push(j *Job) {
	l := s.lane(j.Lane)
	if j.State == StateScheduled {
		heap.Push(&l.sched, heapItem{id: j.ID, prio: j.Priority, runAt: j.RunAt})
	} else {
		heap.Push(&l.ready, heapItem{id: j.ID, prio: j.Priority, runAt: j.RunAt})
	}
}

func (s *MemoryStore) check(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Enqueue implements Store.
func (s *MemoryStore) Enqueue(ctx context.Context, jobs []*Job, keysSince time.Time) ([]EnqueueResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	res := make([]EnqueueResult, len(jobs))
	seen := map[string]string{}
	for i, in := range jobs {
		if in.IdempotencyKey == "" {
			continue
		}
		if d, ok := seen[in.IdempotencyKey]; ok && Conflicts(d, in.Digest) {
			return nil, &ConflictError{Index: i, Key: in.IdempotencyKey}
		}
		if k, ok := s.keys[in.IdempotencyKey]; ok && !k.at.Before(keysSince) && Conflicts(k.digest, in.Digest) {
			return nil, &ConflictError{Index: i, Key: in.IdempotencyKey, ID: k.id}
		}
		if _, ok := seen[in.IdempotencyKey]; !ok {
			seen[in.IdempotencyKey] = in.Digest
		}
	}
	for i, in := range jobs {
		if in.IdempotencyKey != "" {
			if k, ok := s.keys[in.IdempotencyKey]; ok && !k.at.Before(keysSince) {
				res[i] = EnqueueResult{ID: k.id, Duplicate: true}
				continue
			}
		}
		s.nextID++
		j := in.Clone()
		j.ID = s.nextID
		s.jobs[j.ID] = j
		if j.IdempotencyKey != "" {
			s.keys[j.IdempotencyKey] = memKey{j.ID, j.CreatedAt, j.Digest}
		}
		s.push(j)
		res[i] = EnqueueResult{ID: j.ID}
	}
	return res, nil
}

// Claim implements Store.
func (s *MemoryStore) Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	l := s.lanes[lane]
	if l == nil || l.paused {
		return nil, nil
	}
	for l.sched.Len() > 0 && !l.sched[0].runAt.After(now) {
		it := heap.Pop(&l.sched).(heapItem)
		if j := s.jobs[it.id]; j != nil && j.State == StateScheduled {
			j.State = StateAvailable
			heap.Push(&l.ready, it)
		}
	}
	var out []*Job
	for len(out) < limit && l.ready.Len() > 0 {
		it := heap.Pop(&l.ready).(heapItem)
		j := s.jobs[it.id]
		if j == nil || j.State != StateAvailable {
			continue
		}
		j.State = StateRunning
		j.Attempt++
		j.LeaseToken++
		j.LeaseUntil = leaseUntil
		j.UpdatedAt = now
		s.running[j.ID] = struct{}{}
		out = append(out, j.Clone())
	}
	return out, nil
}

func (s *MemoryStore) held(l Lease) *Job {
	j := s.jobs[l.ID]
	if j == nil || j.State != StateRunning || j.LeaseToken != l.Token {
		return nil
	}
	return j
}

// ExtendLeases implements Store.
func (s *MemoryStore) ExtendLeases(ctx context.Context, leases []Lease, until time.Time) ([]error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	errs := make([]error, len(leases))
	for i, l := range leases {
		if j := s.held(l); j != nil {
			j.LeaseUntil = until
		} else {
			errs[i] = ErrLeaseLost
		}
	}
	return errs, nil
}

// Finish implements Store.
func (s *MemoryStore) Finish(ctx context.Context, outcomes []Outcome) ([]error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	errs := make([]error, len(outcomes))
	for i := range outcomes {
		o := &outcomes[i]
		j := s.held(o.Lease)
		if j == nil {
			errs[i] = ErrLeaseLost
			continue
		}
		delete(s.running, j.ID)
		o.Apply(j)
		if j.State == StateAvailable || j.State == StateScheduled {
			s.push(j)
		}
	}
	return errs, nil
}

// Rescue implements Store.
func (s *MemoryStore) Rescue(ctx context.Context, now time.Time) ([]*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var out []*Job
	for id := range s.running {
		j := s.jobs[id]
		if !j.LeaseUntil.Before(now) {
			continue
		}
		delete(s.running, id)
		o := Outcome{Lease: Lease{j.ID, j.LeaseToken}, State: StateAvailable, Error: "lease expired", At: now}
		if j.Attempt >= j.MaxAttempts {
			o.State = StateDead
		}
		o.Apply(j)
		if j.State == StateAvailable {
			s.push(j)
		}
		out = append(out, j.Clone())
	}
	slices.SortFunc(out, func(a, b *Job) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Get implements Store.
func (s *MemoryStore) Get(ctx context.Context, id int64) (*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	j := s.jobs[id]
	if j == nil {
		return nil, ErrNotFound
	}
	return j.Clone(), nil
}

func (s *MemoryStore) match(f *Filter) []*Job {
	var out []*Job
	for _, j := range s.jobs {
		if f.Match(j) {
			out = append(out, j)
		}
	}
	slices.SortFunc(out, func(a, b *Job) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// List implements Store.
func (s *MemoryStore) List(ctx context.Context, f Filter) ([]*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	js := s.match(&f)
	if f.Limit > 0 && len(js) > f.Limit {
		js = js[:f.Limit]
	}
	out := make([]*Job, len(js))
	for i, j := range js {
		out[i] = j.Clone()
	}
	return out, nil
}

// Requeue implements Store.
func (s *MemoryStore) Requeue(ctx context.Context, f Filter, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, j := range s.match(&f) {
		if j.State != StateDead && j.State != StateExpired {
			continue
		}
		j.State, j.Attempt, j.RunAt, j.UpdatedAt, j.FinishedAt = StateAvailable, 0, now, now, time.Time{}
		s.push(j)
		n++
	}
	return n, nil
}

// Purge implements Store.
func (s *MemoryStore) Purge(ctx context.Context, f Filter) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, j := range s.match(&f) {
		if j.State.Finished() {
			delete(s.jobs, j.ID)
			n++
		}
	}
	return n, nil
}

// SetPaused implements Store.
func (s *MemoryStore) SetPaused(ctx context.Context, lane string, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.lane(lane).paused = paused
	return nil
}

// Stats implements Store.
func (s *MemoryStore) Stats(ctx context.Context, now time.Time) ([]LaneStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	acc := &statsAcc{now: now, byLane: map[string]*LaneStats{}}
	for name, l := range s.lanes {
		if l.paused {
			acc.lane(name).Paused = true
		}
	}
	for _, j := range s.jobs {
		acc.add(j.Lane, j.State, j.RunAt, 1)
	}
	return acc.result(), nil
}

// Prune implements Store.
func (s *MemoryStore) Prune(ctx context.Context, finishedBefore, keysBefore time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	n := 0
	for id, j := range s.jobs {
		if (j.State == StateCompleted || j.State == StateExpired) && j.FinishedAt.Before(finishedBefore) {
			delete(s.jobs, id)
			n++
		}
	}
	for k, e := range s.keys {
		if e.at.Before(keysBefore) {
			delete(s.keys, k)
		}
	}
	return n, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

type heapItem struct {
	id    int64
	prio  int
	runAt time.Time
}

// readyHeap orders due jobs: priority descending, then run-at, then ID.
type readyHeap []heapItem

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	a, b := &h[i], &h[j]
	if a.prio != b.prio {
		return a.prio > b.prio
	}
	if !a.runAt.Equal(b.runAt) {
		return a.runAt.Before(b.runAt)
	}
	return a.id < b.id
}
func (h readyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *readyHeap) Push(x any)   { *h = append(*h, x.(heapItem)) }
func (h *readyHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// schedHeap orders scheduled jobs by run-at.
type schedHeap []heapItem

func (h schedHeap) Len() int           { return len(h) }
func (h schedHeap) Less(i, j int) bool { return h[i].runAt.Before(h[j].runAt) }
func (h schedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *schedHeap) Push(x any)        { *h = append(*h, x.(heapItem)) }
func (h *schedHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// statsAcc builds LaneStats from (lane, state, run-at, count) rows; the
// stores share it so they count alike.
type statsAcc struct {
	now    time.Time
	byLane map[string]*LaneStats
}

func (a *statsAcc) lane(name string) *LaneStats {
	ls := a.byLane[name]
	if ls == nil {
		ls = &LaneStats{Lane: name}
		a.byLane[name] = ls
	}
	return ls
}

func (a *statsAcc) add(lane string, st State, runAt time.Time, n int) {
	ls := a.lane(lane)
	switch st {
	case StateAvailable, StateScheduled:
		if st == StateScheduled && runAt.After(a.now) {
			ls.Scheduled += n
			return
		}
		ls.Ready += n
		if age := a.now.Sub(runAt); age > ls.OldestReady {
			ls.OldestReady = age
		}
	case StateRunning:
		ls.Running += n
	case StateCompleted:
		ls.Completed += n
	case StateDead:
		ls.Dead += n
	case StateExpired:
		ls.Expired += n
	}
}

func (a *statsAcc) result() []LaneStats {
	out := make([]LaneStats, 0, len(a.byLane))
	for _, ls := range a.byLane {
		out = append(out, *ls)
	}
	slices.SortFunc(out, func(x, y LaneStats) int {
		switch {
		case x.Lane < y.Lane:
			return -1
		case x.Lane > y.Lane:
			return 1
		}
		return 0
	})
	return out
}

// JobIDByKey implements KeyFinder.
func (s *MemoryStore) JobIDByKey(ctx context.Context, key string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	k, ok := s.keys[key]
	if !ok {
		return 0, ErrNotFound
	}
	return k.id, nil
}
