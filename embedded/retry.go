package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/retry"
)

// retryStore is the retry.Store of a DB.
type retryStore struct {
	db *DB

	// Statements prepared on the writer connection; used only inside ops.
	insJob, getKey, putKey, promote, ready, markRunning, finish, extend *sql.Stmt

	mu     sync.RWMutex
	paused map[string]bool // a cache of retry_lanes: only this process writes it
}

var _ retry.Store = (*retryStore)(nil)

const jobCols = `id, kind, lane, state, priority, run_at, expires_at, max_attempts, attempt,
	lease_token, lease_until, idem_key, last_error, created_at, updated_at, finished_at, payload, skipped`

func newRetryStore(ctx context.Context, db *DB) (*retryStore, error) {
	s := &retryStore{db: db, paused: map[string]bool{}}
	prep := func(dst **sql.Stmt, q string) error {
		st, err := db.w.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		*dst = st
		return nil
	}
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&s.insJob, `INSERT INTO retry_jobs (kind, lane, state, priority, run_at, expires_at, max_attempts,
			idem_key, created_at, updated_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)`},
		{&s.getKey, `SELECT job_id, created_at, digest FROM retry_keys WHERE key = ?`},
		{&s.putKey, `INSERT OR REPLACE INTO retry_keys (key, job_id, created_at, digest) VALUES (?,?,?,?)`},
		{&s.promote, `UPDATE retry_jobs SET state = 1 WHERE state = 2 AND lane = ? AND run_at <= ?`},
		// Claim reads the best due rows and updates them one by one: an
		// UPDATE ... WHERE id IN (subquery) RETURNING builds two ephemeral
		// tables per call, which cost more than the claim itself.
		{&s.ready, `SELECT ` + jobCols + ` FROM retry_jobs WHERE state = 1 AND lane = ?
			ORDER BY priority DESC, run_at, id LIMIT ?`},
		{&s.markRunning, `UPDATE retry_jobs SET state = 3, attempt = attempt + 1, lease_token = lease_token + 1,
			lease_until = ?, updated_at = ? WHERE id = ?`},
		{&s.finish, `UPDATE retry_jobs SET state = ?, updated_at = ?,
			last_error = CASE WHEN ? <> '' THEN ? ELSE last_error END,
			attempt = max(attempt - ?, 0), run_at = coalesce(?, run_at), finished_at = ?, lease_until = 0, skipped = ?
			WHERE id = ? AND state = 3 AND lease_token = ?`},
		{&s.extend, `UPDATE retry_jobs SET lease_until = ? WHERE id = ? AND state = 3 AND lease_token = ?`},
	} {
		if err := prep(p.dst, p.q); err != nil {
			return nil, err
		}
	}
	rows, err := db.w.QueryContext(ctx, `SELECT lane FROM retry_lanes WHERE paused = 1`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var lane string
		if err := rows.Scan(&lane); err != nil {
			_ = rows.Close()
			return nil, err
		}
		s.paused[lane] = true
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	// No other process can hold leases on this file (it is locked), so the
	// jobs left running belong to a process that died: hand them back now
	// instead of waiting for their leases to lapse.
	now := time.Now().UnixNano()
	res, err := db.w.ExecContext(ctx, `UPDATE retry_jobs SET
		state = CASE WHEN attempt >= max_attempts THEN 5 ELSE 1 END,
		finished_at = CASE WHEN attempt >= max_attempts THEN ? ELSE 0 END,
		last_error = 'worker stopped while running it', lease_until = 0, updated_at = ?
		WHERE state = 3`, now, now)
	if err != nil {
		return nil, err
	}
	n, _ := res.RowsAffected()
	db.recovered = int(n)
	if n > 0 {
		db.cfg.Logger.Warn("embedded: handed back jobs left running by a stopped process", "jobs", n)
	}
	return s, nil
}

