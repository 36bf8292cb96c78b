package postgres

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/capping"
)

// cappingStore is capping.Store on PostgreSQL. A reservation takes a
// transaction-scoped advisory lock per counter key, in sorted order (no
// deadlocks), then counts and inserts: atomic across all matching rules
// and across hosts.
type cappingStore struct {
	db     *DB
	slots  string
	res    string
	closed atomic.Bool
}

var _ capping.Store = (*cappingStore)(nil)

func (s *cappingStore) check(ctx context.Context) error {
	if s.closed.Load() {
		return capping.ErrClosed
	}
	return ctx.Err()
}

// Reserve implements capping.Store.
func (s *cappingStore) Reserve(ctx context.Context, id string, checks []capping.Check, at, leaseUntil time.Time) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if len(checks) == 0 {
		return -1, nil
	}
	keys := make([]string, len(checks))
	for i, c := range checks {
		keys[i] = c.Key
	}
	// The reservation's own ID is locked too, so two reserves under one ID
	// take turns and the second sees the first. (Should a key ever read
	// the same, the two would only share a lock.)
	locks := append(slices.Clone(keys), "reservation "+id)
	slices.Sort(locks)
	locks = slices.Compact(locks)
	failed := -1
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		failed = -1
		for _, k := range locks {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "herald-cap:"+s.db.schema+":"+k); err != nil {
				return err
			}
		}
		var held bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.res+` WHERE id = $1)`, id).Scan(&held); err != nil {
			return err
		}
		if held {
			return nil // still pending: a retry of the same reservation
		}
		var counted bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.slots+` WHERE key = $1 AND id = $2 AND at >= $3)`, checks[0].Key, id, checks[0].Since).Scan(&counted); err != nil {
			return err
		}
		if counted {
			return nil // committed already: the message counts once
		}
		for i, c := range checks {
			if _, err := tx.Exec(ctx, `DELETE FROM `+s.slots+` WHERE key = $1 AND at < $2 AND NOT pending`, c.Key, c.Since); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+s.slots+` WHERE key = $1 AND at >= $2`, c.Key, c.Since).Scan(&n); err != nil {
				return err
			}
			if n >= c.Limit {
				failed = i
				return nil
			}
		}
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO `+s.slots+` (key, id, at, pending) VALUES ($1, $2, $3, true) ON CONFLICT DO NOTHING`, k, id, at); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+s.res+` (id, at, lease_until, keys) VALUES ($1, $2, $3, $4)`, id, at, leaseUntil, keys)
		return err
	})
	return failed, err
}

func (s *cappingStore) settle(ctx context.Context, id string, now time.Time, commit, checkLease bool) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	var result error
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		result = nil
		var lease time.Time
		var keys []string
		err := tx.QueryRow(ctx, `DELETE FROM `+s.res+` WHERE id = $1 RETURNING lease_until, keys`, id).Scan(&lease, &keys)
		if errors.Is(err, pgx.ErrNoRows) {
			result = capping.ErrUnknownReservation
			return nil
		}
		if err != nil {
			return err
		}
		keep := commit
		if checkLease && !now.Before(lease) {
			keep, result = true, capping.ErrLeaseExpired
		}
		q := `DELETE FROM ` + s.slots + ` WHERE key = ANY($1) AND id = $2`
		if keep {
			q = `UPDATE ` + s.slots + ` SET pending = false WHERE key = ANY($1) AND id = $2`
		}
		_, err = tx.Exec(ctx, q, keys, id)
		return err
	})
	if err != nil {
		return err
	}
	return result
}

// Commit implements capping.Store.
func (s *cappingStore) Commit(ctx context.Context, id string) error {
	return s.settle(ctx, id, time.Time{}, true, false)
}

// Release implements capping.Store.
func (s *cappingStore) Release(ctx context.Context, id string, now time.Time) error {
	return s.settle(ctx, id, now, false, true)
}

// Add implements capping.Store.
func (s *cappingStore) Add(ctx context.Context, id string, keys []string, at time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, k := range keys {
		b.Queue(`INSERT INTO `+s.slots+` (key, id, at, pending) VALUES ($1, $2, $3, false) ON CONFLICT DO NOTHING`, k, id, at)
	}
	return s.db.pool.SendBatch(ctx, b).Close()
}

// Slots implements capping.Store.
func (s *cappingStore) Slots(ctx context.Context, key string, since time.Time) ([]capping.Slot, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT at, pending FROM `+s.slots+` WHERE key = $1 AND at >= $2 ORDER BY at, id`, key, since)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (capping.Slot, error) {
		var sl capping.Slot
		err := r.Scan(&sl.At, &sl.Pending)
		return sl, err
	})
}

// Close implements capping.Store. The pool is the host's: it stays open.
func (s *cappingStore) Close() error {
	s.closed.Store(true)
	return nil
}
