package tracking

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("tracking: store closed")

// Record is an event with its position in the journal.
type Record struct {
	Seq   int64
	Event Event
}

// Query selects events for Stats.
type Query struct {
	Campaign   string
	Automation string
	From, To   time.Time // [From, To)
}

// Store is the outbox's durable journal. All methods are safe for
// concurrent use and never read the clock.
type Store interface {
	// Append makes events durable in order, skipping any whose ID is
	// already in the journal; it returns how many it added.
	Append(ctx context.Context, events []Event) (int, error)
	// Read returns up to limit records after seq, in order.
	Read(ctx context.Context, after int64, limit int) ([]Record, error)
	// Head returns the last sequence number (0 when empty).
	Head(ctx context.Context) (int64, error)
	// Cursor and SetCursor keep each sink's position.
	Cursor(ctx context.Context, sink string) (int64, error)
	SetCursor(ctx context.Context, sink string, seq int64) error
	// AddGap records a window with missing data; Gaps lists those
	// overlapping [from, to).
	AddGap(ctx context.Context, g Gap) error
	Gaps(ctx context.Context, from, to time.Time) ([]Gap, error)
	// Counts counts distinct messages per type among events matching q.
	Counts(ctx context.Context, q Query) (map[Type]int, error)
	// Has reports which of the (message ID, type) pairs are in the journal.
	Has(ctx context.Context, messageID string, t Type) (bool, error)
	Close() error
}

// MemoryStore is an in-memory Store (tests; events are lost on exit).
type MemoryStore struct {
	mu      sync.Mutex
	closed  bool
	events  []Record
	ids     map[string]bool
	pairs   map[string]bool
	cursors map[string]int64
	gaps    []Gap
	// FailAppend, when set, makes Append fail (to simulate a store outage).
	failAppend error
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{ids: map[string]bool{}, pairs: map[string]bool{}, cursors: map[string]int64{}}
}

// SetFailure makes Append (and AddGap) fail with err until called with nil.
func (s *MemoryStore) SetFailure(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAppend = err
}

func (s *MemoryStore) check(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// RecordAppender is a Store whose appends say where each added event
// went in the journal. An Outbox on such a store hands the events it has
// just made durable to its sinks from memory, and reads the journal back
// only for what memory does not hold: a sink that fell behind, events
// appended elsewhere (TrackDurable, another process), a restart.
type RecordAppender interface {
	// AppendRecords is Append returning the records of the added events
	// that Read would return exactly as given, in journal order. Others
	// (duplicates by ID, events the journal's encoding changes) are left
	// out; an outbox reads those back.
	AppendRecords(ctx context.Context, events []Event) ([]Record, error)
}

// Append implements Store. (The memory store is not a RecordAppender:
// a test double that embeds it to change Append must keep changing what
// an outbox calls.)
func (s *MemoryStore) Append(ctx context.Context, events []Event) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if s.failAppend != nil {
		return 0, s.failAppend
	}
	n := 0
	for _, e := range events {
		if s.ids[e.ID] {
			continue
		}
		s.ids[e.ID] = true
		s.pairs[e.MessageID+"\x00"+string(e.Type)] = true
		s.events = append(s.events, Record{Seq: int64(len(s.events) + 1), Event: e})
		n++
	}
	return n, nil
}

// Read implements Store.
func (s *MemoryStore) Read(ctx context.Context, after int64, limit int) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if after >= int64(len(s.events)) {
		return nil, nil
	}
	end := min(int(after)+limit, len(s.events))
	return slices.Clone(s.events[after:end]), nil
}

// Head implements Store.
func (s *MemoryStore) Head(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.events)), s.check(ctx)
}

// Cursor implements Store.
func (s *MemoryStore) Cursor(ctx context.Context, sink string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[sink], s.check(ctx)
}

// SetCursor implements Store.
func (s *MemoryStore) SetCursor(ctx context.Context, sink string, seq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.cursors[sink] = seq
	return nil
}

// AddGap implements Store.
func (s *MemoryStore) AddGap(ctx context.Context, g Gap) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if s.failAppend != nil {
		return s.failAppend
	}
	s.gaps = append(s.gaps, g)
	return nil
}

// Gaps implements Store.
func (s *MemoryStore) Gaps(ctx context.Context, from, to time.Time) ([]Gap, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Gap
	for _, g := range s.gaps {
		if g.Overlaps(from, to) {
			out = append(out, g)
		}
	}
	return out, s.check(ctx)
}

// Counts implements Store.
func (s *MemoryStore) Counts(ctx context.Context, q Query) (map[Type]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	out := map[Type]int{}
	for _, r := range s.events {
		e := &r.Event
		if !q.matches(e) {
			continue
		}
		k := e.MessageID + "\x00" + string(e.Type)
		if !seen[k] {
			seen[k] = true
			out[e.Type]++
		}
	}
	return out, s.check(ctx)
}

func (q *Query) matches(e *Event) bool {
	return (q.Campaign == "" || e.Campaign == q.Campaign) && (q.Automation == "" || e.Automation == q.Automation) &&
		!e.At.Before(q.From) && e.At.Before(q.To)
}

// Has implements Store.
func (s *MemoryStore) Has(ctx context.Context, messageID string, t Type) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pairs[messageID+"\x00"+string(t)], s.check(ctx)
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// MessageReader is a Store that lists one message's events: its history
// (accepted, each attempt's outcome, engagement). The memory, embedded
// and PostgreSQL journals implement it.
type MessageReader interface {
	// MessageEvents returns the events of messageID in journal order, at
	// most limit.
	MessageEvents(ctx context.Context, messageID string, limit int) ([]Event, error)
}

// MessageEvents implements MessageReader.
func (s *MemoryStore) MessageEvents(ctx context.Context, messageID string, limit int) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var out []Event
	for _, r := range s.events {
		if r.Event.MessageID == messageID && len(out) < limit {
			out = append(out, r.Event)
		}
	}
	return out, nil
}
