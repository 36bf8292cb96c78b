package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/retry"
)

// retryStore is retry.Store on PostgreSQL. Claims use FOR UPDATE SKIP
// LOCKED, so workers on many hosts never take the same job; leases and
// fencing tokens live in the rows.
type retryStore struct {
	db     *DB
	t      string // jobs table
	keys   string
	lanes  string
	closed atomic.Bool
}

var _ retry.Store = (*retryStore)(nil)

const cols = `id, kind, lane, state, priority, run_at, expires_at, max_attempts, attempt,
	lease_token, lease_until, idem_key, last_error, created_at, updated_at, finished_at, payload, skipped`

func (s *retryStore) check(ctx context.Context) error {
	if s.closed.Load() {
		return retry.ErrClosed
	}
	return ctx.Err()
}

// ts maps a zero time to NULL.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func scanJob(r pgx.Row) (*retry.Job, error) {
	var j retry.Job
	var state int16
	var expires, leaseUntil, finished *time.Time
	if err := r.Scan(&j.ID, &j.Kind, &j.Lane, &state, &j.Priority, &j.RunAt, &expires, &j.MaxAttempts, &j.Attempt,
		&j.LeaseToken, &leaseUntil, &j.IdempotencyKey, &j.LastError, &j.CreatedAt, &j.UpdatedAt, &finished, &j.Payload, &j.Skipped); err != nil {
		return nil, err
	}
	j.State = retry.State(state)
	if expires != nil {
		j.ExpiresAt = *expires
	}
	if leaseUntil != nil {
		j.LeaseUntil = *leaseUntil
	}
	if finished != nil {
		j.FinishedAt = *finished
	}
	if j.Payload == nil {
		j.Payload = []byte{}
	}
	return &j, nil
}