func (s *retryStore) closeStmts() {
	for _, st := range []*sql.Stmt{s.insJob, s.getKey, s.putKey, s.promote, s.ready, s.markRunning, s.finish, s.extend} {
		if st != nil {
			_ = st.Close()
		}
	}
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

type scanner interface{ Scan(...any) error }

func scanJob(r scanner) (*retry.Job, error) {
	var j retry.Job
	var runAt, expiresAt, leaseUntil, created, updated, finished int64
	var state, skipped int
	if err := r.Scan(&j.ID, &j.Kind, &j.Lane, &state, &j.Priority, &runAt, &expiresAt, &j.MaxAttempts, &j.Attempt,
		&j.LeaseToken, &leaseUntil, &j.IdempotencyKey, &j.LastError, &created, &updated, &finished, &j.Payload, &skipped); err != nil {
		return nil, err
	}
	j.Skipped = skipped != 0
	j.State = retry.State(state)
	j.RunAt, j.ExpiresAt, j.LeaseUntil = fromNanos(runAt), fromNanos(expiresAt), fromNanos(leaseUntil)
	j.CreatedAt, j.UpdatedAt, j.FinishedAt = fromNanos(created), fromNanos(updated), fromNanos(finished)
	if j.Payload == nil {
		j.Payload = []byte{}
	}
	return &j, nil
}

func (s *retryStore) read(ctx context.Context) error {
	if s.db.isClosed() {
		return errStoreClosed
	}
	return ctx.Err()
}

// Enqueue implements retry.Store.
func (s *retryStore) Enqueue(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	var res []retry.EnqueueResult
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		var err error
		res, err = s.enqueueIn(ctx, jobs, keysSince)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// enqueueIn inserts jobs inside a write (the writer's transaction), so
// another write of the same group (a campaign's checkpoint) commits with
// them or not at all.
func (s *retryStore) enqueueIn(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	res := make([]retry.EnqueueResult, len(jobs))
	since := keysSince.UnixNano()
	err := func() error {
		for i, j := range jobs {
			if j.IdempotencyKey != "" {
				var id, at int64
				var digest string
				err := s.getKey.QueryRowContext(ctx, j.IdempotencyKey).Scan(&id, &at, &digest)
				switch {
				case err == nil && at >= since && retry.Conflicts(digest, j.Digest):
					// Returned from inside the group: the writer undoes
					// this call's inserts and keeps the others'.
					return &retry.ConflictError{Index: i, Key: j.IdempotencyKey, ID: id}
				case err == nil && at >= since:
					res[i] = retry.EnqueueResult{ID: id, Duplicate: true}
					continue
				case err != nil && !errors.Is(err, sql.ErrNoRows):
					return err
				}
			}
			payload := j.Payload
			if payload == nil {
				payload = []byte{}
			}
			r, err := s.insJob.ExecContext(ctx, j.Kind, j.Lane, int(j.State), j.Priority, nanos(j.RunAt), nanos(j.ExpiresAt),
				j.MaxAttempts, j.IdempotencyKey, nanos(j.CreatedAt), nanos(j.UpdatedAt), payload)
			if err != nil {
				return err
			}
			id, err := r.LastInsertId()
			if err != nil {
				return err
			}
			if j.IdempotencyKey != "" {
				if _, err := s.putKey.ExecContext(ctx, j.IdempotencyKey, id, nanos(j.CreatedAt), j.Digest); err != nil {
					return err
				}
			}
			res[i] = retry.EnqueueResult{ID: id}
		}
		return nil
	}()
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Claim implements retry.Store.
func (s *retryStore) Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*retry.Job, error) {
	s.mu.RLock()
	paused := s.paused[lane]
	s.mu.RUnlock()
	if paused || limit <= 0 {
		return nil, s.read(ctx)
	}
	var out []*retry.Job
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		out = out[:0]
		n := now.UnixNano()
		if _, err := s.promote.ExecContext(ctx, lane, n); err != nil {
			return err
		}
		rows, err := s.ready.QueryContext(ctx, lane, limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				_ = rows.Close()
				return err
			}
			out = append(out, j)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		until := nanos(leaseUntil)
		for _, j := range out {
			if _, err := s.markRunning.ExecContext(ctx, until, n, j.ID); err != nil {
				return err
			}
			j.State, j.Attempt, j.LeaseToken = retry.StateRunning, j.Attempt+1, j.LeaseToken+1
			j.LeaseUntil, j.UpdatedAt = fromNanos(until), now
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	retry.SortClaimed(out)
	return out, nil
}

// ExtendLeases implements retry.Store.
func (s *retryStore) ExtendLeases(ctx context.Context, leases []retry.Lease, until time.Time) ([]error, error) {
	errs := make([]error, len(leases))
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		for i, l := range leases {
			r, err := s.extend.ExecContext(ctx, nanos(until), l.ID, l.Token)
			if err != nil {
				return err
			}
			errs[i] = lostUnless(r)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return errs, nil
}

func lostUnless(r sql.Result) error {
	if n, err := r.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return retry.ErrLeaseLost
	}
	return nil
}

// Finish implements retry.Store.
func (s *retryStore) Finish(ctx context.Context, outcomes []retry.Outcome) ([]error, error) {
	errs := make([]error, len(outcomes))
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		for i := range outcomes {
			o := &outcomes[i]
			var runAt any
			var finished int64
			switch o.State {
			case retry.StateScheduled:
				runAt = nanos(o.RunAt)
			case retry.StateAvailable:
				runAt = nanos(o.At)
			default:
				finished = nanos(o.At)
			}
			uncount := 0
			if o.Uncount {
				uncount = 1
			}
			skipped := 0
			if o.Skip && o.State == retry.StateCompleted {
				skipped = 1
			}
			r, err := s.finish.ExecContext(ctx, int(o.State), nanos(o.At), o.Error, o.Error, uncount, runAt, finished, skipped, o.ID, o.Token)
			if err != nil {
				return err
			}
			errs[i] = lostUnless(r)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return errs, nil
}

// Rescue implements retry.Store.
func (s *retryStore) Rescue(ctx context.Context, now time.Time) ([]*retry.Job, error) {
	var out []*retry.Job
	n := now.UnixNano()
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		out = out[:0]
		rows, err := c.QueryContext(ctx, `UPDATE retry_jobs SET
			state = CASE WHEN attempt >= max_attempts THEN 5 ELSE 1 END,
			finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE 0 END,
			run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE ?1 END,
			last_error = 'lease expired', lease_until = 0, updated_at = ?1
			WHERE id IN (SELECT id FROM retry_jobs WHERE state = 3 AND lease_until < ?1)
			RETURNING `+jobCols, n)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return rows.Err()
	}, nil)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *retry.Job) int { return int(a.ID - b.ID) })
	return out, nil
}

