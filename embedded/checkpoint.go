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

const checkpointCols = `key, spec, state, cursor, recipients, enqueued, invalid, done, created, staged, drained, cancelled, pages`

func scanCheckpoint(r scanner) (checkpoint.Record, error) {
	var rec checkpoint.Record
	var state string
	var done int
	var created int64
	if err := r.Scan(&rec.Key, &rec.Spec, &state, &rec.Cursor, &rec.Recipients, &rec.Enqueued, &rec.Invalid, &done, &created,
		&rec.Staged, &rec.Drained, &rec.Cancelled, &rec.Pages); err != nil {
		return checkpoint.Record{}, err
	}
	rec.State, rec.Done, rec.Created = checkpoint.State(state), done == 1, fromNanos(created)
	return rec, nil
}

// Create implements checkpoint.Store.
func (s *checkpointStore) Create(ctx context.Context, r checkpoint.Record) (checkpoint.Record, bool, error) {
	created := false
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		res, err := c.ExecContext(ctx, `INSERT INTO checkpoints (`+checkpointCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0)
			ON CONFLICT (key) DO NOTHING`,
			r.Key, spec(r.Spec), string(r.State), r.Cursor, r.Recipients, r.Enqueued, r.Invalid, b2i(r.Done), nanos(r.Created))
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

// List implements checkpoint.Store.
func (s *checkpointStore) List(ctx context.Context, after string, limit int) ([]checkpoint.Record, error) {
	if s.db.isClosed() {
		return nil, errStoreClosed
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT `+checkpointCols+` FROM checkpoints WHERE key > ? ORDER BY key LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []checkpoint.Record
	for rows.Next() {
		rec, err := scanCheckpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, rows.Err()
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
		if state != checkpoint.Cancelled {
			return nil
		}
		if _, err := c.ExecContext(ctx, `UPDATE checkpoints SET cancelled = cancelled +
			(SELECT coalesce(sum(count - off), 0) FROM checkpoint_pages WHERE key = ?1) WHERE key = ?1`, key); err != nil {
			return err
		}
		_, err = c.ExecContext(ctx, `DELETE FROM checkpoint_pages WHERE key = ?`, key)
		return err
	}, nil)
}

// Stage implements checkpoint.Store: the page and the record's move are
// one write of the group commit.
func (s *checkpointStore) Stage(ctx context.Context, key, cursor string, recipients, invalid int, done bool, data []byte, count int) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		var seq int64
		st, err := s.db.wprep(ctx, `UPDATE checkpoints SET cursor = ?, recipients = recipients + ?, invalid = invalid + ?,
			done = max(done, ?), staged = staged + ?, pages = pages + ? WHERE key = ? RETURNING pages`)
		if err != nil {
			return err
		}
		err = st.QueryRowContext(ctx, cursor, recipients, invalid, b2i(done), count, b2i(count > 0), key).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return checkpoint.ErrNotFound
		}
		if err != nil || count == 0 {
			return err
		}
		_, err = s.db.wexec(ctx, `INSERT INTO checkpoint_pages (key, seq, count, off, data) VALUES (?, ?, ?, 0, ?)`, key, seq, count, data)
		return err
	}, nil)
}

// Claim implements checkpoint.Store.
func (s *checkpointStore) Claim(ctx context.Context, key, owner string, now, until time.Time) (bool, error) {
	ok := false
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		res, err := c.ExecContext(ctx, `UPDATE checkpoints SET owner = ?1, lease_until = ?2 WHERE key = ?3 AND (owner = ?1 OR lease_until <= ?4)`,
			owner, nanos(until), key, nanos(now))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		if ok = n == 1; ok {
			return nil
		}
		var one int
		if err := c.QueryRowContext(ctx, `SELECT 1 FROM checkpoints WHERE key = ?`, key).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return checkpoint.ErrNotFound
		}
		return nil
	}, nil)
	return ok, err
}

// Pages implements checkpoint.Store.
func (s *checkpointStore) Pages(ctx context.Context, key string, after int64, limit int) ([]checkpoint.Page, error) {
	if s.db.isClosed() {
		return nil, errStoreClosed
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT seq, count, off, data FROM checkpoint_pages WHERE key = ? AND seq > ? ORDER BY seq LIMIT ?`, key, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []checkpoint.Page
	for rows.Next() {
		var p checkpoint.Page
		if err := rows.Scan(&p.Seq, &p.Count, &p.Offset, &p.Data); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Drain implements checkpoint.Store: the jobs and the page's move are one
// write of the group commit.
func (s *checkpointStore) Drain(key string, seq int64, offset, invalid int) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
			var count, off int
			st, err := s.db.wprep(ctx, `SELECT count, off FROM checkpoint_pages WHERE key = ? AND seq = ?`)
			if err != nil {
				return err
			}
			err = st.QueryRowContext(ctx, key, seq).Scan(&count, &off)
			if errors.Is(err, sql.ErrNoRows) || err == nil && (offset <= off || offset > count) {
				return checkpoint.ErrNotFound
			}
			if err != nil {
				return err
			}
			if res, err = s.db.retry.enqueueIn(ctx, jobs, since); err != nil {
				return err
			}
			if offset == count {
				_, err = s.db.wexec(ctx, `DELETE FROM checkpoint_pages WHERE key = ? AND seq = ?`, key, seq)
			} else {
				_, err = s.db.wexec(ctx, `UPDATE checkpoint_pages SET off = ? WHERE key = ? AND seq = ?`, offset, key, seq)
			}
			if err != nil {
				return err
			}
			_, err = s.db.wexec(ctx, `UPDATE checkpoints SET enqueued = enqueued + ?, drained = drained + ?, invalid = invalid + ? WHERE key = ?`,
				checkpoint.Created(res), offset-off, invalid, key)
			return err
		}, func() { s.db.retry.admit(jobs, res) })
		if err != nil {
			return nil, err
		}
		return res, nil
	})
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
			r, err := s.db.wexec(ctx, `UPDATE checkpoints SET cursor = ?, recipients = recipients + ?, invalid = invalid + ?,
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

// spec is a record's Spec as stored: never NULL.
func spec(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
