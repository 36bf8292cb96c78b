// Package embedded is herald's default store: one SQLite file, written by
// pure Go (modernc.org/sqlite, no cgo), that holds the retry queue, the
// capping counters and the tracking journal.
//
//	db, err := embedded.Open("herald.db", nil)
//	...
//	defer db.Close()
//	q, err := retry.New(db.Retry(), nil)
//
// Every write is durable before it returns: the file runs in WAL mode with
// synchronous=FULL, so a commit is on disk when it returns. One writer
// goroutine owns the write connection and groups every write waiting for
// it (enqueues, claims, completions, from any goroutine) into one
// transaction and one fsync: this group commit is what lets many producers
// and workers share the disk's limited fsync rate.
//
// The file belongs to one process at a time: Open takes an exclusive lock
// on "<path>.lock" and fails with ErrLocked while another process holds
// it. Because no other process can hold leases on the file, Open hands
// back the jobs a crashed process left running (see DB.Recovered). For
// many processes or hosts, use the PostgreSQL or Redis stores.
package embedded

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// Errors of Open, checked with errors.Is.
var (
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("embedded: store is locked by another process")
	// ErrCorrupt: the file is not a readable herald store (damaged, or
	// another kind of file). Open never resets it: move it aside to start
	// afresh, or restore it from a backup.
	ErrCorrupt = errors.New("embedded: store file is corrupt or not a herald store")
)

// errStoreClosed is what a closed store answers; it is both retry's and
// capping's ErrClosed.
var errStoreClosed = fmt.Errorf("embedded: store closed: %w, %w, %w, %w", retry.ErrClosed, capping.ErrClosed, tracking.ErrClosed, eligibility.ErrClosed)

// applicationID marks SQLite files made by herald ("HRLD").
const applicationID = 0x48524c44

// synchronous is SQLite's synchronous setting: FULL, so a commit is on
// disk when it returns. Only the power-loss test changes it (to show that
// its loop catches a store that does not sync).
var synchronous = "FULL"

// Config tunes a DB. The zero value is usable; each field documents its
// default.
type Config struct {
	// VerifyOnOpen runs SQLite's quick_check over the whole file at Open
	// and fails with ErrCorrupt if it finds damage. It reads every page, so
	// it costs about a second per few hundred MB. Default false: damage in
	// a page is then reported when that page is read.
	VerifyOnOpen bool
	// MaxGroup caps how many writes share one transaction. Default 1024.
	MaxGroup int
	// CacheKiB is SQLite's page cache for the writer, in KiB. Default 16384.
	CacheKiB int
	// Logger receives operational messages. Default: discard.
	Logger *slog.Logger

	queueWindow int // waiting jobs per lane and state kept in memory (tests)
}

// DB is an open store file. Its methods are safe for concurrent use.
type DB struct {
	path string
	cfg  Config
	lock *os.File

	wdb               *sql.DB   // one connection, used only by the writer goroutine
	w                 *sql.Conn //
	begin, commitStmt *sql.Stmt
	wstmts            map[string]*sql.Stmt // prepared on w by wprep; the writer goroutine's own
	rdb               *sql.DB              // readers (WAL lets them run beside the writer)

	mu     sync.RWMutex // guards closed and sends on ops
	closed bool
	ops    chan *op
	done   chan struct{} // closed when the writer goroutine exits

	retry     *retryStore
	capping   *cappingStore
	tracking  *trackingStore
	recovered int

	commits, writes atomic.Uint64
	busy            atomic.Int64 // nanoseconds (WriteStats.Busy)
}

// WriteStats counts the store's writes and the commits (fsyncs) that made
// them durable: Writes/Commits is how well group commit is sharing the
// disk.
type WriteStats struct {
	Writes  uint64 // write calls applied (an enqueue batch, a claim, a batch of outcomes, ...)
	Commits uint64 // transactions committed
	// Busy is the time the writer spent applying groups (their SQL and
	// their commit, fsync included). Its rate is the writer's use: every
	// write waits for the one writer, so near 1 the store is saturated and
	// each Send waits behind others.
	Busy time.Duration
}

// WriteStats returns the counts since Open.
func (db *DB) WriteStats() WriteStats {
	return WriteStats{Writes: db.writes.Load(), Commits: db.commits.Load(), Busy: time.Duration(db.busy.Load())}
}