// Get implements retry.Store.
func (s *retryStore) Get(ctx context.Context, id int64) (*retry.Job, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	j, err := scanJob(s.db.rdb.QueryRowContext(ctx, `SELECT `+jobCols+` FROM retry_jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, retry.ErrNotFound
	}
	if err != nil {
		return nil, s.db.classify(err)
	}
	return j, nil
}

// where renders f (Limit aside) as SQL conditions joined with AND.
func where(f retry.Filter, extra ...string) (string, []any) {
	conds := append([]string{"1=1"}, extra...)
	var args []any
	if f.AfterID > 0 {
		conds = append(conds, "id > ?")
		args = append(args, f.AfterID)
	}
	if f.Lane != "" {
		conds = append(conds, "lane = ?")
		args = append(args, f.Lane)
	}
	if f.Kind != "" {
		conds = append(conds, "kind = ?")
		args = append(args, f.Kind)
	}
	if len(f.IDs) > 0 {
		conds = append(conds, "id IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.IDs)), ",")+")")
		for _, id := range f.IDs {
			args = append(args, id)
		}
	}
	if len(f.States) > 0 {
		conds = append(conds, "state IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.States)), ",")+")")
		for _, st := range f.States {
			args = append(args, int(st))
		}
	}
	return strings.Join(conds, " AND "), args
}

// List implements retry.Store.
func (s *retryStore) List(ctx context.Context, f retry.Filter) ([]*retry.Job, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	cond, args := where(f)
	q := `SELECT ` + jobCols + ` FROM retry_jobs WHERE ` + cond + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []*retry.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (s *retryStore) exec(ctx context.Context, q string, args ...any) (int, error) {
	var n int64
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		r, err := c.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	}, nil)
	return int(n), err
}

// Requeue implements retry.Store.
func (s *retryStore) Requeue(ctx context.Context, f retry.Filter, now time.Time) (int, error) {
	cond, args := where(f, "state IN (5, 6)")
	n := now.UnixNano()
	return s.exec(ctx, `UPDATE retry_jobs SET state = 1, attempt = 0, run_at = ?, updated_at = ?, finished_at = 0
		WHERE `+cond, append([]any{n, n}, args...)...)
}

// Purge implements retry.Store.
func (s *retryStore) Purge(ctx context.Context, f retry.Filter) (int, error) {
	cond, args := where(f, "state IN (4, 5, 6)")
	return s.exec(ctx, `DELETE FROM retry_jobs WHERE `+cond, args...)
}

// SetPaused implements retry.Store.
func (s *retryStore) SetPaused(ctx context.Context, lane string, paused bool) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `INSERT INTO retry_lanes (lane, paused) VALUES (?, ?)
			ON CONFLICT (lane) DO UPDATE SET paused = excluded.paused`, lane, paused)
		return err
	}, func() {
		s.mu.Lock()
		s.paused[lane] = paused
		s.mu.Unlock()
	})
}

// Stats implements retry.Store.
func (s *retryStore) Stats(ctx context.Context, now time.Time) ([]retry.LaneStats, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT lane, state, min(run_at), count(*) FROM retry_jobs
		GROUP BY lane, state, state = 2 AND run_at > ?`, now.UnixNano())
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var agg []retry.StatsRow
	for rows.Next() {
		var r retry.StatsRow
		var st int
		var minRunAt int64
		if err := rows.Scan(&r.Lane, &st, &minRunAt, &r.Count); err != nil {
			return nil, err
		}
		r.State, r.OldestRunAt = retry.State(st), fromNanos(minRunAt)
		agg = append(agg, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	var paused []string
	for lane, p := range s.paused {
		if p {
			paused = append(paused, lane)
		}
	}
	s.mu.RUnlock()
	return retry.BuildStats(now, agg, paused), nil
}

// Prune implements retry.Store.
func (s *retryStore) Prune(ctx context.Context, finishedBefore, keysBefore time.Time) (int, error) {
	// Delete in chunks so one prune never holds the writer for long.
	const chunk = 5000
	total := 0
	for {
		n, err := s.exec(ctx, `DELETE FROM retry_jobs WHERE id IN (SELECT id FROM retry_jobs
			WHERE state IN (4, 6) AND finished_at < ? LIMIT ?)`, finishedBefore.UnixNano(), chunk)
		total += n
		if err != nil {
			return total, err
		}
		if n < chunk {
			break
		}
	}
	for {
		n, err := s.exec(ctx, `DELETE FROM retry_keys WHERE key IN (SELECT key FROM retry_keys
			WHERE created_at < ? LIMIT ?)`, keysBefore.UnixNano(), chunk)
		if err != nil {
			return total, err
		}
		if n < chunk {
			break
		}
	}
	return total, nil
}

// Close implements retry.Store: it closes the whole DB.
func (s *retryStore) Close() error { return s.db.Close() }

// JobIDByKey implements retry.KeyFinder.
func (s *retryStore) JobIDByKey(ctx context.Context, key string) (int64, error) {
	if err := s.read(ctx); err != nil {
		return 0, err
	}
	var id int64
	err := s.db.rdb.QueryRowContext(ctx, `SELECT job_id FROM retry_keys WHERE key = ?`, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, retry.ErrNotFound
	}
	if err != nil {
		return 0, s.db.classify(err)
	}
	return id, nil
}
