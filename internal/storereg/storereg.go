// Package storereg remembers, for the conformance suites' Reopen hooks,
// where each store under test lives (a file path, a schema, a key prefix),
// safely for the suites' parallel subtests.
package storereg

import "sync"

// Registry maps stores to where they live.
type Registry[S comparable] struct {
	mu sync.Mutex
	m  map[S]string
}

// New returns an empty registry.
func New[S comparable]() *Registry[S] { return &Registry[S]{m: map[S]string{}} }

// Put records that s lives at where, and returns s.
func (r *Registry[S]) Put(s S, where string) S {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[s] = where
	return s
}

// Get returns where s lives.
func (r *Registry[S]) Get(s S) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[s]
}
