package inbox

import (
	"context"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Cursor encodes a feed position: the last item's creation and ID.
func Cursor(created time.Time, id string) string {
	return strconv.FormatInt(created.UnixNano(), 36) + "." + hex.EncodeToString([]byte(id))
}

// ParseCursor decodes a Cursor.
func ParseCursor(c string) (time.Time, string, error) {
	ns, idHex, ok := strings.Cut(c, ".")
	n, err := strconv.ParseInt(ns, 36, 64)
	id, herr := hex.DecodeString(idHex)
	if !ok || err != nil || herr != nil {
		return time.Time{}, "", ErrBadCursor
	}
	return time.Unix(0, n).UTC(), string(id), nil
}

// Newer reports whether a sorts before b in a feed: newer first, then ID
// descending.
func Newer(a, b *Item) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.ID > b.ID
}

// MemoryStore is an in-memory Store (tests).
type MemoryStore struct {
	mu     sync.Mutex
	closed bool
	items  map[string]map[string]*Item // user -> id -> item
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{items: map[string]map[string]*Item{}} }

// Enqueuer implements Store: the jobs first, then the items (the memory
// store is lost on exit anyway).
func (s *MemoryStore) Enqueuer(queue retry.Enqueuer, items []Item) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		if len(jobs) > 0 {
			var err error
			if res, err = queue.Enqueue(ctx, jobs, since); err != nil {
				return nil, err
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return nil, ErrClosed
		}
		for i := range items {
			it := items[i]
			if s.items[it.User] == nil {
				s.items[it.User] = map[string]*Item{}
			}
			if _, ok := s.items[it.User][it.ID]; !ok {
				s.items[it.User][it.ID] = &it
			}
		}
		return res, nil
	})
}

func live(it *Item, now time.Time) bool { return it.Expires.IsZero() || now.Before(it.Expires) }

// Feed implements Store.
func (s *MemoryStore) Feed(_ context.Context, user string, q Query) ([]Item, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, "", ErrClosed
	}
	var after *Item
	if q.After != "" {
		c, id, err := ParseCursor(q.After)
		if err != nil {
			return nil, "", err
		}
		after = &Item{Created: c, ID: id}
	}
	var all []*Item
	for _, it := range s.items[user] {
		if live(it, q.Now) && (it.ArchivedAt.IsZero() != q.Archived) && (after == nil || Newer(after, it)) {
			all = append(all, it)
		}
	}
	slices.SortFunc(all, func(a, b *Item) int {
		if Newer(a, b) {
			return -1
		}
		return 1
	})
	n := q.PageSize()
	next := ""
	if len(all) > n {
		all = all[:n]
		next = Cursor(all[n-1].Created, all[n-1].ID)
	}
	out := make([]Item, len(all))
	for i, it := range all {
		out[i] = *it
	}
	return out, next, nil
}

// Counts implements Store.
func (s *MemoryStore) Counts(_ context.Context, user string, now time.Time) (Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Counts{}, ErrClosed
	}
	var c Counts
	for _, it := range s.items[user] {
		if !live(it, now) || !it.ArchivedAt.IsZero() {
			continue
		}
		if it.ReadAt.IsZero() {
			c.Unread++
		}
		if it.SeenAt.IsZero() {
			c.Unseen++
		}
	}
	return c, nil
}

// Mark implements Store.
func (s *MemoryStore) Mark(_ context.Context, user string, ids []string, m Mark, at time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	n := 0
	for _, id := range ids {
		it := s.items[user][id]
		if it == nil {
			continue
		}
		r, sn, a := it.ReadAt, it.SeenAt, it.ArchivedAt
		apply(it, m, at)
		if !r.Equal(it.ReadAt) || !sn.Equal(it.SeenAt) || !a.Equal(it.ArchivedAt) {
			n++
		}
	}
	return n, nil
}

// apply sets mark on it: the first time wins for read, seen and archived.
func apply(it *Item, m Mark, at time.Time) {
	switch m {
	case Read:
		if it.ReadAt.IsZero() {
			it.ReadAt = at
		}
		if it.SeenAt.IsZero() {
			it.SeenAt = at
		}
	case Seen:
		if it.SeenAt.IsZero() {
			it.SeenAt = at
		}
	case Archived:
		if it.ArchivedAt.IsZero() {
			it.ArchivedAt = at
		}
	case Unread:
		it.ReadAt = time.Time{}
	case Unarchived:
		it.ArchivedAt = time.Time{}
	}
}

// Prune implements Store.
func (s *MemoryStore) Prune(_ context.Context, now, createdBefore time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, byID := range s.items {
		for id, it := range byID {
			if !live(it, now) || it.Created.Before(createdBefore) {
				delete(byID, id)
				n++
			}
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
