package capping

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"
)

// MemoryStore keeps counters in memory, sharded by the user in each key
// ("rule|user|...") so reservations for different users proceed in
// parallel; a reservation locks the shards of all its keys (usually one).
type MemoryStore struct {
	seed   maphash.Seed
	shards [64]memShard
	res    [64]resShard
	closed sync.Once
	done   chan struct{}
}

var _ Store = (*MemoryStore)(nil)

type memShard struct {
	mu       sync.Mutex
	counters map[string]*counter
}

type resShard struct {
	mu  sync.Mutex
	res map[string]*memRes
}

type counter struct {
	slots []memSlot // sorted by at
}

type memSlot struct {
	at      int64
	id      string
	pending bool
}

type memRes struct {
	keys       []string
	shards     []int // the shards of keys, sorted, distinct
	at         int64
	leaseUntil int64
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	s := &MemoryStore{seed: maphash.MakeSeed(), done: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].counters = map[string]*counter{}
		s.res[i].res = map[string]*memRes{}
	}
	return s
}

func (s *MemoryStore) shardIndex(key string) int {
	return int(maphash.String(s.seed, ownerOf(key)) % uint64(len(s.shards)))
}

// ownerOf returns the user part of a counter key "rule|user|...", or the
// whole key.
func ownerOf(key string) string {
	i := strings.IndexByte(key, '|')
	if i < 0 {
		return key
	}
	rest := key[i+1:]
	if j := strings.IndexByte(rest, '|'); j >= 0 {
		return rest[:j]
	}
	return rest
}

func (s *MemoryStore) resOf(id string) *resShard {
	return &s.res[maphash.String(s.seed, id)%uint64(len(s.res))]
}

// shardsOf returns the distinct shards of keys, sorted (the lock order).
func (s *MemoryStore) shardsOf(dst []int, keys func(yield func(string) bool)) []int {
	for k := range keys {
		i := s.shardIndex(k)
		if !slices.Contains(dst, i) {
			dst = append(dst, i)
		}
	}
	slices.Sort(dst)
	return dst
}

func (s *MemoryStore) lock(set []int) {
	for _, i := range set {
		s.shards[i].mu.Lock()
	}
}

func (s *MemoryStore) unlock(set []int) {
	for _, i := range set {
		s.shards[i].mu.Unlock()
	}
}

// lockKeys locks the shards of keys in index order and returns the unlock.
func (s *MemoryStore) lockKeys(keys func(yield func(string) bool)) func() {
	var idx [4]int
	set := s.shardsOf(idx[:0], keys)
	s.lock(set)
	return func() { s.unlock(set) }
}

func (s *MemoryStore) counter(key string, create bool) *counter {
	sh := &s.shards[s.shardIndex(key)]
	c := sh.counters[key]
	if c == nil && create {
		c = &counter{}
		sh.counters[key] = c
	}
	return c
}

func (s *MemoryStore) check(ctx context.Context) error {
	select {
	case <-s.done:
		return ErrClosed
	default:
		return ctx.Err()
	}
}

// Reserve implements Store.
func (s *MemoryStore) Reserve(ctx context.Context, id string, checks []Check, at, leaseUntil time.Time) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if len(checks) == 0 {
		return -1, nil
	}
	set := s.shardsOf(make([]int, 0, 2), func(yield func(string) bool) {
		for i := range checks {
			if !yield(checks[i].Key) {
				return
			}
		}
	})
	s.lock(set)
	a := at.UnixNano()
	var cbuf [8]*counter
	cs := cbuf[:0]
	for i := range checks {
		c := s.counter(checks[i].Key, true)
		cs = append(cs, c)
		lo := lowerBound(c.slots, checks[i].Since.UnixNano())
		if lo > 0 && lo >= len(c.slots)/4 {
			c.slots = append(c.slots[:0], c.slots[lo:]...) // forget what no window sees
			lo = 0
		}
		if len(c.slots)-lo >= checks[i].Limit {
			s.unlock(set)
			return i, nil
		}
	}
	keys := make([]string, len(checks))
	for i := range checks {
		keys[i] = checks[i].Key
		cs[i].insert(memSlot{at: a, id: id, pending: true})
	}
	s.unlock(set)
	rs := s.resOf(id)
	rs.mu.Lock()
	rs.res[id] = &memRes{keys: keys, shards: set, at: a, leaseUntil: leaseUntil.UnixNano()}
	rs.mu.Unlock()
	return -1, nil
}