// Open opens or creates the store at path. It fails with ErrLocked if
// another process has it open, and with ErrCorrupt if the file is not a
// readable herald store.
func Open(path string, cfg *Config) (*DB, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.MaxGroup = cmp.Or(c.MaxGroup, 1024)
	c.CacheKiB = cmp.Or(c.CacheKiB, 16384)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("embedded: Open: empty path")
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	db := &DB{path: path, cfg: c, lock: lock, ops: make(chan *op, 4096), done: make(chan struct{})}
	if err := db.open(); err != nil {
		db.closeHandles()
		return nil, err
	}
	go db.writer()
	return db, nil
}

func dsn(path string, pragmas ...string) string {
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (db *DB) open() error {
	ctx := context.Background()
	var err error
	db.wdb, err = sql.Open("sqlite", dsn(db.path, "busy_timeout(10000)"))
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", db.path, err)
	}
	db.wdb.SetMaxOpenConns(1)
	db.wdb.SetConnMaxIdleTime(0)
	db.wdb.SetConnMaxLifetime(0)
	db.w, err = db.wdb.Conn(ctx)
	if err != nil {
		return db.classify(err)
	}
	var appID int64
	if err := db.w.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return db.classify(err)
	}
	var tables int
	if err := db.w.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return db.classify(err)
	}
	switch {
	case appID == applicationID:
	case appID == 0 && tables == 0:
		// A new file.
	default:
		return fmt.Errorf("%w: %s is a SQLite file of another application (application_id %#x)", ErrCorrupt, db.path, appID)
	}
	for _, p := range []string{
		"PRAGMA journal_mode=WAL",
		"PRAGMA synchronous=" + synchronous,
		fmt.Sprintf("PRAGMA cache_size=-%d", db.cfg.CacheKiB),
		"PRAGMA temp_store=MEMORY",
	} {
		if _, err := db.w.ExecContext(ctx, p); err != nil {
			return db.classify(fmt.Errorf("%s: %w", p, err))
		}
	}
	if db.cfg.VerifyOnOpen {
		var res string
		if err := db.w.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&res); err != nil {
			return db.classify(err)
		}
		if res != "ok" {
			return fmt.Errorf("%w: %s: quick_check: %s", ErrCorrupt, db.path, res)
		}
	}
	if err := db.migrate(ctx); err != nil {
		return db.classify(err)
	}
	// This process holds the file's lock: whoever held a fan-out's lease
	// before it is gone, so the leases are given back (as its running
	// jobs are).
	if _, err := db.w.ExecContext(ctx, `UPDATE checkpoints SET owner = '', lease_until = 0 WHERE owner <> ''`); err != nil {
		return db.classify(err)
	}
	if db.begin, err = db.w.PrepareContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return db.classify(err)
	}
	if db.commitStmt, err = db.w.PrepareContext(ctx, "COMMIT"); err != nil {
		return db.classify(err)
	}
	db.rdb, err = sql.Open("sqlite", dsn(db.path, "busy_timeout(10000)", "query_only(1)"))
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", db.path, err)
	}
	db.rdb.SetMaxOpenConns(4)
	db.rdb.SetMaxIdleConns(4)
	if db.retry, err = newRetryStore(ctx, db); err != nil {
		return db.classify(err)
	}
	if db.capping, err = newCappingStore(ctx, db); err != nil {
		return db.classify(err)
	}
	if db.tracking, err = newTrackingStore(ctx, db); err != nil {
		return db.classify(err)
	}
	return nil
}

// eligibilityTables are the suppression list's and preferences' tables,
// in a DB (migration 6) and in an EligibilityFile.
const eligibilityTables = `
CREATE TABLE eligibility_suppressions (
	key     TEXT    PRIMARY KEY,
	channel TEXT    NOT NULL,
	masked  TEXT    NOT NULL,
	reason  TEXT    NOT NULL,
	source  TEXT    NOT NULL,
	at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE eligibility_preferences (
	user      TEXT    NOT NULL,
	topic     TEXT    NOT NULL,
	opted_out INTEGER NOT NULL,
	at        INTEGER NOT NULL,
	PRIMARY KEY (user, topic)
) WITHOUT ROWID;
`