func collect(rows pgx.Rows) ([]*retry.Job, error) {
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

// Enqueue implements retry.Store: one transaction; a key is claimed with
// INSERT ... ON CONFLICT DO NOTHING, which waits for a concurrent enqueue of
// the same key to commit, so exactly one job is made per key.
func (s *retryStore) Enqueue(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var res []retry.EnqueueResult
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var err error
		res, err = s.enqueueIn(ctx, tx, jobs, keysSince, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Notify after the commit, outside the writing transaction: a NOTIFY
	// inside it takes a lock at commit that serializes every enqueuing
	// transaction (and their fsyncs) behind each other. A lost
	// notification only delays a worker to its next poll.
	for _, lane := range s.wakeLanes(jobs, res) {
		if _, err := s.db.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel(), lane); err != nil {
			break
		}
	}
	return res, nil
}

// wakeLanes lists the lanes that got jobs due now.
func (s *retryStore) wakeLanes(jobs []*retry.Job, res []retry.EnqueueResult) []string {
	var lanes []string
	for i, j := range jobs {
		if !res[i].Duplicate && j.State == retry.StateAvailable && !slices.Contains(lanes, j.Lane) {
			lanes = append(lanes, j.Lane)
		}
	}
	return lanes
}

// txEnqueuer enqueues in a host's transaction.
type txEnqueuer struct {
	s  *retryStore
	tx pgx.Tx
}

func (e txEnqueuer) Enqueue(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	if err := e.s.check(ctx); err != nil {
		return nil, err
	}
	return e.s.enqueueIn(ctx, e.tx, jobs, keysSince, true)
}

// Tx returns an Enqueuer that writes in the host's transaction tx: with
// retry.Queue.EnqueueTx, jobs exist exactly when the host's own write
// commits, as River allows.
func (db *DB) Tx(tx pgx.Tx) retry.Enqueuer { return txEnqueuer{s: db.retry, tx: tx} }

const insertJob = ` (kind, lane, state, priority, run_at, expires_at, max_attempts,
	idem_key, created_at, updated_at, payload) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) RETURNING id`

func jobArgs(j *retry.Job) []any {
	payload := j.Payload
	if payload == nil {
		payload = []byte{}
	}
	return []any{j.Kind, j.Lane, int16(j.State), j.Priority, j.RunAt, ts(j.ExpiresAt), j.MaxAttempts, j.IdempotencyKey,
		j.CreatedAt, j.UpdatedAt, payload}
}

// enqueueIn inserts jobs in tx; notify sends the wake-ups in tx too (the
// host's transaction: they are delivered at its commit).
func (s *retryStore) enqueueIn(ctx context.Context, tx pgx.Tx, jobs []*retry.Job, keysSince time.Time, notify bool) ([]retry.EnqueueResult, error) {
	res := make([]retry.EnqueueResult, len(jobs))
	keyed := slices.ContainsFunc(jobs, func(j *retry.Job) bool { return j.IdempotencyKey != "" })
	if !keyed {
		// One round trip for the whole batch.
		b := &pgx.Batch{}
		for _, j := range jobs {
			b.Queue(`INSERT INTO `+s.t+insertJob, jobArgs(j)...)
		}
		br := tx.SendBatch(ctx, b)
		for i := range jobs {
			if err := br.QueryRow().Scan(&res[i].ID); err != nil {
				_ = br.Close()
				return nil, err
			}
		}
		if err := br.Close(); err != nil {
			return nil, err
		}
	} else {
		for i, j := range jobs {
			if j.IdempotencyKey != "" {
				tag, err := tx.Exec(ctx, `INSERT INTO `+s.keys+` (key, job_id, created_at, digest) VALUES ($1, 0, $2, $3) ON CONFLICT (key) DO NOTHING`,
					j.IdempotencyKey, j.CreatedAt, j.Digest)
				if err != nil {
					return nil, err
				}
				if tag.RowsAffected() == 0 {
					var id int64
					var at time.Time
					var digest string
					if err := tx.QueryRow(ctx, `SELECT job_id, created_at, digest FROM `+s.keys+` WHERE key = $1 FOR UPDATE`, j.IdempotencyKey).Scan(&id, &at, &digest); err != nil {
						return nil, err
					}
					if !at.Before(keysSince) && retry.Conflicts(digest, j.Digest) {
						return nil, &retry.ConflictError{Index: i, Key: j.IdempotencyKey, ID: id}
					}
					if !at.Before(keysSince) {
						res[i] = retry.EnqueueResult{ID: id, Duplicate: true}
						continue
					}
				}
			}
			if err := tx.QueryRow(ctx, `INSERT INTO `+s.t+insertJob, jobArgs(j)...).Scan(&res[i].ID); err != nil {
				return nil, err
			}
			if j.IdempotencyKey != "" {
				if _, err := tx.Exec(ctx, `UPDATE `+s.keys+` SET job_id = $2, created_at = $3, digest = $4 WHERE key = $1`, j.IdempotencyKey, res[i].ID, j.CreatedAt, j.Digest); err != nil {
					return nil, err
				}
			}
		}
	}
	if notify {
		for _, lane := range s.wakeLanes(jobs, res) {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel(), lane); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

func (s *retryStore) channel() string { return "herald_" + s.db.schema }

// Listen implements retry.Notifier with LISTEN on a dedicated connection,
// reconnecting with backoff when it drops.
func (s *retryStore) Listen(ctx context.Context, wake func(lane string)) error {
	delay := 100 * time.Millisecond
	for {
		err := s.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return nil
		}
		_ = err
		select {
		case <-time.After(delay):
			delay = min(2*delay, 10*time.Second)
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *retryStore) listenOnce(ctx context.Context, wake func(lane string)) error {
	conn, err := s.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// The connection is in LISTEN mode: do not give it back.
		_ = conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel()}.Sanitize()); err != nil {
		return err
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		wake(n.Payload)
	}
}

// Claim implements retry.Store.
func (s *retryStore) Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	if _, err := s.db.pool.Exec(ctx, `UPDATE `+s.t+` SET state = 1 WHERE state = 2 AND lane = $1 AND run_at <= $2`, lane, now); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `UPDATE `+s.t+` SET state = 3, attempt = attempt + 1, lease_token = lease_token + 1,
		lease_until = $3, updated_at = $2
		WHERE id IN (SELECT id FROM `+s.t+` WHERE state = 1 AND lane = $1
			AND NOT EXISTS (SELECT 1 FROM `+s.lanes+` WHERE lane = $1 AND paused)
			ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING `+cols, lane, now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	out, err := collect(rows)
	if err != nil {
		return nil, err
	}
	retry.SortClaimed(out)
	return out, nil
}

// batchLeases runs one statement per item in one round trip and returns
// nil or ErrLeaseLost per item.
func (s *retryStore) batchLeases(ctx context.Context, n int, queue func(b *pgx.Batch, i int)) ([]error, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	for i := range n {
		queue(b, i)
	}
	errs := make([]error, n)
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		for i := range n {
			tag, err := br.Exec()
			if err != nil {
				_ = br.Close()
				return err
			}
			if tag.RowsAffected() == 0 {
				errs[i] = retry.ErrLeaseLost
			}
		}
		return br.Close()
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}

// ExtendLeases implements retry.Store.
func (s *retryStore) ExtendLeases(ctx context.Context, leases []retry.Lease, until time.Time) ([]error, error) {
	return s.batchLeases(ctx, len(leases), func(b *pgx.Batch, i int) {
		b.Queue(`UPDATE `+s.t+` SET lease_until = $1 WHERE id = $2 AND state = 3 AND lease_token = $3`, until, leases[i].ID, leases[i].Token)
	})
}

// Finish implements retry.Store.
func (s *retryStore) Finish(ctx context.Context, outcomes []retry.Outcome) ([]error, error) {
	return s.batchLeases(ctx, len(outcomes), func(b *pgx.Batch, i int) {
		o := &outcomes[i]
		var runAt, finished any
		switch o.State {
		case retry.StateScheduled:
			runAt = o.RunAt
		case retry.StateAvailable:
			runAt = o.At
		default:
			finished = o.At
		}
		uncount := 0
		if o.Uncount {
			uncount = 1
		}
		b.Queue(`UPDATE `+s.t+` SET state = $1, updated_at = $2,
			last_error = CASE WHEN $3 <> '' THEN $3 ELSE last_error END,
			attempt = greatest(attempt - $4, 0), run_at = coalesce($5, run_at), finished_at = $6, lease_until = NULL,
			skipped = $9
			WHERE id = $7 AND state = 3 AND lease_token = $8`,
			int16(o.State), o.At, o.Error, uncount, runAt, finished, o.ID, o.Token, o.Skip && o.State == retry.StateCompleted)
	})
}

// Rescue implements retry.Store.
func (s *retryStore) Rescue(ctx context.Context, now time.Time) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `UPDATE `+s.t+` SET
		state = CASE WHEN attempt >= max_attempts THEN 5 ELSE 1 END,
		finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END,
		run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE $1 END,
		last_error = 'lease expired', lease_until = NULL, updated_at = $1
		WHERE id IN (SELECT id FROM `+s.t+` WHERE state = 3 AND lease_until < $1 FOR UPDATE SKIP LOCKED)
		RETURNING `+cols, now)
	if err != nil {
		return nil, err
	}
	out, err := collect(rows)
	slices.SortFunc(out, func(a, b *retry.Job) int { return int(a.ID - b.ID) })
	return out, err
}