func lowerBound(slots []memSlot, at int64) int {
	lo, hi := 0, len(slots)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if slots[m].at < at {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (c *counter) insert(sl memSlot) {
	n := len(c.slots)
	if n == 0 || c.slots[n-1].at <= sl.at {
		c.slots = append(c.slots, sl)
		return
	}
	i := lowerBound(c.slots, sl.at+1)
	c.slots = slices.Insert(c.slots, i, sl)
}

func (c *counter) find(id string, at int64) int {
	for i := lowerBound(c.slots, at); i < len(c.slots) && c.slots[i].at == at; i++ {
		if c.slots[i].id == id {
			return i
		}
	}
	return -1
}

// take removes reservation id from its shard.
func (s *MemoryStore) take(id string, now int64, mustHoldLease bool) (*memRes, error) {
	rs := s.resOf(id)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.res[id]
	if r == nil {
		return nil, ErrUnknownReservation
	}
	delete(rs.res, id)
	if mustHoldLease && now >= r.leaseUntil {
		return r, ErrLeaseExpired
	}
	return r, nil
}

// commit marks r's slots committed.
func (s *MemoryStore) commit(id string, r *memRes) {
	s.lock(r.shards)
	defer s.unlock(r.shards)
	for _, k := range r.keys {
		if c := s.counter(k, false); c != nil {
			if i := c.find(id, r.at); i >= 0 {
				c.slots[i].pending = false
			}
		}
	}
}

// Commit implements Store.
func (s *MemoryStore) Commit(ctx context.Context, id string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	r, err := s.take(id, 0, false)
	if err != nil {
		return err
	}
	s.commit(id, r)
	return nil
}

// Release implements Store.
func (s *MemoryStore) Release(ctx context.Context, id string, now time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	r, err := s.take(id, now.UnixNano(), true)
	if errors.Is(err, ErrLeaseExpired) {
		s.commit(id, r) // counts as sent
		return err
	}
	if err != nil {
		return err
	}
	s.lock(r.shards)
	defer s.unlock(r.shards)
	for _, k := range r.keys {
		if c := s.counter(k, false); c != nil {
			if i := c.find(id, r.at); i >= 0 {
				c.slots = slices.Delete(c.slots, i, i+1)
			}
		}
	}
	return nil
}

// Add implements Store.
func (s *MemoryStore) Add(ctx context.Context, id string, keys []string, at time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	a := at.UnixNano()
	for _, k := range keys {
		unlock := s.lockKeys(func(yield func(string) bool) { yield(k) })
		c := s.counter(k, true)
		if c.find(id, a) < 0 {
			c.insert(memSlot{at: a, id: id})
		}
		unlock()
	}
	return nil
}

// Slots implements Store.
func (s *MemoryStore) Slots(ctx context.Context, key string, since time.Time) ([]Slot, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	unlock := s.lockKeys(func(yield func(string) bool) { yield(key) })
	defer unlock()
	c := s.counter(key, false)
	if c == nil {
		return nil, nil
	}
	var out []Slot
	for _, sl := range c.slots[lowerBound(c.slots, since.UnixNano()):] {
		out = append(out, Slot{At: time.Unix(0, sl.at).UTC(), Pending: sl.pending})
	}
	return out, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.closed.Do(func() { close(s.done) })
	return nil
}
