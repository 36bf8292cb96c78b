package embedded

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/retry"
)

// retryStore is the retry.Store of a DB.
//
// The file belongs to this process alone (Open holds its lock), so the
// queue's live state — which jobs are ready, scheduled or running, in
// what order, under which lease — is kept in memory (memq) and SQLite is
// the durable record of what must survive: enqueues, outcomes, pauses.
// A claim is a few heap operations and one append to the claim log (see
// claimLog); it never waits for the writer. Open rebuilds the memory
// state from the file.
type retryStore struct {
	db *DB

	// Statements prepared on the writer connection; used only inside ops.
	getKey, getKeys, finish, rescue *sql.Stmt
	insJobs, putKeys                *multiInsert
	byIDs                           *sql.Stmt // on the readers' pool
	nextID                          int64     // the next job's ID (the writer's)

	mu      sync.Mutex
	lanes   map[string]*laneQ
	running map[int64]*leaseRec
	epoch   int64 // this open's number: the high bits of every lease token
	seq     int64 // lease tokens handed out in this open
	// cache holds jobs enqueued by this process until their first claim
	// (with Job.Decoded), within cacheLimit bytes: such a claim reads
	// nothing from the file.
	cache      map[int64]*retry.Job
	cacheBytes int
	claims     *claimLog

	// window is how many waiting jobs of each lane and state memory holds
	// (see laneQ); refills read the rest back in the background (bg).
	window  int
	bg      sync.WaitGroup
	closing bool // no new background refill (under mu)
}

// defaultWindow: 32,768 entries of 24 bytes per lane and state, so the
// memory of a backlog is flat past it, and Open reads no more than it.
const defaultWindow = 1 << 15

// cacheLimit bounds the jobs kept in memory for their first claim, and
// cacheAhead keeps only those likely to be claimed soon: a job that joins
// a lane with more waiting is read from the file when its turn comes, so
// a backlog costs 24 bytes per job, not the job.
const (
	cacheLimit = 8 << 20
	cacheAhead = 4096
)

// tokenBits are the low bits of a lease token: the claim's number within
// one open. The open's epoch fills the bits above, so every token is
// greater than any handed out by an earlier open of the file.
const tokenBits = 40

var _ retry.Store = (*retryStore)(nil)

const jobCols = `id, kind, lane, state, priority, run_at, expires_at, max_attempts, attempt,
	lease_token, lease_until, idem_key, last_error, created_at, updated_at, finished_at, payload, skipped`

