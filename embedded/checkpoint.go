package embedded

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/retry"
)

// checkpointStore is the checkpoint.Store of a DB: a row per fan-out,
// moved in the same write (the same transaction of the group commit) as
// the jobs its page enqueued.
type checkpointStore struct{ db *DB }

var _ checkpoint.Store = (*checkpointStore)(nil)

// Checkpoints returns the fan-outs' store in this file (campaign.Config's
// Store): a campaign's cursor and the messages of its page are one
// durable write.
func (db *DB) Checkpoints() checkpoint.Store { return &checkpointStore{db: db} }

const checkpointCols = `key, spec, state, cursor, recipients, enqueued, invalid, done, created`

func scanCheckpoint(r scanner) (checkpoint.Record, error) {
	var rec checkpoint.Record
	var state string
	var done int
	var created int64
	if err := r.Scan(&rec.Key, &rec.Spec, &state, &rec.Cursor, &rec.Recipients, &rec.Enqueued, &rec.Invalid, &done, &created); err != nil {
		return checkpoint.Record{}, err
	}
	rec.State, rec.Done, rec.Created = checkpoint.State(state), done == 1, fromNanos(created)
	return rec, nil
}

// Create implements checkpoint.Store.
func (s *checkpointStore) Create(ctx context.Context, r checkpoint.Record) (checkpoint.Record, bool, error) {
	created := false
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		res, err := c.ExecContext(ctx, `INSERT OR IGNORE INTO checkpoints (`+checkpointCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Key, r.Spec, string(r.State), r.Cursor, r.Recipients, r.Enqueued, r.Invalid, b2i(r.Done), nanos(r.Created))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		created = n == 1
		return err
	}, nil)
	if err != nil {
		return checkpoint.Record{}, false, err
	}
	got, err := s.Get(ctx, r.Key)
	return got, created, err
}

// Get implements checkpoint.Store.
func (s *checkpointStore) Get(ctx context.Context, key string) (checkpoint.Record, error) {
	if s.db.isClosed() {
		return checkpoint.Record{}, errStoreClosed
	}
	rec, err := scanCheckpoint(s.db.rdb.QueryRowContext(ctx, `SELECT `+checkpointCols+` FROM checkpoints WHERE key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return checkpoint.Record{}, checkpoint.ErrNotFound
	}
	return rec, err
}

// SetState implements checkpoint.Store.
func (s *checkpointStore) SetState(ctx context.Context, key string, state checkpoint.State) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		res, err := c.ExecContext(ctx, `UPDATE checkpoints SET state = ? WHERE key = ?`, string(state), key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return checkpoint.ErrNotFound
		}
		return nil
	}, nil)
}

// Checkpoint implements checkpoint.Store: the jobs and the record's move
// are one write of the group commit, undone together if either fails.
func (s *checkpointStore) Checkpoint(key, cursor string, recipients, invalid int, done bool) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
			var err error
			if res, err = s.db.retry.enqueueIn(ctx, jobs, since); err != nil {
				return err
			}
			r, err := c.ExecContext(ctx, `UPDATE checkpoints SET cursor = ?, recipients = recipients + ?, invalid = invalid + ?,
				enqueued = enqueued + ?, done = max(done, ?) WHERE key = ?`, cursor, recipients, invalid, checkpoint.Created(res), b2i(done), key)
			if err != nil {
				return err
			}
			if n, _ := r.RowsAffected(); n == 0 {
				return checkpoint.ErrNotFound
			}
			return nil
		}, func() { s.db.retry.admit(jobs, res) })
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

// Close implements checkpoint.Store: it closes the whole DB.
func (s *checkpointStore) Close() error { return s.db.Close() }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
