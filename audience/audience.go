// Package audience keeps stored ("custom") audiences: lists of members a
// host uploads in batches, each batch idempotent by its upload ID (a
// retried upload after a timeout adds nothing twice), members added and
// removed, listed in pages for a campaign to target (campaign.Stored).
// Every store that holds the queue keeps them; every implementation
// passes audiencetest.
package audience

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
)

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("audience: store closed")

// Member is one member of an audience: who and where.
type Member struct {
	User     string            `json:"user"`
	TimeZone string            `json:"tz,omitempty"`
	Token    string            `json:"token,omitempty"`
	Email    string            `json:"email,omitempty"`
	Phone    string            `json:"phone,omitempty"`
	Vars     map[string]string `json:"vars,omitempty"`
}

// Store keeps audiences. All methods are safe for concurrent use.
type Store interface {
	// Upload adds (or replaces, by User) members of audience under
	// uploadID, atomically. An uploadID already applied to audience
	// changes nothing and reports duplicate.
	Upload(ctx context.Context, audience, uploadID string, members []Member) (duplicate bool, err error)
	// Remove takes users out of audience.
	Remove(ctx context.Context, audience string, users []string) error
	// Page returns up to limit members of audience whose User sorts after
	// after, in User order.
	Page(ctx context.Context, audience, after string, limit int) ([]Member, error)
	// Size counts audience's members.
	Size(ctx context.Context, audience string) (int, error)
	Close() error
}

// MemoryStore is an in-memory Store (tests).
type MemoryStore struct {
	mu      sync.Mutex
	closed  bool
	members map[string]map[string]Member // audience -> user -> member
	uploads map[[2]string]bool
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{members: map[string]map[string]Member{}, uploads: map[[2]string]bool{}}
}

// Upload implements Store.
func (s *MemoryStore) Upload(_ context.Context, aud, id string, ms []Member) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	if s.uploads[[2]string{aud, id}] {
		return true, nil
	}
	s.uploads[[2]string{aud, id}] = true
	if s.members[aud] == nil {
		s.members[aud] = map[string]Member{}
	}
	for _, m := range ms {
		s.members[aud][m.User] = m
	}
	return false, nil
}

// Remove implements Store.
func (s *MemoryStore) Remove(_ context.Context, aud string, users []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, u := range users {
		delete(s.members[aud], u)
	}
	return nil
}

// Page implements Store.
func (s *MemoryStore) Page(_ context.Context, aud, after string, limit int) ([]Member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	users := make([]string, 0, len(s.members[aud]))
	for u := range s.members[aud] {
		if u > after {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	users = users[:min(limit, len(users))]
	out := make([]Member, len(users))
	for i, u := range users {
		out[i] = s.members[aud][u]
	}
	return slices.Clip(out), nil
}

// Size implements Store.
func (s *MemoryStore) Size(_ context.Context, aud string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	return len(s.members[aud]), nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
