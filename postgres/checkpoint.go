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
	db *DB
	t  string
}

var _ checkpoint.Store = (*checkpointStore)(nil)

// Checkpoints returns the fan-outs' store (campaign.Config's Store).
func (db *DB) Checkpoints() checkpoint.Store {
	return &checkpointStore{db: db, t: db.schema + ".checkpoints"}
}

const checkpointCols = `key, spec, state, cursor, recipients, enqueued, invalid, done, created`

func (s *checkpointStore) scan(r pgx.Row) (checkpoint.Record, error) {
	var rec checkpoint.Record
	var state string
	var recipients, enqueued, invalid int64
	if err := r.Scan(&rec.Key, &rec.Spec, &state, &rec.Cursor, &recipients, &enqueued, &invalid, &rec.Done, &rec.Created); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return checkpoint.Record{}, checkpoint.ErrNotFound
		}
		return checkpoint.Record{}, err
	}
	rec.State, rec.Created = checkpoint.State(state), rec.Created.UTC()
	rec.Recipients, rec.Enqueued, rec.Invalid = int(recipients), int(enqueued), int(invalid)
	return rec, nil
}

// Create implements checkpoint.Store.
func (s *checkpointStore) Create(ctx context.Context, r checkpoint.Record) (checkpoint.Record, bool, error) {
	tag, err := s.db.pool.Exec(ctx, `INSERT INTO `+s.t+` (`+checkpointCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (key) DO NOTHING`, r.Key, r.Spec, string(r.State), r.Cursor, r.Recipients, r.Enqueued, r.Invalid, r.Done, r.Created)
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

// SetState implements checkpoint.Store.
func (s *checkpointStore) SetState(ctx context.Context, key string, state checkpoint.State) error {
	tag, err := s.db.pool.Exec(ctx, `UPDATE `+s.t+` SET state = $2 WHERE key = $1`, key, string(state))
	if err == nil && tag.RowsAffected() == 0 {
		return checkpoint.ErrNotFound
	}
	return err
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

// Close implements checkpoint.Store. The pool is the host's: it stays open.
func (s *checkpointStore) Close() error { return nil }
