package capping

import (
	"context"
	"errors"
	"time"
)

// Errors of stores, checked with errors.Is.
var (
	// ErrUnknownReservation: no pending reservation has that ID (never made,
	// already committed or released).
	ErrUnknownReservation = errors.New("capping: unknown reservation")
	// ErrLeaseExpired: the reservation's lease ended before Release, so it
	// counts as sent for good (the safe side for users).
	ErrLeaseExpired = errors.New("capping: reservation lease expired; it counts as sent")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("capping: store closed")
)

// Check is one counter a reservation must fit in: fewer than Limit slots
// of Key at or after Since.
type Check struct {
	Key   string
	Since time.Time
	Limit int
}

// Slot is one counted message in a counter.
type Slot struct {
	At      time.Time
	Pending bool // reserved, not yet committed (it counts all the same)
}

// Store keeps the counters. Every implementation must pass the suite in
// capping/cappingtest. Stores never read the clock. All methods are safe
// for concurrent use.
type Store interface {
	// Reserve atomically checks every check and, only if all pass, adds a
	// pending slot at at to every key, under reservation id, with a lease
	// until leaseUntil. It returns the index of the first check that did
	// not pass, or -1 when the slots were taken. Pending and committed
	// slots count alike. Slots older than a check's Since may be forgotten.
	// Reserving again under the ID of a reservation still pending takes
	// nothing and returns -1: the caller retried, and the slots it holds
	// already count. So does reserving under the ID of a reservation
	// already committed, while its slots count (at least until one lease
	// after its lease): the message was sent, its process died before it
	// could say so, and its retry must not be capped by its own slot.
	Reserve(ctx context.Context, id string, checks []Check, at, leaseUntil time.Time) (int, error)
	// Commit makes reservation id's slots count as sent for good, or
	// returns ErrUnknownReservation.
	Commit(ctx context.Context, id string) error
	// Release removes reservation id's slots if its lease holds at now;
	// after the lease it returns ErrLeaseExpired and the slots stay.
	Release(ctx context.Context, id string, now time.Time) error
	// Add records committed slots directly (reconciliation after an
	// outage). A slot is identified by (key, id): adding it twice counts
	// it once.
	Add(ctx context.Context, id string, keys []string, at time.Time) error
	// Slots returns the slots of key at or after since, oldest first.
	Slots(ctx context.Context, key string, since time.Time) ([]Slot, error)
	// Close releases the store.
	Close() error
}
