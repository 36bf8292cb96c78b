// Package checkpoint keeps the durable state of a fan-out (a campaign's):
// where it stopped in its audience and what it counted, written in the
// same durable write as the jobs it enqueued for that part of the
// audience. A crash resumes exactly where the last checkpoint stopped: no
// recipient skipped, none enqueued twice.
//
// It is the stores' side of package campaign, kept here, below the
// Dispatcher, so a store implements it without importing the layers above
// (the campaign itself is an opaque Spec to a store). Every store that
// holds the queue implements Store.
package checkpoint

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Errors.
var (
	ErrNotFound = errors.New("checkpoint: not found")
	ErrClosed   = errors.New("checkpoint: store closed")
)

// State is where a fan-out is: "running", "paused", "cancelled", "done".
type State string

// Record is one fan-out's state.
type Record struct {
	Key   string
	Spec  []byte // the campaign, encoded by its owner
	State State
	// Cursor is where the fan-out resumes ("" before the first page).
	Cursor string
	// Recipients read, jobs Enqueued (not duplicates), Invalid refused at
	// the door; Done once the audience was read to its end.
	Recipients, Enqueued, Invalid int
	Done                          bool
	Created                       time.Time
	// Staged items were stored in pages (Stage), Drained of them taken
	// into the queue (Drain: enqueued, duplicates or refused at the door),
	// Cancelled dropped with their pages when the fan-out was cancelled;
	// Pages is the Seq of the last page staged.
	Staged, Drained, Cancelled int
	Pages                      int64
}

// Page is a staged part of a fan-out: Count items its owner encoded in
// Data, of which the first Offset are drained into the queue.
type Page struct {
	Seq           int64
	Data          []byte
	Count, Offset int
}

// Cancelled is the state whose SetState drops the staged pages.
const Cancelled State = "cancelled"

// Store keeps fan-out records. All methods are safe for concurrent use.
type Store interface {
	// Create stores r unless its key exists; it returns what is stored
	// and whether it created it.
	Create(ctx context.Context, r Record) (Record, bool, error)
	// Get returns the record, or ErrNotFound.
	Get(ctx context.Context, key string) (Record, error)
	// List returns up to limit records whose keys sort after after, in
	// key order (a page of them: pass the last key to read on).
	List(ctx context.Context, after string, limit int) ([]Record, error)
	// SetState moves the record to state. Moving it to Cancelled drops
	// its staged pages in the same write, adding what they had not
	// drained to Cancelled.
	SetState(ctx context.Context, key string, state State) error
	// Checkpoint returns an Enqueuer whose Enqueue makes its jobs durable
	// and, in the same write, moves the record to cursor, adding
	// recipients, invalid and the jobs it created (not duplicates) to its
	// counts and marking it done when done. An Enqueue with no jobs only
	// moves the record.
	Checkpoint(key, cursor string, recipients, invalid int, done bool) retry.Enqueuer
	// Stage stores data, count items encoded by the owner, as the
	// fan-out's next page (Seq one past the last) and, in the same write,
	// moves the record to cursor, adding recipients, invalid and count to
	// its counts and marking it done when done. A count of 0 stores no
	// page: the record still moves.
	Stage(ctx context.Context, key, cursor string, recipients, invalid int, done bool, data []byte, count int) error
	// Pages returns up to limit staged pages with Seq > after, in order.
	Pages(ctx context.Context, key string, after int64, limit int) ([]Page, error)
	// Claim makes owner the fan-out's runner until until, unless another
	// owner holds it past now; it reports whether owner holds it after the
	// call. The holder renews with the same call; it gives the fan-out up
	// with until = now. ErrNotFound for an unknown key.
	Claim(ctx context.Context, key, owner string, now, until time.Time) (bool, error)
	// Drain returns an Enqueuer whose Enqueue makes its jobs durable and,
	// in the same write, moves page seq to offset (dropping it once
	// offset reaches its Count), adding the jobs created to Enqueued, the
	// offset's advance to Drained and invalid to Invalid. When the page
	// is gone (drained, or the fan-out cancelled) or already past offset
	// it fails with ErrNotFound and stores nothing.
	Drain(key string, seq int64, offset, invalid int) retry.Enqueuer
	Close() error
}

// Created counts the results that made a job (not duplicates).
func Created(res []retry.EnqueueResult) int {
	n := 0
	for _, r := range res {
		if !r.Duplicate {
			n++
		}
	}
	return n
}

// MemoryStore keeps records in memory beside a queue store, for tests:
// its checkpoint enqueues first and moves the record after, so it is
// exactly-once only while the process lives. The embedded store
// (embedded.DB.Checkpoints) does both in one write.
type MemoryStore struct {
	queue retry.Enqueuer

	mu     sync.Mutex
	closed bool
	byKey  map[string]Record
	pages  map[string][]Page // by key, in Seq order
	leases map[string]lease
}

