package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/tracking"
)

// trackingStore is the tracking.Store of a DB.
type trackingStore struct {
	db  *DB
	ins *sql.Stmt
	// The forwarders' reads, prepared once (on each reader connection as
	// it first runs them): an outbox reads its cursor and the events
	// after it for every batch it forwards.
	readEvents, readCursor *sql.Stmt
}

var (
	_ tracking.Store          = (*trackingStore)(nil)
	_ tracking.RecordAppender = (*trackingStore)(nil)
)

func newTrackingStore(ctx context.Context, db *DB) (*trackingStore, error) {
	s := &trackingStore{db: db}
	var err error
	if s.ins, err = db.w.PrepareContext(ctx, `INSERT OR IGNORE INTO tracking_events (id, message_id, type, at, campaign, automation, data)
		VALUES (?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return nil, fmt.Errorf("prepare tracking insert: %w", err)
	}
	if s.readEvents, err = db.rdb.PrepareContext(ctx, `SELECT seq, data FROM tracking_events WHERE seq > ? ORDER BY seq LIMIT ?`); err != nil {
		s.closeStmts()
		return nil, fmt.Errorf("prepare tracking read: %w", err)
	}
	if s.readCursor, err = db.rdb.PrepareContext(ctx, `SELECT seq FROM tracking_cursors WHERE sink = ?`); err != nil {
		s.closeStmts()
		return nil, fmt.Errorf("prepare tracking cursor: %w", err)
	}
	return s, nil
}

func (s *trackingStore) closeStmts() {
	for _, st := range []*sql.Stmt{s.ins, s.readEvents, s.readCursor} {
		if st != nil {
			_ = st.Close()
		}
	}
}

func (s *trackingStore) read(ctx context.Context) error {
	if s.db.isClosed() {
		return errStoreClosed
	}
	return ctx.Err()
}

// Append implements tracking.Store.
func (s *trackingStore) Append(ctx context.Context, events []tracking.Event) (int, error) {
	n, _, err := s.append(ctx, events, false)
	return n, err
}

// AppendRecords implements tracking.RecordAppender: an event is returned
// when its JSON in the journal decodes to the same event (see sameInJSON).
func (s *trackingStore) AppendRecords(ctx context.Context, events []tracking.Event) ([]tracking.Record, error) {
	_, recs, err := s.append(ctx, events, true)
	return recs, err
}

// append adds events and returns how many it added and, with records,
// the records of those that read back as given.
func (s *trackingStore) append(ctx context.Context, events []tracking.Event, records bool) (int, []tracking.Record, error) {
	datas := make([][]byte, len(events))
	for i := range events {
		b, err := json.Marshal(&events[i])
		if err != nil {
			return 0, nil, err
		}
		datas[i] = b
	}
	n := 0
	var out []tracking.Record
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		n, out = 0, out[:0]
		for i := range events {
			e := &events[i]
			r, err := s.ins.ExecContext(ctx, e.ID, e.MessageID, string(e.Type), e.At.UnixNano(), e.Campaign, e.Automation, datas[i])
			if err != nil {
				return err
			}
			k, err := r.RowsAffected()
			if err != nil {
				return err
			}
			if k == 0 {
				continue // already in the journal
			}
			n++
			if !records {
				continue
			}
			ev, ok := sameInJSON(e)
			if !ok {
				continue
			}
			seq, err := r.LastInsertId()
			if err != nil {
				return err
			}
			out = append(out, tracking.Record{Seq: seq, Event: ev})
		}
		return nil
	}, nil)
	if err != nil {
		return 0, nil, err
	}
	return n, out, nil
}

// sameInJSON returns e as Read will return it from its JSON, when that
// takes no decoding: every string valid UTF-8 (JSON would replace the
// rest), properties strings, booleans, float64 or null (JSON gives every
// number back as a float64), no monotonic clock reading, a zero offset
// as UTC, empty lists and maps as nil (omitempty).
func sameInJSON(e *tracking.Event) (tracking.Event, bool) {
	for _, v := range [...]string{e.ID, e.MessageID, e.User, e.Device, e.Channel, e.Provider, e.Campaign, e.Automation,
		string(e.Type), e.ProviderMessageID, e.ErrorClass, e.Reason, e.Name} {
		if !utf8.ValidString(v) {
			return tracking.Event{}, false
		}
	}
	for _, l := range e.Labels {
		if !utf8.ValidString(l) {
			return tracking.Event{}, false
		}
	}
	for k, v := range e.Props {
		if !utf8.ValidString(k) {
			return tracking.Event{}, false
		}
		switch v := v.(type) {
		case nil, bool, float64:
		case string:
			if !utf8.ValidString(v) {
				return tracking.Event{}, false
			}
		default:
			return tracking.Event{}, false
		}
	}
	out := *e
	out.At = e.At.Round(0)
	if _, off := out.At.Zone(); off == 0 {
		out.At = out.At.UTC()
	} else if out.At.Location() != time.Local {
		return tracking.Event{}, false // JSON gives an offset back as time.Local or a nameless zone
	}
	if len(out.Labels) == 0 {
		out.Labels = nil
	} else {
		out.Labels = slices.Clone(out.Labels)
	}
	if len(out.Props) == 0 {
		out.Props = nil
	} else {
		out.Props = maps.Clone(out.Props)
	}
	return out, true
}

// Read implements tracking.Store.
func (s *trackingStore) Read(ctx context.Context, after int64, limit int) ([]tracking.Record, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	rows, err := s.readEvents.QueryContext(ctx, after, limit)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []tracking.Record
	for rows.Next() {
		var r tracking.Record
		var data []byte
		if err := rows.Scan(&r.Seq, &data); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &r.Event); err != nil {
			return nil, fmt.Errorf("embedded: tracking event %d: %w", r.Seq, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *trackingStore) scalar(ctx context.Context, q string, args ...any) (int64, error) {
	if err := s.read(ctx); err != nil {
		return 0, err
	}
	var v sql.NullInt64
	err := s.db.rdb.QueryRowContext(ctx, q, args...).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v.Int64, err
}

// Head implements tracking.Store.
func (s *trackingStore) Head(ctx context.Context) (int64, error) {
	return s.scalar(ctx, `SELECT max(seq) FROM tracking_events`)
}

// Cursor implements tracking.Store.
func (s *trackingStore) Cursor(ctx context.Context, sink string) (int64, error) {
	if err := s.read(ctx); err != nil {
		return 0, err
	}
	var v int64
	err := s.readCursor.QueryRowContext(ctx, sink).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// SetCursor implements tracking.Store.
func (s *trackingStore) SetCursor(ctx context.Context, sink string, seq int64) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		_, err := s.db.wexec(ctx, `INSERT INTO tracking_cursors (sink, seq) VALUES (?, ?)
			ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq`, sink, seq)
		return err
	}, nil)
}

// AddGap implements tracking.Store.
func (s *trackingStore) AddGap(ctx context.Context, g tracking.Gap) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `INSERT INTO tracking_gaps (from_at, to_at, reason, declared) VALUES (?, ?, ?, ?)`,
			g.From.UnixNano(), g.To.UnixNano(), g.Reason, g.Declared)
		return err
	}, nil)
}

// Gaps implements tracking.Store.
func (s *trackingStore) Gaps(ctx context.Context, from, to time.Time) ([]tracking.Gap, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT from_at, to_at, reason, declared FROM tracking_gaps
		WHERE from_at < ? AND ? < to_at ORDER BY from_at`, to.UnixNano(), from.UnixNano())
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []tracking.Gap
	for rows.Next() {
		var g tracking.Gap
		var f, t int64
		if err := rows.Scan(&f, &t, &g.Reason, &g.Declared); err != nil {
			return nil, err
		}
		g.From, g.To = time.Unix(0, f).UTC(), time.Unix(0, t).UTC()
		out = append(out, g)
	}
	return out, rows.Err()
}

