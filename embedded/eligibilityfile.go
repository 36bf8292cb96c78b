package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/heraldhq/herald/eligibility"
)

// eligibilityFileID marks an EligibilityFile ("HRLE"), so that neither
// kind of herald file is taken for the other.
const eligibilityFileID = 0x48524c45

// EligibilityFile is an eligibility.Store in a SQLite file of its own
// that several processes on one machine use at once: the suppression
// list and the preferences that every process sending to the same users
// must share.
//
// It exists for a deployment split in two processes on the embedded
// store — transactional messages in one, campaigns in another, each with
// a DB of its own so that a campaign's writes never queue ahead of a
// password reset's — where a token a provider said was gone, a bounced
// address or an unsubscribe seen by either process must stop the other's
// next message too. A DB locks its file to one process; this file takes
// no such lock and relies on SQLite's own: every write is a short
// BEGIN IMMEDIATE transaction (waiting up to 10 s for another process's),
// synchronous=FULL in WAL mode, so it is on disk when the call returns,
// and reads never wait for writes. Both processes must run on the same
// machine (WAL's shared memory); a network file system is not supported.
type EligibilityFile struct {
	eligibilityStore
	path     string
	wdb, rdb *sql.DB
	mu       sync.RWMutex
	closed   bool
}

var _ eligibility.Store = (*EligibilityFile)(nil)

// OpenEligibility opens or creates the eligibility file at path. It fails
// with ErrCorrupt if the file is not one (a DB's file included).
func OpenEligibility(path string) (*EligibilityFile, error) {
	if path == "" {
		return nil, errors.New("embedded: OpenEligibility: empty path")
	}
	f := &EligibilityFile{path: path}
	f.eligibilityStore.b = fileEligibility{f}
	if err := f.open(); err != nil {
		_ = f.closeHandles()
		return nil, err
	}
	return f, nil
}

func (f *EligibilityFile) open() error {
	ctx := context.Background()
	var err error
	// One writing connection a process: its transactions begin IMMEDIATE
	// (the write lock at once, not an upgrade that could deadlock with
	// another process's) and wait for another process's.
	f.wdb, err = sql.Open("sqlite", dsn(f.path, "busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)")+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", f.path, err)
	}
	f.wdb.SetMaxOpenConns(1)
	f.wdb.SetConnMaxIdleTime(0)
	if err := f.migrate(ctx); err != nil {
		return f.classify(err)
	}
	f.rdb, err = sql.Open("sqlite", dsn(f.path, "busy_timeout(10000)", "query_only(1)"))
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", f.path, err)
	}
	f.rdb.SetMaxOpenConns(4)
	f.rdb.SetMaxIdleConns(4)
	return nil
}

// migrate creates the tables in a new file, under the write lock: two
// processes opening a new file at once create them once.
func (f *EligibilityFile) migrate(ctx context.Context) error {
	tx, err := f.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var appID, version, tables int64
	if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return err
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return err
	}
	switch {
	case appID == eligibilityFileID && version == 1:
		return nil
	case appID == eligibilityFileID:
		return fmt.Errorf("embedded: %s has eligibility schema version %d, newer than this herald knows (1): upgrade herald", f.path, version)
	case appID == applicationID:
		return fmt.Errorf("%w: %s is a herald store's file, not an eligibility file", ErrCorrupt, f.path)
	case appID != 0 || tables != 0:
		return fmt.Errorf("%w: %s is a SQLite file of another application (application_id %#x)", ErrCorrupt, f.path, appID)
	}
	if _, err := tx.ExecContext(ctx, eligibilityTables+fmt.Sprintf(";\nPRAGMA user_version=1; PRAGMA application_id=%d;", eligibilityFileID)); err != nil {
		return err
	}
	return tx.Commit()
}

func (f *EligibilityFile) classify(err error) error { return classify(f.path, err) }

// Close closes the file. Other processes' handles are unaffected.
func (f *EligibilityFile) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	return f.closeHandles()
}

func (f *EligibilityFile) closeHandles() error {
	var errs []error
	for _, d := range []*sql.DB{f.rdb, f.wdb} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	return errors.Join(errs...)
}

// fileEligibility runs an eligibilityStore in an EligibilityFile.
type fileEligibility struct{ f *EligibilityFile }

var errEligibilityClosed = fmt.Errorf("embedded: eligibility file closed: %w", eligibility.ErrClosed)

func (e fileEligibility) exec(ctx context.Context, fn func(exec execFunc) error) error {
	e.f.mu.RLock()
	defer e.f.mu.RUnlock()
	if e.f.closed {
		return errEligibilityClosed
	}
	tx, err := e.f.wdb.BeginTx(ctx, nil)
	if err != nil {
		return e.f.classify(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}); err != nil {
		return e.f.classify(err)
	}
	if err := tx.Commit(); err != nil {
		return e.f.classify(err)
	}
	return nil
}

func (e fileEligibility) reader(ctx context.Context) (*sql.DB, error) {
	e.f.mu.RLock()
	defer e.f.mu.RUnlock()
	if e.f.closed {
		return nil, errEligibilityClosed
	}
	return e.f.rdb, ctx.Err()
}

func (e fileEligibility) classify(err error) error { return e.f.classify(err) }

func (e fileEligibility) Close() error { return e.f.Close() }
