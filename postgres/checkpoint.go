package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/retry"
)

// checkpointStore is the checkpoint.Store on PostgreSQL: a row per
// fan-out, moved in the same transaction as the jobs of its page.
type checkpointStore struct {
	db    *DB
	t     string
	pages string
}

var _ checkpoint.Store = (*checkpointStore)(nil)

// Checkpoints returns the fan-outs' store (campaign.Config's Store).
func (db *DB) Checkpoints() checkpoint.Store {
	return &checkpointStore{db: db, t: db.schema + ".checkpoints", pages: db.schema + ".checkpoint_pages"}
}

const checkpointCols = `key, spec, state, cursor, recipients, enqueued, invalid, done, created, staged, drained, cancelled, pages`

func (s *checkpointStore) scan(r pgx.Row) (checkpoint.Record, error) {
	var rec checkpoint.Record
	var state string
	var recipients, enqueued, invalid, staged, drained, cancelled int64
	if err := r.Scan(&rec.Key, &rec.Spec, &state, &rec.Cursor, &recipients, &enqueued, &invalid, &rec.Done, &rec.Created,
		&staged, &drained, &cancelled, &rec.Pages); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return checkpoint.Record{}, checkpoint.ErrNotFound
		}
		return checkpoint.Record{}, err
	}
	rec.State, rec.Created = checkpoint.State(state), rec.Created.UTC()
	rec.Recipients, rec.Enqueued, rec.Invalid = int(recipients), int(enqueued), int(invalid)
	rec.Staged, rec.Drained, rec.Cancelled = int(staged), int(drained), int(cancelled)
	return rec, nil
}

// Create implements checkpoint.Store.
func (s *checkpointStore) Create(ctx context.Context, r checkpoint.Record) (checkpoint.Record, bool, error) {
	tag, err := s.db.pool.Exec(ctx, `INSERT INTO `+s.t+` (`+checkpointCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, 0, 0)
		ON CONFLICT (key) DO NOTHING`, r.Key, spec(r.Spec), string(r.State), r.Cursor, r.Recipients, r.Enqueued, r.Invalid, r.Done, r.Created)
	if err != nil {
		return checkpoint.Record{}, false, err
	}
	got, err := s.Get(ctx, r.Key)
	return got, tag.RowsAffected() == 1, err
}

// Get implements checkpoint.Store.
func (s *checkpointStore) Get(ctx context.Context, key string) (checkpoint.Record, error) {
	return s.scan(s.db.pool.QueryRow(ctx, `SELECT `+checkpointCols+` FROM `+s.t+` WHERE key = $1`, key))
}

// List implements checkpoint.Store.
func (s *checkpointStore) List(ctx context.Context, after string, limit int) ([]checkpoint.Record, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT `+checkpointCols+` FROM `+s.t+` WHERE key > $1 ORDER BY key COLLATE "C" LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (checkpoint.Record, error) { return s.scan(r) })
}

// SetState implements checkpoint.Store.
func (s *checkpointStore) SetState(ctx context.Context, key string, state checkpoint.State) error {
	if state != checkpoint.Cancelled {
		tag, err := s.db.pool.Exec(ctx, `UPDATE `+s.t+` SET state = $2 WHERE key = $1`, key, string(state))
		if err == nil && tag.RowsAffected() == 0 {
			return checkpoint.ErrNotFound
		}
		return err
	}
	return pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM `+s.pages+` WHERE key = $1 RETURNING count - off AS n)
			UPDATE `+s.t+` SET state = $2, cancelled = cancelled + (SELECT coalesce(sum(n), 0) FROM gone) WHERE key = $1`, key, string(state))
		if err == nil && tag.RowsAffected() == 0 {
			return checkpoint.ErrNotFound
		}
		return err
	})
}

