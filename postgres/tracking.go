package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/tracking"
)

// trackingStore is tracking.Store on PostgreSQL; p is the table prefix.
type trackingStore struct {
	db     *DB
	p      string
	closed atomic.Bool
}

var _ tracking.Store = (*trackingStore)(nil)

func (s *trackingStore) check(ctx context.Context) error {
	if s.closed.Load() {
		return tracking.ErrClosed
	}
	return ctx.Err()
}

// Append implements tracking.Store: one round trip for the batch.
func (s *trackingStore) Append(ctx context.Context, events []tracking.Event) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	b := &pgx.Batch{}
	for i := range events {
		e := &events[i]
		data, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		b.Queue(`INSERT INTO `+s.p+`events (id, message_id, type, at, campaign, automation, data) VALUES ($1,$2,$3,$4,$5,$6,$7)
			ON CONFLICT (id) DO NOTHING`, e.ID, e.MessageID, string(e.Type), e.At, e.Campaign, e.Automation, data)
	}
	n := 0
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		n = 0
		// Appends take turns (a transaction-scoped lock), so sequence
		// numbers commit in order and a sink's cursor never passes an event
		// another host has not committed yet.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "herald-journal:"+s.db.schema); err != nil {
			return err
		}
		br := tx.SendBatch(ctx, b)
		for range events {
			tag, err := br.Exec()
			if err != nil {
				_ = br.Close()
				return err
			}
			n += int(tag.RowsAffected())
		}
		return br.Close()
	})
	return n, err
}

// Read implements tracking.Store.
func (s *trackingStore) Read(ctx context.Context, after int64, limit int) ([]tracking.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT seq, data FROM `+s.p+`events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tracking.Record, error) {
		var rec tracking.Record
		var data []byte
		if err := r.Scan(&rec.Seq, &data); err != nil {
			return rec, err
		}
		return rec, json.Unmarshal(data, &rec.Event)
	})
}

func (s *trackingStore) scalar(ctx context.Context, q string, args ...any) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var v *int64
	err := s.db.pool.QueryRow(ctx, q, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) || v == nil {
		return 0, nil
	}
	return *v, err
}

// Head implements tracking.Store.
func (s *trackingStore) Head(ctx context.Context) (int64, error) {
	return s.scalar(ctx, `SELECT max(seq) FROM `+s.p+`events`)
}

// Cursor implements tracking.Store.
func (s *trackingStore) Cursor(ctx context.Context, sink string) (int64, error) {
	return s.scalar(ctx, `SELECT seq FROM `+s.p+`cursors WHERE sink = $1`, sink)
}

// SetCursor implements tracking.Store.
func (s *trackingStore) SetCursor(ctx context.Context, sink string, seq int64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	_, err := s.db.pool.Exec(ctx, `INSERT INTO `+s.p+`cursors (sink, seq) VALUES ($1, $2)
		ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq`, sink, seq)
	return err
}

// AddGap implements tracking.Store.
func (s *trackingStore) AddGap(ctx context.Context, g tracking.Gap) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	_, err := s.db.pool.Exec(ctx, `INSERT INTO `+s.p+`gaps (from_at, to_at, reason, declared) VALUES ($1, $2, $3, $4)`,
		g.From, g.To, g.Reason, g.Declared)
	return err
}

// Gaps implements tracking.Store.
func (s *trackingStore) Gaps(ctx context.Context, from, to time.Time) ([]tracking.Gap, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT from_at, to_at, reason, declared FROM `+s.p+`gaps
		WHERE from_at < $1 AND $2 < to_at ORDER BY from_at`, to, from)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tracking.Gap, error) {
		var g tracking.Gap
		err := r.Scan(&g.From, &g.To, &g.Reason, &g.Declared)
		return g, err
	})
}

// Counts implements tracking.Store.
func (s *trackingStore) Counts(ctx context.Context, q tracking.Query) (map[tracking.Type]int, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT type, count(DISTINCT message_id) FROM `+s.p+`events
		WHERE ($1 = '' OR campaign = $1) AND ($2 = '' OR automation = $2) AND at >= $3 AND at < $4 GROUP BY type`,
		q.Campaign, q.Automation, q.From, q.To)
	if err != nil {
		return nil, err
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

// Has implements tracking.Store.
func (s *trackingStore) Has(ctx context.Context, messageID string, t tracking.Type) (bool, error) {
	n, err := s.scalar(ctx, `SELECT 1::bigint FROM `+s.p+`events WHERE message_id = $1 AND type = $2 LIMIT 1`, messageID, string(t))
	return n == 1, err
}

// Close implements tracking.Store. The pool is the host's: it stays open.
func (s *trackingStore) Close() error {
	s.closed.Store(true)
	return nil
}

// MessageEvents implements tracking.MessageReader.
func (s *trackingStore) MessageEvents(ctx context.Context, messageID string, limit int) ([]tracking.Event, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT data FROM `+s.p+`events WHERE message_id = $1 ORDER BY seq LIMIT $2`, messageID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tracking.Event, error) {
		var e tracking.Event
		var data []byte
		if err := r.Scan(&data); err != nil {
			return e, err
		}
		return e, json.Unmarshal(data, &e)
	})
}
