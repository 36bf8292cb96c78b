package eligibility

import (
	"context"
	"sync"
)

// MemoryStore is an in-memory Store (tests; lost on exit).
type MemoryStore struct {
	mu     sync.Mutex
	closed bool
	supp   map[string]Suppression
	prefs  map[[2]string]Preference
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{supp: map[string]Suppression{}, prefs: map[[2]string]Preference{}}
}

func (s *MemoryStore) check(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Suppress implements Store.
func (s *MemoryStore) Suppress(ctx context.Context, ss ...Suppression) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	for _, x := range ss {
		s.supp[x.Key] = x
	}
	return nil
}

// Unsuppress implements Store.
func (s *MemoryStore) Unsuppress(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	delete(s.supp, key)
	return nil
}

// Suppressed implements Store.
func (s *MemoryStore) Suppressed(ctx context.Context, key string) (Suppression, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return Suppression{}, false, err
	}
	x, ok := s.supp[key]
	return x, ok, nil
}

// SetPreference implements Store.
func (s *MemoryStore) SetPreference(ctx context.Context, p Preference) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	k := [2]string{p.User, p.Topic}
	if old, ok := s.prefs[k]; ok && old.At.After(p.At) {
		return nil
	}
	s.prefs[k] = p
	return nil
}

// OptedOut implements Store.
func (s *MemoryStore) OptedOut(ctx context.Context, user string, topics []string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return "", false, err
	}
	for _, t := range topics {
		if p, ok := s.prefs[[2]string{user, t}]; ok && p.OptedOut {
			return t, true, nil
		}
	}
	return "", false, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