func newRetryStore(ctx context.Context, db *DB) (*retryStore, error) {
	s := &retryStore{db: db, lanes: map[string]*laneQ{}, running: map[int64]*leaseRec{}, cache: map[int64]*retry.Job{},
		window: cmp.Or(db.cfg.queueWindow, defaultWindow)}
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
		{&s.getKey, `SELECT job_id, created_at, digest FROM retry_keys WHERE key = ?`},
		{&s.getKeys, `SELECT key, job_id, created_at, digest FROM retry_keys WHERE key IN (SELECT value FROM json_each(?))`},
		// The lease was checked in memory: an outcome writes by ID.
		{&s.finish, `UPDATE retry_jobs SET state = ?, updated_at = ?,
			last_error = CASE WHEN ? <> '' THEN ? ELSE last_error END,
			attempt = ?, lease_token = ?, run_at = coalesce(?, run_at), finished_at = ?, lease_until = 0, skipped = ?
			WHERE id = ?`},
		{&s.rescue, `UPDATE retry_jobs SET state = ?, attempt = ?, lease_token = ?, finished_at = ?, run_at = ?,
			last_error = 'lease expired', lease_until = 0, updated_at = ? WHERE id = ? RETURNING ` + jobCols},
	} {
		if err := prep(p.dst, p.q); err != nil {
			return nil, err
		}
	}
	var err error
	if s.insJobs, err = s.prepareMulti(ctx, `INSERT INTO retry_jobs (id, kind, lane, state, priority, run_at, expires_at,
		max_attempts, idem_key, created_at, updated_at, payload) VALUES `, `(?,?,?,?,?,?,?,?,?,?,?,?)`); err != nil {
		return nil, err
	}
	if s.putKeys, err = s.prepareMulti(ctx, `INSERT OR REPLACE INTO retry_keys (key, job_id, created_at, digest) VALUES `, `(?,?,?,?)`); err != nil {
		return nil, err
	}
	if s.byIDs, err = db.rdb.PrepareContext(ctx, `SELECT `+jobCols+` FROM retry_jobs WHERE id IN (SELECT value FROM json_each(?))`); err != nil {
		return nil, err
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// load rebuilds the memory state from the file: the paused lanes, the
// jobs a stopped process left running (handed back, their attempt
// counted), a new epoch for lease tokens, and the ready and scheduled
// jobs of every lane, read in index order (a sorted array is a heap).
func (s *retryStore) load(ctx context.Context) error {
	db := s.db
	rows, err := db.w.QueryContext(ctx, `SELECT lane FROM retry_lanes WHERE paused = 1`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var lane string
		if err := rows.Scan(&lane); err != nil {
			_ = rows.Close()
			return err
		}
		s.lane(lane).paused = true
	}
	if err := rows.Close(); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	// Jobs in state 3 were left by a version of herald that wrote claims;
	// jobs in the claim log by this one. No other process can hold leases
	// on this file (it is locked), so both belong to a process that died:
	// hand them back now, the attempt counted, instead of waiting for
	// their leases to lapse.
	claimed, err := readClaimLog(db.path + claimLogSuffix)
	if err != nil {
		return err
	}
	if err := s.handBack(ctx, claimed, now); err != nil {
		return err
	}
	if err := db.w.QueryRowContext(ctx, `INSERT INTO retry_meta (key, value) VALUES ('epoch', 1)
		ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value`).Scan(&s.epoch); err != nil {
		return err
	}
	if err := db.w.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) + 1 FROM retry_jobs`).Scan(&s.nextID); err != nil {
		return err
	}
	if s.epoch >= 1<<(63-tokenBits) {
		return fmt.Errorf("embedded: lease token epochs used up (%d opens)", s.epoch)
	}
	if s.claims, err = openClaimLog(db.path+claimLogSuffix, db.cfg.Logger); err != nil {
		return err
	}
	// The rows are read through the driver itself: database/sql's Scan
	// conversions would cost more than the read.
	return db.w.Raw(func(dc any) error {
		qc, ok := dc.(driver.QueryerContext)
		if !ok {
			return errors.New("embedded: the SQLite driver cannot query")
		}
		for _, state := range []int{1, 2} {
			lanes, err := distinctLanes(ctx, qc, state)
			if err != nil {
				return err
			}
			for _, lane := range lanes {
				if err := s.loadWindow(ctx, qc, lane, state == 2); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Reading a lane's waiting jobs in queue order: the first window at
// Open, the next ones past the watermark at a refill. (lane, run_at)
// index entries end with the row ID, so the scheduled ones come in
// (run_at, id) order too.
const (
	qReadyFirst = `SELECT id, priority, run_at FROM retry_jobs WHERE state = 1 AND lane = ?1
		ORDER BY priority DESC, run_at, id LIMIT ?2`
	qReadySame = `SELECT id, priority, run_at FROM retry_jobs WHERE state = 1 AND lane = ?1
		AND priority = ?3 AND (run_at, id) > (?4, ?5) ORDER BY run_at, id LIMIT ?2`
	qReadyLower = `SELECT id, priority, run_at FROM retry_jobs WHERE state = 1 AND lane = ?1
		AND priority < ?3 ORDER BY priority DESC, run_at, id LIMIT ?2`
	qSchedFirst = `SELECT id, priority, run_at FROM retry_jobs WHERE state = 2 AND lane = ?1
		ORDER BY run_at, id LIMIT ?2`
	qSchedAfter = `SELECT id, priority, run_at FROM retry_jobs WHERE state = 2 AND lane = ?1
		AND (run_at, id) > (?4, ?5) ORDER BY run_at, id LIMIT ?2`
	qCount = `SELECT count(*) FROM retry_jobs WHERE state = ?2 AND lane = ?1`
)

// loadWindow reads the first window of a lane's ready or scheduled jobs
// at Open, and counts the rest.
func (s *retryStore) loadWindow(ctx context.Context, qc driver.QueryerContext, lane string, sched bool) error {
	l := s.lane(lane)
	h, w := l.side(sched)
	q, state := qReadyFirst, int64(1)
	if sched {
		q, state = qSchedFirst, 2
	}
	rows, err := readEntries(ctx, qc, q, h.e, lane, int64(s.window))
	if err != nil {
		return err
	}
	h.e = rows // a sorted array is a heap
	if len(rows) < s.window {
		return nil
	}
	var n []driver.Value
	if n, err = queryRow(ctx, qc, qCount, lane, state); err != nil {
		return err
	}
	total, _ := n[0].(int64)
	w.over, w.wm, w.off = true, rows[len(rows)-1], int(total)-len(rows)
	return nil
}

// queryRow returns the one row of query.
func queryRow(ctx context.Context, qc driver.QueryerContext, query string, args ...any) ([]driver.Value, error) {
	rows, err := qc.QueryContext(ctx, query, namedValues(args))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(dest); err != nil {
		return nil, err
	}
	return dest, nil
}

func namedValues(args []any) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

// eachRow calls fn with every row of query (of cols columns), read
// through the driver itself.
func eachRow(ctx context.Context, qc driver.QueryerContext, query string, cols int, fn func([]driver.Value) error, args ...any) error {
	rows, err := qc.QueryContext(ctx, query, namedValues(args))
	if err != nil {
		return err
	}
	defer rows.Close()
	dest := make([]driver.Value, cols)
	for {
		if err := rows.Next(dest); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(dest); err != nil {
			return err
		}
	}
}

// readEntries appends the (id, priority, run_at) rows of query to dst.
func readEntries(ctx context.Context, qc driver.QueryerContext, query string, dst []qentry, args ...any) ([]qentry, error) {
	err := eachRow(ctx, qc, query, 3, func(v []driver.Value) error {
		id, ok1 := v[0].(int64)
		prio, ok2 := v[1].(int64)
		runAt, ok3 := v[2].(int64)
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("embedded: a job row is not (int, int, int): %T %T %T", v[0], v[1], v[2])
		}
		dst = append(dst, qentry{id: id, prio: int32(prio), runAt: runAt})
		return nil
	}, args...)
	return dst, err
}

// refill reads a lane's next waiting jobs past the watermark into memory
// (the caller has set w.refilled). It is a write of the group commit
// although it only reads: the writer runs it between two writes, and its
// result joins memory in its after-commit hook, in the same order as
// every enqueue's and outcome's — so a job is read back exactly when
// memory does not hold it. A refill whose watermark was moved back
// meanwhile (a trim) is dropped; the next Claim asks again.
func (s *retryStore) refill(ctx context.Context, lane string, sched bool, atLeast int) error {
	var got []qentry
	var gen, want int
	var from qentry
	end := func() {
		_, w := s.lane(lane).side(sched)
		if w.refilled != nil {
			close(w.refilled)
			w.refilled = nil
		}
	}
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		s.mu.Lock()
		h, w := s.lane(lane).side(sched)
		from, gen, want = w.wm, w.gen, max(2*s.window, atLeast)-h.len()
		over := w.over
		s.mu.Unlock()
		got = got[:0]
		if !over || want <= 0 {
			return nil
		}
		return c.Raw(func(dc any) error {
			qc, ok := dc.(driver.QueryerContext)
			if !ok {
				return errors.New("embedded: the SQLite driver cannot query")
			}
			var err error
			if sched {
				got, err = readEntries(ctx, qc, qSchedAfter, got, lane, int64(want), nil, from.runAt, from.id)
				return err
			}
			if got, err = readEntries(ctx, qc, qReadySame, got, lane, int64(want), int64(from.prio), from.runAt, from.id); err != nil {
				return err
			}
			if len(got) < want {
				got, err = readEntries(ctx, qc, qReadyLower, got, lane, int64(want-len(got)), int64(from.prio))
			}
			return err
		})
	}, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		defer end()
		h, w := s.lane(lane).side(sched)
		if w.gen != gen || !w.over || w.wm != from || want <= 0 {
			return
		}
		for _, e := range got {
			if s.running[e.id] != nil {
				continue // claimed before a trim moved the watermark back over it
			}
			h.push(e)
			w.off--
		}
		if len(got) < want {
			w.over, w.off = false, 0
		} else {
			w.wm = got[len(got)-1]
		}
	})
	if err != nil {
		s.mu.Lock()
		end()
		s.mu.Unlock()
	}
	return err
}

// refillSoon starts a refill of whichever of the lane's heaps runs low,
// in the background (under s.mu).
func (s *retryStore) refillSoon(lane string, l *laneQ) {
	for _, sched := range []bool{false, true} {
		h, w := l.side(sched)
		if s.closing || !w.over || w.refilled != nil || h.len() >= s.window {
			continue
		}
		w.refilled = make(chan struct{})
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			if err := s.refill(context.Background(), lane, sched, 0); err != nil && !errors.Is(err, errStoreClosed) {
				s.db.cfg.Logger.Warn("embedded: reading waiting jobs back into memory failed; the next claim retries", "lane", lane, "err", err)
			}
		}()
	}
}

// distinctLanes lists the lanes with jobs in state, skipping through the
// state's partial index (lane first) instead of reading every entry.
func distinctLanes(ctx context.Context, qc driver.QueryerContext, state int) ([]string, error) {
	var out []string
	err := eachRow(ctx, qc, `WITH RECURSIVE l(lane) AS (
		SELECT min(lane) FROM retry_jobs WHERE state = ?1
		UNION ALL
		SELECT (SELECT min(lane) FROM retry_jobs WHERE state = ?1 AND lane > l.lane) FROM l WHERE l.lane IS NOT NULL)
		SELECT lane FROM l WHERE lane IS NOT NULL`, 1, func(v []driver.Value) error {
		lane, ok := v[0].(string)
		if !ok {
			return fmt.Errorf("embedded: lane is %T, not text", v[0])
		}
		out = append(out, lane)
		return nil
	}, int64(state))
	return out, err
}

// handBack returns to their lanes the jobs a stopped process left
// running: those in state 3 (older versions) and those whose last claim in
// the claim log has no outcome on disk (its token is above the job's
// lease_token). Each counts the attempt; one out of attempts is dead.
func (s *retryStore) handBack(ctx context.Context, claimed map[int64]int64, now int64) error {
	tx, err := s.db.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	const set = `state = CASE WHEN attempt + ?2 >= max_attempts THEN 5 ELSE 1 END,
		attempt = attempt + ?2,
		finished_at = CASE WHEN attempt + ?2 >= max_attempts THEN ?1 ELSE 0 END,
		last_error = 'worker stopped while running it', lease_until = 0, updated_at = ?1`
	res, err := tx.ExecContext(ctx, `UPDATE retry_jobs SET `+set+` WHERE state = 3`, now, 0)
	if err != nil {
		return err
	}
	n, _ := res.RowsAffected()
	if len(claimed) > 0 {
		st, err := tx.PrepareContext(ctx, `UPDATE retry_jobs SET `+set+`, lease_token = ?4
			WHERE id = ?3 AND state IN (1, 2) AND lease_token < ?4`)
		if err != nil {
			return err
		}
		defer st.Close()
		for id, token := range claimed {
			r, err := st.ExecContext(ctx, now, 1, id, token)
			if err != nil {
				return err
			}
			k, _ := r.RowsAffected()
			n += k
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.db.recovered = int(n)
	if n > 0 {
		s.db.cfg.Logger.Warn("embedded: handed back jobs left running by a stopped process", "jobs", n)
	}
	return nil
}

func (s *retryStore) lane(name string) *laneQ {
	l := s.lanes[name]
	if l == nil {
		l = &laneQ{ready: jobHeap{byPriority: true}}
		s.lanes[name] = l
	}
	return l
}

func (s *retryStore) closeStmts() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.bg.Wait()
	s.insJobs.close()
	s.putKeys.close()
	for _, st := range []*sql.Stmt{s.getKey, s.getKeys, s.finish, s.rescue, s.byIDs} {
		if st != nil {
			_ = st.Close()
		}
	}
	if s.claims != nil {
		_ = s.claims.close()
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
	}, func() { s.admit(jobs, res) })
	if err != nil {
		return nil, err
	}
	return res, nil
}

// admit puts durably enqueued jobs in their lanes' memory state; it runs
// after the commit (a write's after hook), so no worker can take a job
// that is not on disk yet. Each job is kept whole for its first claim
// while the cache has room.
func (s *retryStore) admit(jobs []*retry.Job, res []retry.EnqueueResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, j := range jobs {
		if i >= len(res) || res[i].Duplicate {
			continue
		}
		e := qentry{id: res[i].ID, runAt: nanos(j.RunAt), prio: prio32(j.Priority)}
		l := s.lane(j.Lane)
		l.add(e, j.State != retry.StateAvailable, s.window)
		if size := jobSize(j); s.cacheBytes+size <= cacheLimit && l.waiting() <= cacheAhead {
			c := *j
			c.ID = e.id
			if c.Payload == nil {
				c.Payload = []byte{}
			}
			s.cache[e.id] = &c
			s.cacheBytes += size
		}
	}
}

func jobSize(j *retry.Job) int {
	return len(j.Payload) + len(j.Kind) + len(j.Lane) + len(j.IdempotencyKey) + len(j.Digest) + 256
}

// enqueueIn inserts jobs inside a write (the writer's transaction), so
// another write of the same group (a campaign's checkpoint) commits with
// them or not at all. Keys are looked up in one statement and rows
// inserted many per statement (a campaign's page is one call of
// hundreds): a statement's fixed cost in the driver is paid per chunk,
// not per job. IDs are handed out here (the writer is the only inserter
// and the file is this process's alone), so a multi-row insert needs no
// read back.
func (s *retryStore) enqueueIn(ctx context.Context, jobs []*retry.Job, keysSince time.Time) ([]retry.EnqueueResult, error) {
	res := make([]retry.EnqueueResult, len(jobs))
	since := keysSince.UnixNano()
	known, err := s.lookupKeys(ctx, jobs)
	if err != nil {
		return nil, err
	}
	ins := make([]int, 0, len(jobs)) // indexes of the jobs to insert
	next := s.nextID
	for i, j := range jobs {
		if k := j.IdempotencyKey; k != "" {
			if got, ok := known[k]; ok && got.at >= since {
				if retry.Conflicts(got.digest, j.Digest) {
					// Returned from inside the group: the writer undoes
					// this call's inserts and keeps the others'.
					return nil, &retry.ConflictError{Index: i, Key: k, ID: got.id}
				}
				res[i] = retry.EnqueueResult{ID: got.id, Duplicate: true}
				continue
			}
			if known == nil {
				known = map[string]keyRow{}
			}
			known[k] = keyRow{id: next, at: nanos(j.CreatedAt), digest: j.Digest}
		}
		res[i] = retry.EnqueueResult{ID: next}
		next++
		ins = append(ins, i)
	}
	if err := s.insertRows(ctx, s.insJobs, ins, func(args []any, i int) []any {
		j := jobs[i]
		payload := j.Payload
		if payload == nil {
			payload = []byte{}
		}
		return append(args, res[i].ID, j.Kind, j.Lane, int(j.State), j.Priority, nanos(j.RunAt), nanos(j.ExpiresAt),
			j.MaxAttempts, j.IdempotencyKey, nanos(j.CreatedAt), nanos(j.UpdatedAt), payload)
	}); err != nil {
		return nil, err
	}
	keyed := slices.DeleteFunc(ins, func(i int) bool { return jobs[i].IdempotencyKey == "" })
	if err := s.insertRows(ctx, s.putKeys, keyed, func(args []any, i int) []any {
		j := jobs[i]
		return append(args, j.IdempotencyKey, res[i].ID, nanos(j.CreatedAt), j.Digest)
	}); err != nil {
		return nil, err
	}
	s.nextID = next
	return res, nil
}

// keyRow is a stored idempotency key.
type keyRow struct {
	id, at int64
	digest string
}

// lookupKeys reads the stored keys of jobs: one point query for one key,
// one statement over a JSON array for more.
func (s *retryStore) lookupKeys(ctx context.Context, jobs []*retry.Job) (map[string]keyRow, error) {
	var keys []string
	for _, j := range jobs {
		if j.IdempotencyKey != "" {
			keys = append(keys, j.IdempotencyKey)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	out := make(map[string]keyRow, len(keys))
	if len(keys) == 1 {
		var r keyRow
		err := s.getKey.QueryRowContext(ctx, keys[0]).Scan(&r.id, &r.at, &r.digest)
		switch {
		case err == nil:
			out[keys[0]] = r
		case !errors.Is(err, sql.ErrNoRows):
			return nil, err
		}
		return out, nil
	}
	arr, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	rows, err := s.getKeys.QueryContext(ctx, string(arr))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var r keyRow
		if err := rows.Scan(&k, &r.id, &r.at, &r.digest); err != nil {
			return nil, err
		}
		out[k] = r
	}
	return out, rows.Err()
}

// multiInsert is an INSERT prepared for several chunk sizes (rows per
// statement), largest first.
type multiInsert struct {
	sizes []int
	stmts []*sql.Stmt
}

// chunkSizes are the rows per statement of a multiInsert: any count is
// at most count/16 + 3 + 3 statements (the driver binds a statement's
// parameters in time quadratic in their count: more rows per statement
// cost more than they save).
var chunkSizes = []int{16, 4, 1}

func (s *retryStore) prepareMulti(ctx context.Context, head, row string) (*multiInsert, error) {
	m := &multiInsert{}
	for _, n := range chunkSizes {
		st, err := s.db.w.PrepareContext(ctx, head+strings.TrimSuffix(strings.Repeat(row+",", n), ","))
		if err != nil {
			return nil, fmt.Errorf("prepare %q: %w", head, err)
		}
		m.sizes, m.stmts = append(m.sizes, n), append(m.stmts, st)
	}
	return m, nil
}

func (m *multiInsert) close() {
	if m == nil {
		return
	}
	for _, st := range m.stmts {
		_ = st.Close()
	}
}

// insertRows inserts the rows of idx (row appends one row's values) in
// as few statements as m's sizes allow.
func (s *retryStore) insertRows(ctx context.Context, m *multiInsert, idx []int, row func(args []any, i int) []any) error {
	var args []any
	for len(idx) > 0 {
		k := 0
		for m.sizes[k] > len(idx) {
			k++
		}
		n := m.sizes[k]
		args = args[:0]
		for _, i := range idx[:n] {
			args = row(args, i)
		}
		if _, err := m.stmts[k].ExecContext(ctx, args...); err != nil {
			return err
		}
		idx = idx[n:]
	}
	return nil
}

// Claim implements retry.Store: the best due jobs come off the lane's
// heap under the store's mutex; the claim is appended to the claim log (a
// write to the page cache, no fsync, no transaction). Jobs enqueued by this
// process are handed over as they were given; others are read from the
// file by ID, beside the writer.
func (s *retryStore) Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*retry.Job, error) {
	if err := s.read(ctx); err != nil || limit <= 0 {
		return nil, err
	}
	n, until := now.UnixNano(), nanos(leaseUntil)
	var l *laneQ
	for tries := 0; ; tries++ {
		s.mu.Lock()
		l = s.lanes[lane]
		if l == nil || l.paused {
			s.mu.Unlock()
			return nil, nil
		}
		// Due scheduled jobs move to the ready heap (in memory only: the
		// file still says scheduled), as far as the ready window has room.
		for l.sched.len() > 0 && l.sched.e[0].runAt <= n && l.ready.len() < max(2*s.window, limit) {
			e := l.sched.pop()
			e.sched = true
			l.ready.push(e)
		}
		// Memory cannot fill this claim but the file can: read it back now
		// (once), rather than hand out less than there is.
		needReady := l.ready.len() < limit && l.rw.over
		needSched := l.ready.len() < limit && l.sw.over && l.sw.wm.runAt <= n
		if tries > 2 || !needReady && !needSched {
			break
		}
		sched := !needReady
		_, w := l.side(sched)
		if w.refilled != nil { // one is on its way: wait for it
			ch := w.refilled
			s.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		w.refilled = make(chan struct{})
		s.mu.Unlock()
		if err := s.refill(ctx, lane, sched, limit); err != nil {
			return nil, err
		}
	}
	if l.ready.len() == 0 {
		s.refillSoon(lane, l)
		s.mu.Unlock()
		return nil, nil
	}
	if s.seq+int64(limit) >= 1<<tokenBits {
		s.mu.Unlock()
		return nil, errors.New("embedded: lease tokens of this open used up: reopen the store")
	}
	out := make([]*retry.Job, 0, min(limit, l.ready.len()))
	var missing []*leaseRec
	recs := make([]*leaseRec, 0, cap(out))
	for len(recs) < limit && l.ready.len() > 0 {
		e := l.ready.pop()
		s.seq++
		r := &leaseRec{id: e.id, prio: e.prio, sched: e.sched, runAt: e.runAt, lane: lane, token: s.epoch<<tokenBits | s.seq, until: until, claimedAt: n}
		s.running[e.id] = r
		recs = append(recs, r)
		if j := s.cache[e.id]; j != nil {
			delete(s.cache, e.id)
			s.cacheBytes -= jobSize(j)
			s.started(r, j, now)
			out = append(out, j)
		} else {
			missing = append(missing, r)
		}
	}
	s.refillSoon(lane, l)
	s.mu.Unlock()
	// Logged before the jobs are handed out (a worker that runs one is
	// then on record), outside the store's mutex (a write(2) there would
	// hold up every enqueue's and outcome's after-commit hook).
	err := s.claims.append(recs, s.runningRecs)
	if err == nil && len(missing) > 0 {
		var jobs []*retry.Job
		if jobs, err = s.readJobs(ctx, missing); err == nil {
			s.mu.Lock()
			for _, j := range jobs {
				s.started(s.running[j.ID], j, now)
			}
			s.mu.Unlock()
			out = append(out, jobs...)
		}
	}
	if err != nil {
		// Give every job of this claim back, as it was.
		s.mu.Lock()
		for _, r := range recs {
			delete(s.running, r.id)
			s.lanes[lane].add(qentry{id: r.id, runAt: r.runAt, prio: r.prio, sched: r.sched}, false, s.window)
		}
		s.mu.Unlock()
		return nil, err
	}
	retry.SortClaimed(out)
	return out, nil
}

// runningRecs returns the leases running now, for the claim log's rotation.
func (s *retryStore) runningRecs() []*leaseRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*leaseRec, 0, len(s.running))
	for _, r := range s.running {
		out = append(out, r)
	}
	return out
}

// started makes j the running job of lease r (under s.mu).
func (s *retryStore) started(r *leaseRec, j *retry.Job, now time.Time) {
	j.State, j.Attempt, j.LeaseToken = retry.StateRunning, j.Attempt+1, r.token
	j.LeaseUntil, j.UpdatedAt = fromNanos(r.until), now
	r.attempt, r.maxAttempts, r.loaded = j.Attempt, j.MaxAttempts, true
}

// readJobs reads the rows of claimed jobs by ID (on a reader connection,
// beside the writer), through one prepared statement whatever the count.
func (s *retryStore) readJobs(ctx context.Context, recs []*leaseRec) ([]*retry.Job, error) {
	ids := make([]byte, 0, 12*len(recs))
	ids = append(ids, '[')
	for i, r := range recs {
		if i > 0 {
			ids = append(ids, ',')
		}
		ids = strconv.AppendInt(ids, r.id, 10)
	}
	ids = append(ids, ']')
	rows, err := s.byIDs.QueryContext(ctx, string(ids))
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	out := make([]*retry.Job, 0, len(recs))
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) != len(recs) {
		return nil, fmt.Errorf("embedded: %d of %d claimed jobs not found in the file", len(recs)-len(out), len(recs))
	}
	return out, nil
}

// hold marks the leases that match and are free for an outcome (nil for
// the others) under s.mu; the caller writes, then drops or frees them.
func (s *retryStore) hold(leases []retry.Lease) []*leaseRec {
	out := make([]*leaseRec, len(leases))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range leases {
		if r := s.running[l.ID]; r != nil && r.token == l.Token && r.loaded && !r.pending {
			r.pending = true
			out[i] = r
		}
	}
	return out
}

// settle ends held leases after their write: written ones leave the
// running set (and go back to their lane if not final), the others are
// freed for another try.
func (s *retryStore) settle(recs []*leaseRec, written bool, back func(i int) (runAt int64, sched, ok bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range recs {
		if r == nil {
			continue
		}
		r.pending = false
		if !written {
			continue
		}
		delete(s.running, r.id)
		if runAt, sched, ok := back(i); ok {
			s.lane(r.lane).add(qentry{id: r.id, runAt: runAt, prio: r.prio}, sched, s.window)
		}
	}
}

// ExtendLeases implements retry.Store. Leases live in memory only.
func (s *retryStore) ExtendLeases(ctx context.Context, leases []retry.Lease, until time.Time) ([]error, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	errs := make([]error, len(leases))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range leases {
		if r := s.running[l.ID]; r != nil && r.token == l.Token && !r.pending {
			r.until = nanos(until)
		} else {
			errs[i] = retry.ErrLeaseLost
		}
	}
	return errs, nil
}

// Finish implements retry.Store: leases are checked in memory, the
// outcomes written by ID in one write of the group commit, and the jobs
// leave the running set once it is durable.
func (s *retryStore) Finish(ctx context.Context, outcomes []retry.Outcome) ([]error, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	leases := make([]retry.Lease, len(outcomes))
	for i := range outcomes {
		leases[i] = outcomes[i].Lease
	}
	recs := s.hold(leases)
	errs := make([]error, len(outcomes))
	held := false
	for i, r := range recs {
		if r == nil {
			errs[i] = retry.ErrLeaseLost
		} else {
			held = true
		}
	}
	if !held {
		return errs, nil
	}
	// back says where a job goes after its outcome: scheduled (state 2 in
	// the file) or ready (state 1), or nowhere (final).
	back := func(i int) (int64, bool, bool) {
		switch o := &outcomes[i]; o.State {
		case retry.StateScheduled:
			return nanos(o.RunAt), true, true
		case retry.StateAvailable:
			return nanos(o.At), false, true
		}
		return 0, false, false
	}
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		for i := range outcomes {
			r := recs[i]
			if r == nil {
				continue
			}
			o := &outcomes[i]
			var runAt any
			var finished int64
			if at, _, ok := back(i); ok {
				runAt = at
			} else {
				finished = nanos(o.At)
			}
			attempt := r.attempt
			if o.Uncount {
				attempt = max(attempt-1, 0)
			}
			skipped := 0
			if o.Skip && o.State == retry.StateCompleted {
				skipped = 1
			}
			if _, err := s.finish.ExecContext(ctx, int(o.State), nanos(o.At), o.Error, o.Error, attempt, r.token, runAt, finished, skipped, o.ID); err != nil {
				return err
			}
		}
		return nil
	}, func() { s.settle(recs, true, back) })
	if err != nil {
		s.settle(recs, false, nil)
		return nil, err
	}
	return errs, nil
}

// Rescue implements retry.Store: leases that ended before now are found
// in memory; the jobs are written back (available, or dead when out of
// attempts) with their attempt counted.
func (s *retryStore) Rescue(ctx context.Context, now time.Time) ([]*retry.Job, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	n := now.UnixNano()
	var recs []*leaseRec
	s.mu.Lock()
	for _, r := range s.running {
		if r.loaded && !r.pending && r.until < n {
			r.pending = true
			recs = append(recs, r)
		}
	}
	s.mu.Unlock()
	if len(recs) == 0 {
		return nil, nil
	}
	var out []*retry.Job
	back := func(i int) (int64, bool, bool) { return n, false, recs[i].attempt < recs[i].maxAttempts }
	err := s.db.write(ctx, func(ctx context.Context, _ *sql.Conn) error {
		out = out[:0]
		for i, r := range recs {
			state, finished, runAt := 1, int64(0), n
			if _, _, ok := back(i); !ok {
				state, finished, runAt = 5, n, r.runAt
			}
			j, err := scanJob(s.rescue.QueryRowContext(ctx, state, r.attempt, r.token, finished, runAt, n, r.id))
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	}, func() { s.settle(recs, true, back) })
	if err != nil {
		s.settle(recs, false, nil)
		return nil, err
	}
	slices.SortFunc(out, func(a, b *retry.Job) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// overlay shows the memory state of running jobs in jobs read from the
// file (where a claim is not written).
func (s *retryStore) overlay(jobs ...*retry.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.running) == 0 {
		return
	}
	for _, j := range jobs {
		if r := s.running[j.ID]; r != nil && r.loaded {
			j.State, j.Attempt, j.LeaseToken = retry.StateRunning, r.attempt, r.token
			j.LeaseUntil, j.UpdatedAt = fromNanos(r.until), fromNanos(r.claimedAt)
		}
	}
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
	s.overlay(j)
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

// List implements retry.Store. A running job is available or scheduled
// in the file (claims are not written): a filter on those states reads
// them all and keeps what the memory state says matches.
func (s *retryStore) List(ctx context.Context, f retry.Filter) ([]*retry.Job, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	sf := f
	live := false
	for _, st := range f.States {
		live = live || st == retry.StateAvailable || st == retry.StateScheduled || st == retry.StateRunning
	}
	if live {
		sf.States = append(slices.Clone(f.States), retry.StateAvailable, retry.StateScheduled)
		sf.States = slices.DeleteFunc(sf.States, func(st retry.State) bool { return st == retry.StateRunning })
		if f.Limit > 0 {
			s.mu.Lock()
			sf.Limit = f.Limit + len(s.running)
			s.mu.Unlock()
		}
	}
	cond, args := where(sf)
	q := `SELECT ` + jobCols + ` FROM retry_jobs WHERE ` + cond + ` ORDER BY id`
	if sf.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", sf.Limit)
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
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.overlay(out...)
	if live {
		out = slices.DeleteFunc(out, func(j *retry.Job) bool { return !f.Match(j) })
		if f.Limit > 0 && len(out) > f.Limit {
			out = out[:f.Limit]
		}
	}
	return out, nil
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
	var back []*retry.Job
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		back = back[:0]
		rows, err := c.QueryContext(ctx, `UPDATE retry_jobs SET state = 1, attempt = 0, run_at = ?, updated_at = ?, finished_at = 0
			WHERE `+cond+` RETURNING id, lane, priority`, append([]any{n, n}, args...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var j retry.Job
			if err := rows.Scan(&j.ID, &j.Lane, &j.Priority); err != nil {
				return err
			}
			back = append(back, &j)
		}
		return rows.Err()
	}, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, j := range back {
			s.lane(j.Lane).add(qentry{id: j.ID, runAt: n, prio: prio32(j.Priority)}, false, s.window)
		}
	})
	return len(back), err
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
		s.lane(lane).paused = paused
		s.mu.Unlock()
	})
}

// Stats implements retry.Store: live states from memory, finished ones
// counted in the file.
func (s *retryStore) Stats(ctx context.Context, now time.Time) ([]retry.LaneStats, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT lane, state, count(*) FROM retry_jobs
		WHERE state IN (4, 5, 6) GROUP BY lane, state`)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var agg []retry.StatsRow
	for rows.Next() {
		var r retry.StatsRow
		var st int
		if err := rows.Scan(&r.Lane, &st, &r.Count); err != nil {
			return nil, err
		}
		r.State = retry.State(st)
		agg = append(agg, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	n := now.UnixNano()
	later := fromNanos(n + 1)
	var paused []string
	type live struct {
		name                  string
		ready, sched, running int
		oldest                int64
		readyWM, schedWM      *qentry // set when the file holds more than memory
	}
	var lanes []live
	s.mu.Lock()
	running := map[string]int{}
	for _, r := range s.running {
		running[r.lane]++
	}
	for name, l := range s.lanes {
		if l.paused {
			paused = append(paused, name)
		}
		lv := live{name: name, ready: l.ready.len() + l.rw.off, sched: l.sw.off, running: running[name]}
		for _, e := range l.ready.e {
			if lv.oldest == 0 || e.runAt < lv.oldest {
				lv.oldest = e.runAt
			}
		}
		for _, e := range l.sched.e {
			if e.runAt > n {
				lv.sched++
				continue
			}
			lv.ready++
			if lv.oldest == 0 || e.runAt < lv.oldest {
				lv.oldest = e.runAt
			}
		}
		if l.rw.over {
			wm := l.rw.wm
			lv.readyWM = &wm
		}
		if l.sw.over && l.sw.wm.runAt <= n {
			wm := l.sw.wm
			lv.schedWM = &wm
		}
		lanes = append(lanes, lv)
	}
	s.mu.Unlock()
	for _, lv := range lanes {
		// Past a window, the file answers what memory cannot: how many of
		// the scheduled jobs it holds are due, and the oldest ready job of
		// a lower priority than memory's (memory holds the oldest of its
		// own).
		if lv.schedWM != nil {
			var due int
			if err := s.db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM retry_jobs WHERE state = 2 AND lane = ?
				AND (run_at, id) > (?, ?) AND run_at <= ?`, lv.name, lv.schedWM.runAt, lv.schedWM.id, n).Scan(&due); err != nil {
				return nil, s.db.classify(err)
			}
			lv.ready, lv.sched = lv.ready+due, lv.sched-due
			if due > 0 && (lv.oldest == 0 || lv.schedWM.runAt < lv.oldest) {
				lv.oldest = lv.schedWM.runAt
			}
		}
		if lv.readyWM != nil {
			var lower sql.NullInt64
			if err := s.db.rdb.QueryRowContext(ctx, `SELECT min(run_at) FROM retry_jobs WHERE state = 1 AND lane = ? AND priority < ?`,
				lv.name, lv.readyWM.prio).Scan(&lower); err != nil {
				return nil, s.db.classify(err)
			}
			if lower.Valid && (lv.oldest == 0 || lower.Int64 < lv.oldest) {
				lv.oldest = lower.Int64
			}
		}
		if lv.ready > 0 {
			agg = append(agg, retry.StatsRow{Lane: lv.name, State: retry.StateAvailable, OldestRunAt: fromNanos(lv.oldest), Count: lv.ready})
		}
		if lv.sched > 0 {
			agg = append(agg, retry.StatsRow{Lane: lv.name, State: retry.StateScheduled, OldestRunAt: later, Count: lv.sched})
		}
		if lv.running > 0 {
			agg = append(agg, retry.StatsRow{Lane: lv.name, State: retry.StateRunning, Count: lv.running})
		}
	}
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