// Counts implements tracking.Store.
func (s *trackingStore) Counts(ctx context.Context, q tracking.Query) (map[tracking.Type]int, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	where, args := "1=1", []any{}
	if q.Campaign != "" {
		where += " AND campaign = ?"
		args = append(args, q.Campaign)
	}
	if q.Automation != "" {
		where += " AND automation = ?"
		args = append(args, q.Automation)
	}
	args = append(args, q.From.UnixNano(), q.To.UnixNano())
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT type, count(DISTINCT message_id) FROM tracking_events
		WHERE `+where+` AND at >= ? AND at < ? GROUP BY type`, args...)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	out := map[tracking.Type]int{}
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		out[tracking.Type(t)] = n
	}
	return out, rows.Err()
}

// byMessage selects a message's events (?1) in two disjoint parts, each
// on an index: those whose ID starts with "<message>/" (herald's own) on
// the id index, the others on the partial message index (migration 13,
// whose WHERE the second part repeats word for word so SQLite uses it).
// cond is more of the WHERE for both parts.
func byMessage(cols, cond string) string {
	return `SELECT ` + cols + ` FROM tracking_events WHERE id >= ?1 || '/' AND id < ?1 || '0' AND message_id = ?1` + cond + `
	UNION ALL
	SELECT ` + cols + ` FROM tracking_events WHERE message_id = ?1` + cond + `
		AND substr(id, 1, length(message_id) + 1) <> message_id || '/'`
}

// Has implements tracking.Store.
func (s *trackingStore) Has(ctx context.Context, messageID string, t tracking.Type) (bool, error) {
	n, err := s.scalar(ctx, byMessage("1", " AND type = ?2")+` LIMIT 1`, messageID, string(t))
	return n == 1, err
}

// Close implements tracking.Store: it closes the whole DB.
func (s *trackingStore) Close() error { return s.db.Close() }

// MessageEvents implements tracking.MessageReader.
func (s *trackingStore) MessageEvents(ctx context.Context, messageID string, limit int) ([]tracking.Event, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.rdb.QueryContext(ctx, byMessage("seq, data", "")+` ORDER BY seq LIMIT ?2`, messageID, limit)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []tracking.Event
	for rows.Next() {
		var seq int64
		var data []byte
		var e tracking.Event
		if err := rows.Scan(&seq, &data); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
