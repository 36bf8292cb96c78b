package capping

import (
	"cmp"
	"context"
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"time"
)

// MemoryStore keeps counters in memory. It is sharded by user: the
// counters of a user ("rule|user|...") and the reservations the Limiter
// makes for that user ("…|user") live in one shard, so a reservation
// usually takes one lock, and different users proceed in parallel.
//
// A counter is a slice of (time, token) pairs, oldest first; a check drops
// the pairs before its window, so it touches only the live end. A pending
// slot carries its reservation's token, a committed one zero. Counters
// without slots and reservations long past their lease are swept as the
// store is used, so idle users cost nothing.
type MemoryStore struct {
	seed   maphash.Seed
	shards [64]memShard
	closed sync.Once
	done   chan struct{}
}

var _ Store = (*MemoryStore)(nil)

// sweepEvery is how many reservations a shard takes between two sweeps.
const sweepEvery = 1 << 14

type memShard struct {
	mu       sync.Mutex
	idx      int // in MemoryStore.shards
	counters map[string]*counter
	res      map[string]memRes
	// committed remembers message reservations (IDs of ReserveFor) after
	// Commit, until one lease past their lease: a retry of a message that
	// was sent, after a crash before its job was completed, is "already
	// counted", not capped by its own slot.
	committed map[string]int64
	seq       uint64 // token sequence
	ops       int    // reservations since the last sweep
	_         [64]byte
}

type counter struct {
	// all[head:] are the slots, sorted by at. Dropping old slots moves
	// head; an insert that finds all full moves the slots back to the
	// front before growing it, so a counter's memory stays put.
	all  []memSlot
	head int
	// window is the longest span between a slot and a check's start seen
	// on this counter: slots older than that matter to no check.
	window int64
	added  []memAdded // Add's IDs, for counting each once
}

type memSlot struct {
	at  int64
	tok uint64 // the pending reservation's token; 0 once committed
}

type memAdded struct {
	id string
	at int64
}

// memRes is a pending reservation.
type memRes struct {
	tok        uint64
	at         int64
	leaseUntil int64
	mask       uint64 // the shards of its counters and its own
	cs         [4]*counter
	more       []*counter
}

func (r *memRes) counters(yield func(*counter) bool) {
	for _, c := range r.cs {
		if c == nil || !yield(c) {
			return
		}
	}
	for _, c := range r.more {
		if !yield(c) {
			return
		}
	}
}

// memCheck is a Check whose key is either a string (from the Store
// interface) or bytes the Limiter built in a scratch buffer (its fast
// path: no key is allocated unless a counter is created).
type memCheck struct {
	skey  string
	bkey  []byte
	shard int // of the key's owner
	since int64
	limit int
	// keep is how long a slot may matter to this key's checks, for the
	// sweep: the rule's window when the Limiter knows it.
	keep int64
}

// keepUnknown is how long the sweep keeps slots of counters reserved
// through the Store interface, which says where a window starts but not
// how far back it may reach later (a calendar week: up to 7 days and an
// hour of daylight saving).
const keepUnknown = int64(8 * 24 * time.Hour)

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	s := &MemoryStore{seed: maphash.MakeSeed(), done: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].idx = i
		s.shards[i].counters = map[string]*counter{}
		s.shards[i].res = map[string]memRes{}
	}
	return s
}

// ownerOf returns the user part of a counter key "rule|user|..." or of a
// reservation ID "…|user", or the whole string.
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

// userShard returns the shard of a user's counters and reservations.
func (s *MemoryStore) userShard(user string) int {
	if i := strings.IndexByte(user, '|'); i >= 0 {
		user = user[:i] // as ownerOf sees it in a key
	}
	return int(maphash.String(s.seed, user) % uint64(len(s.shards)))
}

func (s *MemoryStore) shardOf(key string) int {
	return int(maphash.String(s.seed, ownerOf(key)) % uint64(len(s.shards)))
}

func (s *MemoryStore) lock(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Lock()
	}
}