// Stage implements checkpoint.Store: the page and the row's move are one
// transaction.
func (s *checkpointStore) Stage(ctx context.Context, key, cursor string, recipients, invalid int, done bool, data []byte, count int) error {
	return pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		page := int64(0)
		if count > 0 {
			page = 1
		}
		var seq int64
		err := tx.QueryRow(ctx, `UPDATE `+s.t+` SET cursor = $2, recipients = recipients + $3, invalid = invalid + $4,
			done = done OR $5, staged = staged + $6, pages = pages + $7 WHERE key = $1 RETURNING pages`,
			key, cursor, recipients, invalid, done, count, page).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return checkpoint.ErrNotFound
		}
		if err != nil || count == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+s.pages+` (key, seq, count, off, data) VALUES ($1, $2, $3, 0, $4)`, key, seq, count, data)
		return err
	})
}

// Claim implements checkpoint.Store.
func (s *checkpointStore) Claim(ctx context.Context, key, owner string, now, until time.Time) (bool, error) {
	var ok, exists bool
	err := s.db.pool.QueryRow(ctx, `WITH c AS (UPDATE `+s.t+` SET owner = $2, lease_until = $3 WHERE key = $1 AND (owner = $2 OR lease_until <= $4) RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM c), EXISTS (SELECT 1 FROM `+s.t+` WHERE key = $1)`, key, owner, until, now).Scan(&ok, &exists)
	if err == nil && !exists {
		err = checkpoint.ErrNotFound
	}
	return ok, err
}

// Pages implements checkpoint.Store.
func (s *checkpointStore) Pages(ctx context.Context, key string, after int64, limit int) ([]checkpoint.Page, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT seq, count, off, data FROM `+s.pages+` WHERE key = $1 AND seq > $2 ORDER BY seq LIMIT $3`, key, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (checkpoint.Page, error) {
		var p checkpoint.Page
		var count, off int64
		err := r.Scan(&p.Seq, &count, &off, &p.Data)
		p.Count, p.Offset = int(count), int(off)
		return p, err
	})
}

// Drain implements checkpoint.Store: the jobs and the page's move are one
// transaction, the page's row locked first.
func (s *checkpointStore) Drain(key string, seq int64, offset, invalid int) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
			var count, off int64
			err := tx.QueryRow(ctx, `SELECT count, off FROM `+s.pages+` WHERE key = $1 AND seq = $2 FOR UPDATE`, key, seq).Scan(&count, &off)
			if errors.Is(err, pgx.ErrNoRows) || err == nil && (int64(offset) <= off || int64(offset) > count) {
				return checkpoint.ErrNotFound
			}
			if err != nil {
				return err
			}
			if len(jobs) > 0 {
				if res, err = s.db.retry.enqueueIn(ctx, tx, jobs, since, true); err != nil {
					return err
				}
			}
			if int64(offset) == count {
				_, err = tx.Exec(ctx, `DELETE FROM `+s.pages+` WHERE key = $1 AND seq = $2`, key, seq)
			} else {
				_, err = tx.Exec(ctx, `UPDATE `+s.pages+` SET off = $3 WHERE key = $1 AND seq = $2`, key, seq, offset)
			}
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE `+s.t+` SET enqueued = enqueued + $2, drained = drained + $3, invalid = invalid + $4 WHERE key = $1`,
				key, checkpoint.Created(res), int64(offset)-off, invalid)
			return err
		})
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

// Checkpoint implements checkpoint.Store: the jobs and the row's move
// are one transaction.
func (s *checkpointStore) Checkpoint(key, cursor string, recipients, invalid int, done bool) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `SELECT 1 FROM `+s.t+` WHERE key = $1 FOR UPDATE`, key)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return checkpoint.ErrNotFound
			}
			if len(jobs) > 0 {
				if res, err = s.db.retry.enqueueIn(ctx, tx, jobs, since, true); err != nil {
					return err
				}
			}
			_, err = tx.Exec(ctx, `UPDATE `+s.t+` SET cursor = $2, recipients = recipients + $3, invalid = invalid + $4,
				enqueued = enqueued + $5, done = done OR $6 WHERE key = $1`, key, cursor, recipients, invalid, checkpoint.Created(res), done)
			return err
		})
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

// spec is a record's Spec as stored: never NULL.
func spec(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Close implements checkpoint.Store. The pool is the host's: it stays open.
func (s *checkpointStore) Close() error { return nil }
