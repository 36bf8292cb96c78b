package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald/capping"
)

// cappingStore is the capping.Store of a DB: slots in capping_slots,
// pending reservations in capping_reservations, every change through the
// group commit.
type cappingStore struct {
	db *DB

	count, prune, insSlot, insRes, getRes, delRes, commitSlot, delSlot, getSlot *sql.Stmt
}

var _ capping.Store = (*cappingStore)(nil)

func newCappingStore(ctx context.Context, db *DB) (*cappingStore, error) {
	s := &cappingStore{db: db}
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&s.count, `SELECT count(*) FROM capping_slots WHERE key = ? AND at >= ?`},
		{&s.getSlot, `SELECT at FROM capping_slots WHERE key = ? AND id = ?`},
		{&s.prune, `DELETE FROM capping_slots WHERE key = ? AND at < ? AND pending = 0`},
		{&s.insSlot, `INSERT OR IGNORE INTO capping_slots (key, id, at, pending) VALUES (?, ?, ?, ?)`},
		{&s.insRes, `INSERT INTO capping_reservations (id, at, lease_until, keys) VALUES (?, ?, ?, ?)`},
		{&s.getRes, `SELECT lease_until, keys FROM capping_reservations WHERE id = ?`},
		{&s.delRes, `DELETE FROM capping_reservations WHERE id = ?`},
		{&s.commitSlot, `UPDATE capping_slots SET pending = 0 WHERE key = ? AND id = ?`},
		{&s.delSlot, `DELETE FROM capping_slots WHERE key = ? AND id = ?`},
	} {
		st, err := db.w.PrepareContext(ctx, p.q)
		if err != nil {
			return nil, fmt.Errorf("prepare %q: %w", p.q, err)
		}
		*p.dst = st
	}
	return s, nil
}

func (s *cappingStore) closeStmts() {
	for _, st := range []*sql.Stmt{s.count, s.prune, s.insSlot, s.insRes, s.getRes, s.delRes, s.commitSlot, s.delSlot, s.getSlot} {
		if st != nil {
			_ = st.Close()
		}
	}
}

// Reserve implements capping.Store.
func (s *cappingStore) Reserve(ctx context.Context, id string, checks []capping.Check, at, leaseUntil time.Time) (int, error) {
	if len(checks) == 0 {
		return -1, nil
	}
	failed := -1
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		failed = -1
		var lease int64
		var held string
		switch err := s.getRes.QueryRowContext(ctx, id).Scan(&lease, &held); {
		case err == nil:
			return nil // still pending: a retry of the same reservation
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		for _, c := range checks {
			var at int64
			switch err := s.getSlot.QueryRowContext(ctx, c.Key, id).Scan(&at); {
			case err == nil && at >= c.Since.UnixNano():
				return nil // committed already: the message counts once
			case err != nil && !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		for i, c := range checks {
			since := c.Since.UnixNano()
			if _, err := s.prune.ExecContext(ctx, c.Key, since); err != nil {
				return err
			}
			var n int
			if err := s.count.QueryRowContext(ctx, c.Key, since).Scan(&n); err != nil {
				return err
			}
			if n >= c.Limit {
				failed = i
				return nil
			}
		}
		keys := make([]string, len(checks))
		for i, c := range checks {
			keys[i] = c.Key
			if _, err := s.insSlot.ExecContext(ctx, c.Key, id, at.UnixNano(), 1); err != nil {
				return err
			}
		}
		_, err := s.insRes.ExecContext(ctx, id, at.UnixNano(), leaseUntil.UnixNano(), strings.Join(keys, "\n"))
		return err
	}, nil)
	return failed, err
}

// settle commits (commit true) or removes a reservation's slots.
func (s *cappingStore) settle(ctx context.Context, id string, now int64, commit, checkLease bool) error {
	var result error
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		result = nil
		var lease int64
		var keys string
		err := s.getRes.QueryRowContext(ctx, id).Scan(&lease, &keys)
		if errors.Is(err, sql.ErrNoRows) {
			result = capping.ErrUnknownReservation
			return nil
		}
		if err != nil {
			return err
		}
		keep := commit
		if checkLease && now >= lease {
			keep, result = true, capping.ErrLeaseExpired // counts as sent
		}
		for _, k := range strings.Split(keys, "\n") {
			st := s.delSlot
			if keep {
				st = s.commitSlot
			}
			if _, err := st.ExecContext(ctx, k, id); err != nil {
				return err
			}
		}
		_, err = s.delRes.ExecContext(ctx, id)
		return err
	}, nil)
	if err != nil {
		return err
	}
	return result
}

// Commit implements capping.Store.
func (s *cappingStore) Commit(ctx context.Context, id string) error {
	return s.settle(ctx, id, 0, true, false)
}

// Release implements capping.Store.
func (s *cappingStore) Release(ctx context.Context, id string, now time.Time) error {
	return s.settle(ctx, id, now.UnixNano(), false, true)
}

// Add implements capping.Store.
func (s *cappingStore) Add(ctx context.Context, id string, keys []string, at time.Time) error {
	return s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		for _, k := range keys {
			if _, err := s.insSlot.ExecContext(ctx, k, id, at.UnixNano(), 0); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// Slots implements capping.Store.
func (s *cappingStore) Slots(ctx context.Context, key string, since time.Time) ([]capping.Slot, error) {
	if s.db.isClosed() {
		return nil, capping.ErrClosed
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT at, pending FROM capping_slots WHERE key = ? AND at >= ? ORDER BY at, id`, key, since.UnixNano())
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []capping.Slot
	for rows.Next() {
		var at int64
		var pending bool
		if err := rows.Scan(&at, &pending); err != nil {
			return nil, err
		}
		out = append(out, capping.Slot{At: time.Unix(0, at).UTC(), Pending: pending})
	}
	return out, rows.Err()
}

// Close implements capping.Store: it closes the whole DB.
func (s *cappingStore) Close() error { return s.db.Close() }