type lease struct {
	owner string
	until time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a store whose checkpoints enqueue through queue
// (the Dispatcher's store: retry.NewMemoryStore in tests).
func NewMemoryStore(queue retry.Enqueuer) *MemoryStore {
	return &MemoryStore{queue: queue, byKey: map[string]Record{}, pages: map[string][]Page{}, leases: map[string]lease{}}
}

// Create implements Store.
func (s *MemoryStore) Create(_ context.Context, r Record) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Record{}, false, ErrClosed
	}
	if old, ok := s.byKey[r.Key]; ok {
		return old, false, nil
	}
	r.Spec = append([]byte(nil), r.Spec...)
	s.byKey[r.Key] = r
	return r, true, nil
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, key string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Record{}, ErrClosed
	}
	r, ok := s.byKey[key]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// List implements Store.
func (s *MemoryStore) List(_ context.Context, after string, limit int) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	keys := make([]string, 0, len(s.byKey))
	for k := range s.byKey {
		if k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]Record, 0, min(limit, len(keys)))
	for _, k := range keys[:min(limit, len(keys))] {
		out = append(out, s.byKey[k])
	}
	return out, nil
}

// SetState implements Store.
func (s *MemoryStore) SetState(_ context.Context, key string, state State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byKey[key]
	if !ok {
		return ErrNotFound
	}
	r.State = state
	if state == Cancelled {
		for _, p := range s.pages[key] {
			r.Cancelled += p.Count - p.Offset
		}
		delete(s.pages, key)
	}
	s.byKey[key] = r
	return nil
}

// Stage implements Store.
func (s *MemoryStore) Stage(_ context.Context, key, cursor string, recipients, invalid int, done bool, data []byte, count int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	r, ok := s.byKey[key]
	if !ok {
		return ErrNotFound
	}
	if count > 0 {
		r.Pages++
		r.Staged += count
		s.pages[key] = append(s.pages[key], Page{Seq: r.Pages, Data: append([]byte(nil), data...), Count: count})
	}
	r.Cursor, r.Done = cursor, r.Done || done
	r.Recipients += recipients
	r.Invalid += invalid
	s.byKey[key] = r
	return nil
}

// Claim implements Store.
func (s *MemoryStore) Claim(_ context.Context, key, owner string, now, until time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	if _, ok := s.byKey[key]; !ok {
		return false, ErrNotFound
	}
	if l := s.leases[key]; l.owner != owner && l.until.After(now) {
		return false, nil
	}
	s.leases[key] = lease{owner: owner, until: until}
	return true, nil
}

// Pages implements Store.
func (s *MemoryStore) Pages(_ context.Context, key string, after int64, limit int) ([]Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []Page
	for _, p := range s.pages[key] {
		if p.Seq > after && len(out) < limit {
			out = append(out, p)
		}
	}
	return out, nil
}

// Drain implements Store. Like Checkpoint, it enqueues first and moves
// the page after.
func (s *MemoryStore) Drain(key string, seq int64, offset, invalid int) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		find := func() (int, error) {
			for i, p := range s.pages[key] {
				if p.Seq == seq && offset > p.Offset && offset <= p.Count {
					return i, nil
				}
			}
			return 0, ErrNotFound
		}
		s.mu.Lock()
		_, err := find()
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		var res []retry.EnqueueResult
		if len(jobs) > 0 {
			if res, err = s.queue.Enqueue(ctx, jobs, since); err != nil {
				return nil, err
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		i, err := find()
		if err != nil {
			return nil, err
		}
		ps := s.pages[key]
		r := s.byKey[key]
		r.Drained += offset - ps[i].Offset
		r.Enqueued += Created(res)
		r.Invalid += invalid
		s.byKey[key] = r
		if ps[i].Offset = offset; offset == ps[i].Count {
			s.pages[key] = append(ps[:i:i], ps[i+1:]...)
		}
		return res, nil
	})
}

// Checkpoint implements Store.
func (s *MemoryStore) Checkpoint(key, cursor string, recipients, invalid int, done bool) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		if _, err := s.Get(ctx, key); err != nil {
			return nil, err
		}
		var res []retry.EnqueueResult
		if len(jobs) > 0 {
			var err error
			if res, err = s.queue.Enqueue(ctx, jobs, since); err != nil {
				return nil, err
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		r, ok := s.byKey[key]
		if !ok {
			return nil, ErrNotFound
		}
		r.Cursor, r.Done = cursor, r.Done || done
		r.Recipients += recipients
		r.Invalid += invalid
		r.Enqueued += Created(res)
		s.byKey[key] = r
		return res, nil
	})
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