func (s *MemoryStore) unlock(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Unlock()
	}
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
	var buf [4]memCheck
	mc := buf[:0]
	a := at.UnixNano()
	for _, c := range checks {
		since := c.Since.UnixNano()
		mc = append(mc, memCheck{skey: c.Key, shard: s.shardOf(c.Key), since: since, limit: c.Limit, keep: max(a-since, keepUnknown)})
	}
	return s.reserve(ctx, id, s.shardOf(id), mc, a, leaseUntil.UnixNano())
}

// reserve takes a slot in every check's counter or none; the reservation
// lives in shard home.
func (s *MemoryStore) reserve(ctx context.Context, id string, homeShard int, checks []memCheck, at, leaseUntil int64) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if len(checks) == 0 {
		return -1, nil
	}
	home := &s.shards[homeShard]
	mask := uint64(1) << homeShard
	for i := range checks {
		mask |= 1 << checks[i].shard
	}
	s.lock(mask)
	defer s.unlock(mask)
	if _, dup := home.res[id]; dup {
		// The same ID twice would make the first unreachable; refuse
		// nothing, count nothing twice: the caller retried a call that
		// had succeeded.
		return -1, nil
	}
	if until, done := home.committed[id]; done && at < until {
		return -1, nil // committed already: the message counts once
	}
	var cbuf [4]*counter
	cs := cbuf[:0]
	for i := range checks {
		c := s.counter(&checks[i])
		cs = append(cs, c)
		c.drop(checks[i].since)
		c.window = max(c.window, checks[i].keep)
		if len(c.all)-c.head >= checks[i].limit {
			return i, nil
		}
	}
	home.seq++
	// Tokens are unique in the store and never 0: (sequence, shard) + 1.
	r := memRes{tok: (home.seq<<6 | uint64(homeShard)) + 1, at: at, leaseUntil: leaseUntil, mask: mask}
	for i, c := range cs {
		c.insert(memSlot{at: at, tok: r.tok})
		if i < len(r.cs) {
			r.cs[i] = c
		} else {
			r.more = append(r.more, c)
		}
	}
	home.res[id] = r
	if home.ops++; home.ops >= max(sweepEvery, len(home.counters)) {
		s.sweep(home, at)
	}
	return -1, nil
}

// counter returns the counter of a check's key, made if missing, in a
// shard the caller holds.
func (s *MemoryStore) counter(mc *memCheck) *counter {
	sh := &s.shards[mc.shard]
	var c *counter
	if mc.bkey != nil {
		c = sh.counters[string(mc.bkey)] // no allocation for the lookup
	} else {
		c = sh.counters[mc.skey]
	}
	if c == nil {
		c = &counter{}
		// A copy either way, so the check's memory stays the caller's
		// (the Limiter's key buffer lives on its stack).
		key := strings.Clone(mc.skey)
		if mc.bkey != nil {
			key = string(mc.bkey)
		}
		sh.counters[key] = c
	}
	return c
}

// drop forgets the slots before since.
func (c *counter) drop(since int64) {
	n := c.head
	for n < len(c.all) && c.all[n].at < since {
		n++
	}
	if n == c.head {
		return
	}
	if n == len(c.all) {
		c.all, c.head = c.all[:0], 0
	} else {
		c.head = n
	}
	if len(c.added) > 0 {
		c.added = slices.DeleteFunc(c.added, func(a memAdded) bool { return a.at < since })
	}
}

func (c *counter) insert(sl memSlot) {
	if len(c.all) == cap(c.all) && c.head > 0 {
		n := copy(c.all, c.all[c.head:])
		c.all, c.head = c.all[:n], 0
	}
	n := len(c.all)
	if n == c.head || c.all[n-1].at <= sl.at {
		c.all = append(c.all, sl)
		return
	}
	i, _ := slices.BinarySearchFunc(c.all[c.head:], sl.at+1, func(x memSlot, at int64) int {
		return cmp.Compare(x.at, at)
	})
	c.all = slices.Insert(c.all, c.head+i, sl)
}