// Get implements retry.Store.
func (s *retryStore) Get(ctx context.Context, id int64) (*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	j, err := scanJob(s.db.pool.QueryRow(ctx, `SELECT `+cols+` FROM `+s.t+` WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, retry.ErrNotFound
	}
	return j, err
}

// where renders f (Limit aside) as SQL conditions, numbering from n.
func where(f retry.Filter, n int, extra ...string) (string, []any) {
	conds := append([]string{"true"}, extra...)
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, n+len(args)))
	}
	if f.AfterID > 0 {
		add("id > $%d", f.AfterID)
	}
	if f.Lane != "" {
		add("lane = $%d", f.Lane)
	}
	if f.Kind != "" {
		add("kind = $%d", f.Kind)
	}
	if len(f.IDs) > 0 {
		add("id = ANY($%d)", f.IDs)
	}
	if len(f.States) > 0 {
		states := make([]int16, len(f.States))
		for i, st := range f.States {
			states[i] = int16(st)
		}
		add("state = ANY($%d)", states)
	}
	return strings.Join(conds, " AND "), args
}

// List implements retry.Store.
func (s *retryStore) List(ctx context.Context, f retry.Filter) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	cond, args := where(f, 0)
	q := `SELECT ` + cols + ` FROM ` + s.t + ` WHERE ` + cond + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows)
}

func (s *retryStore) exec(ctx context.Context, q string, args ...any) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	tag, err := s.db.pool.Exec(ctx, q, args...)
	return int(tag.RowsAffected()), err
}

// Requeue implements retry.Store.
func (s *retryStore) Requeue(ctx context.Context, f retry.Filter, now time.Time) (int, error) {
	cond, args := where(f, 1, "state IN (5, 6)")
	return s.exec(ctx, `UPDATE `+s.t+` SET state = 1, attempt = 0, run_at = $1, updated_at = $1, finished_at = NULL WHERE `+cond,
		append([]any{now}, args...)...)
}

// Purge implements retry.Store.
func (s *retryStore) Purge(ctx context.Context, f retry.Filter) (int, error) {
	cond, args := where(f, 0, "state IN (4, 5, 6)")
	return s.exec(ctx, `DELETE FROM `+s.t+` WHERE `+cond, args...)
}

// SetPaused implements retry.Store.
func (s *retryStore) SetPaused(ctx context.Context, lane string, paused bool) error {
	_, err := s.exec(ctx, `INSERT INTO `+s.lanes+` (lane, paused) VALUES ($1, $2)
		ON CONFLICT (lane) DO UPDATE SET paused = excluded.paused`, lane, paused)
	return err
}

// Stats implements retry.Store.
func (s *retryStore) Stats(ctx context.Context, now time.Time) ([]retry.LaneStats, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT lane, state, min(run_at), count(*) FROM `+s.t+`
		GROUP BY lane, state, (state = 2 AND run_at > $1)`, now)
	if err != nil {
		return nil, err
	}
	var agg []retry.StatsRow
	for rows.Next() {
		var r retry.StatsRow
		var st int16
		if err := rows.Scan(&r.Lane, &st, &r.OldestRunAt, &r.Count); err != nil {
			rows.Close()
			return nil, err
		}
		r.State = retry.State(st)
		agg = append(agg, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var paused []string
	prows, err := s.db.pool.Query(ctx, `SELECT lane FROM `+s.lanes+` WHERE paused`)
	if err != nil {
		return nil, err
	}
	paused, err = pgx.CollectRows(prows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return retry.BuildStats(now, agg, paused), nil
}

// Prune implements retry.Store.
func (s *retryStore) Prune(ctx context.Context, finishedBefore, keysBefore time.Time) (int, error) {
	n, err := s.exec(ctx, `DELETE FROM `+s.t+` WHERE state IN (4, 6) AND finished_at < $1`, finishedBefore)
	if err != nil {
		return n, err
	}
	_, err = s.exec(ctx, `DELETE FROM `+s.keys+` WHERE created_at < $1`, keysBefore)
	return n, err
}

// Close implements retry.Store. The pool is the host's: it stays open.
func (s *retryStore) Close() error {
	s.closed.Store(true)
	return nil
}

// JobIDByKey implements retry.KeyFinder.
func (s *retryStore) JobIDByKey(ctx context.Context, key string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var id int64
	err := s.db.pool.QueryRow(ctx, `SELECT job_id FROM `+s.keys+` WHERE key = $1`, key).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, retry.ErrNotFound
	}
	return id, err
}