// migrations are applied in order; user_version counts those applied.
var migrations = []string{
	// 1: the retry queue.
	`
CREATE TABLE retry_jobs (
	id           INTEGER PRIMARY KEY,
	kind         TEXT    NOT NULL,
	lane         TEXT    NOT NULL,
	state        INTEGER NOT NULL,
	priority     INTEGER NOT NULL,
	run_at       INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL,
	max_attempts INTEGER NOT NULL,
	attempt      INTEGER NOT NULL DEFAULT 0,
	lease_token  INTEGER NOT NULL DEFAULT 0,
	lease_until  INTEGER NOT NULL DEFAULT 0,
	idem_key     TEXT    NOT NULL,
	last_error   TEXT    NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	finished_at  INTEGER NOT NULL DEFAULT 0,
	payload      BLOB    NOT NULL
);
CREATE INDEX retry_jobs_ready    ON retry_jobs (lane, priority DESC, run_at, id) WHERE state = 1;
CREATE INDEX retry_jobs_sched    ON retry_jobs (lane, run_at) WHERE state = 2;
CREATE INDEX retry_jobs_running  ON retry_jobs (lease_until) WHERE state = 3;
CREATE INDEX retry_jobs_finished ON retry_jobs (finished_at) WHERE state IN (4, 6);
CREATE TABLE retry_keys (
	key        TEXT    PRIMARY KEY,
	job_id     INTEGER NOT NULL,
	created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX retry_keys_created ON retry_keys (created_at);
CREATE TABLE retry_lanes (
	lane   TEXT    PRIMARY KEY,
	paused INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 2: capping counters.
	`
CREATE TABLE capping_slots (
	key     TEXT    NOT NULL,
	id      TEXT    NOT NULL,
	at      INTEGER NOT NULL,
	pending INTEGER NOT NULL,
	PRIMARY KEY (key, id)
) WITHOUT ROWID;
CREATE INDEX capping_slots_at ON capping_slots (key, at);
CREATE TABLE capping_reservations (
	id          TEXT    PRIMARY KEY,
	at          INTEGER NOT NULL,
	lease_until INTEGER NOT NULL,
	keys        TEXT    NOT NULL
) WITHOUT ROWID;
`,
	// 3: the tracking journal.
	`
CREATE TABLE tracking_events (
	seq        INTEGER PRIMARY KEY,
	id         TEXT    NOT NULL UNIQUE,
	message_id TEXT    NOT NULL,
	type       TEXT    NOT NULL,
	at         INTEGER NOT NULL,
	campaign   TEXT    NOT NULL,
	automation TEXT    NOT NULL,
	data       BLOB    NOT NULL
);
CREATE INDEX tracking_events_campaign   ON tracking_events (campaign, at) WHERE campaign <> '';
CREATE INDEX tracking_events_automation ON tracking_events (automation, at) WHERE automation <> '';
CREATE INDEX tracking_events_message    ON tracking_events (message_id, type);
CREATE TABLE tracking_cursors (
	sink TEXT    PRIMARY KEY,
	seq  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE tracking_gaps (
	id       INTEGER PRIMARY KEY,
	from_at  INTEGER NOT NULL,
	to_at    INTEGER NOT NULL,
	reason   TEXT    NOT NULL,
	declared INTEGER NOT NULL
);
`,
	// 4: a digest kept with each idempotency key (a reused key with other
	// content is a conflict, not a duplicate).
	`
ALTER TABLE retry_keys ADD COLUMN digest TEXT NOT NULL DEFAULT '';
`,
	// 5: a job completed by retry.Skip says so in a column of its own.
	`
ALTER TABLE retry_jobs ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
`,
	// 6: eligibility at the send path: the suppression list (recipients as
	// keyed digests) and users' preferences.
	eligibilityTables,
	// 7: fan-out checkpoints (campaigns): the cursor moves in the same
	// write as the jobs of its page.
	`
CREATE TABLE checkpoints (
	key        TEXT    PRIMARY KEY,
	spec       BLOB    NOT NULL,
	state      TEXT    NOT NULL,
	cursor     TEXT    NOT NULL,
	recipients INTEGER NOT NULL,
	enqueued   INTEGER NOT NULL,
	invalid    INTEGER NOT NULL,
	done       INTEGER NOT NULL,
	created    INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 8: stored audiences: members, and the upload IDs already applied.
	`
CREATE TABLE audience_members (
	audience TEXT NOT NULL,
	user     TEXT NOT NULL,
	data     BLOB NOT NULL,
	PRIMARY KEY (audience, user)
) WITHOUT ROWID;
CREATE TABLE audience_uploads (
	audience  TEXT NOT NULL,
	upload_id TEXT NOT NULL,
	PRIMARY KEY (audience, upload_id)
) WITHOUT ROWID;
`,
	// 9: the Inbox: items by user, newest first.
	`
CREATE TABLE inbox_items (
	user        TEXT    NOT NULL,
	id          TEXT    NOT NULL,
	created     INTEGER NOT NULL,
	expires     INTEGER NOT NULL,
	read_at     INTEGER NOT NULL,
	seen_at     INTEGER NOT NULL,
	archived_at INTEGER NOT NULL,
	content     BLOB    NOT NULL,
	PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE INDEX inbox_items_feed ON inbox_items (user, created DESC, id DESC);
`,
	// 10: the queue's live state is kept in memory (claims are not
	// written); each open takes a new epoch for its lease tokens.
	`
CREATE TABLE retry_meta (
	key   TEXT    PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 11: a fan-out's pages: an audience is staged a page per row as
	// fast as it is read, and drained into the queue at the campaign's
	// rate (a rowid table: a page is tens of kilobytes).
	`
ALTER TABLE checkpoints ADD COLUMN staged    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN drained   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN pages     INTEGER NOT NULL DEFAULT 0;
CREATE TABLE checkpoint_pages (
	key   TEXT    NOT NULL,
	seq   INTEGER NOT NULL,
	count INTEGER NOT NULL,
	off   INTEGER NOT NULL,
	data  BLOB    NOT NULL,
	UNIQUE (key, seq)
);
`,
	// 12: a fan-out's runner holds a lease on it (one process runs a
	// campaign at a time).
	`
ALTER TABLE checkpoints ADD COLUMN owner       TEXT    NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
`,
	// 13: a message's events are found through the id index when their ID
	// starts with the message's ID and a slash (herald's own events:
	// "<message>/<type>/<attempt>"), so the message index keeps only the
	// others: one index insert an event, at a random place, fewer.
	`
DROP INDEX tracking_events_message;
CREATE INDEX tracking_events_message ON tracking_events (message_id, type)
	WHERE substr(id, 1, length(message_id) + 1) <> message_id || '/';
`,
}

// migration returns migration v's statements, ending with the file's
// new version and herald's application_id.
func migration(v int) string {
	return migrations[v] + fmt.Sprintf(";\nPRAGMA user_version=%d; PRAGMA application_id=%d;", v+1, applicationID)
}

func (db *DB) migrate(ctx context.Context) error {
	var version int
	if err := db.w.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("embedded: %s has schema version %d, newer than this herald knows (%d): upgrade herald", db.path, version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		tx, err := db.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migration(v)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("embedded: migration %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("embedded: migration %d: %w", v+1, err)
		}
	}
	return nil
}

// classify turns SQLite's "not a database" and "corrupt" answers into ErrCorrupt.
func (db *DB) classify(err error) error { return classify(db.path, err) }

// classify names the file an error of SQLite's came from, as ErrCorrupt
// when SQLite found it is not a database or is damaged.
func classify(path string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
		}
	}
	return fmt.Errorf("embedded: %s: %w", path, err)
}

// Retry returns the retry queue's store in this file.
func (db *DB) Retry() retry.Store { return db.retry }

// Capping returns the capping counters' store in this file.
func (db *DB) Capping() capping.Store { return db.capping }

// Tracking returns the tracking journal's store in this file.
func (db *DB) Tracking() tracking.Store { return db.tracking }

// Recovered returns how many jobs Open found running, left by a process
// that stopped without finishing them, and handed back.
func (db *DB) Recovered() int { return db.recovered }

// Path returns the file's path.
func (db *DB) Path() string { return db.path }

// Close waits for pending writes, then closes the file and releases the
// lock. Later calls return nil.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.ops)
	db.mu.Unlock()
	<-db.done
	return db.closeHandles()
}

func (db *DB) closeHandles() error {
	var errs []error
	if db.retry != nil {
		db.retry.closeStmts()
	}
	if db.capping != nil {
		db.capping.closeStmts()
	}
	if db.tracking != nil {
		db.tracking.closeStmts()
	}
	for _, st := range []*sql.Stmt{db.begin, db.commitStmt} {
		if st != nil {
			_ = st.Close()
		}
	}
	for _, st := range db.wstmts {
		_ = st.Close()
	}
	if db.w != nil {
		errs = append(errs, db.w.Close())
	}
	if db.wdb != nil {
		errs = append(errs, db.wdb.Close())
	}
	if db.rdb != nil {
		errs = append(errs, db.rdb.Close())
	}
	if db.lock != nil {
		errs = append(errs, unlockFile(db.lock))
	}
	return errors.Join(errs...)
}

func (db *DB) isClosed() bool {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.closed
}

// wprep returns q prepared on the writer's connection, preparing it on
// first use. Only writes (on the writer goroutine) call it: SQLite parses
// a statement in tens of microseconds, as long as a small write takes.
func (db *DB) wprep(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := db.wstmts[q]; ok {
		return st, nil
	}
	st, err := db.w.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if db.wstmts == nil {
		db.wstmts = map[string]*sql.Stmt{}
	}
	db.wstmts[q] = st
	return st, nil
}

// wexec runs q, prepared once, on the writer's connection.
func (db *DB) wexec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := db.wprep(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// op is one write waiting for the group commit.
type op struct {
	fn    func(ctx context.Context, c *sql.Conn) error
	after func() // runs after the commit succeeded, on the writer goroutine
	err   error
	done  chan struct{}
}

// write runs fn in the next group transaction and returns once that
// transaction is durable (or failed). If fn fails, the group is rolled back
// and every other write in it runs again in a transaction of its own, so fn
// must be safe to run more than once (it resets what it reports).
func (db *DB) write(ctx context.Context, fn func(ctx context.Context, c *sql.Conn) error, after func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, after: after, done: make(chan struct{})}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return errStoreClosed
	}
	db.ops <- o
	db.mu.RUnlock()
	// Once queued the write may be applied, so wait for its verdict even if
	// ctx ends: the caller must not think it failed when it did not.
	<-o.done
	return o.err
}

func (db *DB) writer() {
	defer close(db.done)
	ctx := context.Background()
	group := make([]*op, 0, db.cfg.MaxGroup)
	for o := range db.ops {
		group = append(group[:0], o)
	fill:
		for len(group) < db.cfg.MaxGroup {
			select {
			case o, ok := <-db.ops:
				if !ok {
					break fill
				}
				group = append(group, o)
			default:
				break fill
			}
		}
		start := time.Now()
		db.commit(ctx, group)
		db.busy.Add(int64(time.Since(start)))
		// The callers just released are runnable on this P; let them run
		// now rather than behind the next group's SQL and fsync (Go would
		// only hand them this P once the fsync syscall had lasted a
		// sysmon tick). On 2 cores this halves the time a Send waits
		// after its commit and doubles the writes per commit.
		runtime.Gosched()
	}
}

func (db *DB) commit(ctx context.Context, group []*op) {
	finish := func(err error) {
		for _, o := range group {
			if err != nil {
				o.err = err
			}
			if o.err == nil && o.after != nil {
				o.after()
			}
			close(o.done)
		}
	}
	if _, err := db.begin.ExecContext(ctx); err != nil {
		finish(db.classify(err))
		return
	}
	for _, o := range group {
		o.err = o.fn(ctx, db.w)
		if o.err == nil {
			continue
		}
		// One write failed: undo the whole group, then give each write a
		// transaction of its own so the failure stays with its caller.
		// (Writes are idempotent closures: running one again is safe.)
		_, _ = db.w.ExecContext(ctx, "ROLLBACK")
		if len(group) == 1 {
			o.err = db.classify(o.err)
			finish(nil)
			return
		}
		for _, o := range group {
			o.err = nil
			db.commit(ctx, []*op{o})
		}
		return
	}
	if _, err := db.commitStmt.ExecContext(ctx); err != nil {
		_, _ = db.w.ExecContext(ctx, "ROLLBACK")
		finish(db.classify(err))
		return
	}
	db.commits.Add(1)
	db.writes.Add(uint64(len(group)))
	finish(nil)
}