// find returns the index of the slot of token tok at at, or -1.
func (c *counter) find(tok uint64, at int64) int {
	for i := len(c.all) - 1; i >= c.head && c.all[i].at >= at; i-- {
		if c.all[i].tok == tok {
			return i
		}
	}
	return -1
}

// settle removes reservation id and commits its slots, or, with release
// and its lease holding at now, removes them.
func (s *MemoryStore) settle(ctx context.Context, id string, release bool, now int64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	home := &s.shards[s.shardOf(id)]
	home.mu.Lock()
	r, ok := home.res[id]
	if !ok {
		home.mu.Unlock()
		return ErrUnknownReservation
	}
	self := uint64(1) << home.idx
	if r.mask != self {
		// Counters in other shards: take every lock in order and look again.
		home.mu.Unlock()
		s.lock(r.mask)
		defer s.unlock(r.mask)
		if r, ok = home.res[id]; !ok {
			return ErrUnknownReservation
		}
	} else {
		defer home.mu.Unlock()
	}
	delete(home.res, id)
	if !release && strings.HasPrefix(id, messagePrefix) {
		if home.committed == nil {
			home.committed = map[string]int64{}
		}
		home.committed[id] = r.leaseUntil + (r.leaseUntil - r.at)
	}
	expired := release && now >= r.leaseUntil
	for c := range r.counters {
		i := c.find(r.tok, r.at)
		switch {
		case i < 0: // dropped from the window already
		case release && !expired:
			c.all = slices.Delete(c.all, i, i+1)
		default:
			c.all[i].tok = 0
		}
	}
	if expired {
		return ErrLeaseExpired
	}
	return nil
}

// Commit implements Store.
func (s *MemoryStore) Commit(ctx context.Context, id string) error {
	return s.settle(ctx, id, false, 0)
}

// Release implements Store.
func (s *MemoryStore) Release(ctx context.Context, id string, now time.Time) error {
	return s.settle(ctx, id, true, now.UnixNano())
}

// sweep forgets, in a shard the caller holds, the slots no check can see
// any more, the counters left empty, and the reservations whose lease
// ended more than a lease ago (their slots count as sent).
func (s *MemoryStore) sweep(sh *memShard, now int64) {
	sh.ops = 0
	for id, until := range sh.committed {
		if now >= until {
			delete(sh.committed, id)
		}
	}
	for id, r := range sh.res {
		if now-r.leaseUntil > r.leaseUntil-r.at && r.mask == uint64(1)<<sh.idx {
			for c := range r.counters {
				if i := c.find(r.tok, r.at); i >= 0 {
					c.all[i].tok = 0
				}
			}
			delete(sh.res, id)
		}
	}
	for k, c := range sh.counters {
		c.drop(now - c.window)
		if len(c.all) == c.head && len(c.added) == 0 {
			delete(sh.counters, k) // no reservation holds it: it has no pending slot
		}
	}
}

// Add implements Store.
func (s *MemoryStore) Add(ctx context.Context, id string, keys []string, at time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	a := at.UnixNano()
	for _, k := range keys {
		sh := &s.shards[s.shardOf(k)]
		sh.mu.Lock()
		c := s.counter(&memCheck{skey: k, shard: s.shardOf(k)})
		c.window = max(c.window, keepUnknown)
		if !slices.Contains(c.added, memAdded{id: id, at: a}) {
			c.added = append(c.added, memAdded{id: id, at: a})
			c.insert(memSlot{at: a})
		}
		sh.mu.Unlock()
	}
	return nil
}

// Slots implements Store.
func (s *MemoryStore) Slots(ctx context.Context, key string, since time.Time) ([]Slot, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	sh := &s.shards[s.shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.counters[key]
	if c == nil {
		return nil, nil
	}
	var out []Slot
	a := since.UnixNano()
	for _, sl := range c.all[c.head:] {
		if sl.at >= a {
			out = append(out, Slot{At: time.Unix(0, sl.at).UTC(), Pending: sl.tok != 0})
		}
	}
	return out, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.closed.Do(func() { close(s.done) })
	return nil
}
