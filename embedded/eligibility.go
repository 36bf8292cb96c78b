package embedded

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/heraldhq/herald/eligibility"
)

// eligibilityStore is an eligibility.Store over SQLite: suppressions by
// recipient key, preferences by user and topic. Its backend is a DB
// (writes through the group commit, reads on the readers) or an
// EligibilityFile (a file several processes share).
type eligibilityStore struct{ b eligibilityBackend }

// eligibilityBackend is where an eligibilityStore's statements run.
type eligibilityBackend interface {
	// exec runs fn's statements in one durable write.
	exec(ctx context.Context, fn func(exec execFunc) error) error
	// reader returns the connections to read on, or an error once closed.
	reader(ctx context.Context) (*sql.DB, error)
	classify(err error) error
	Close() error
}

// execFunc runs one statement of a write.
type execFunc func(q string, args ...any) error

var _ eligibility.Store = (*eligibilityStore)(nil)

// Eligibility returns the suppression list's and preferences' store in
// this file.
func (db *DB) Eligibility() eligibility.Store { return &eligibilityStore{b: dbEligibility{db}} }

// dbEligibility runs an eligibilityStore in a DB's file.
type dbEligibility struct{ *DB }

func (d dbEligibility) exec(ctx context.Context, fn func(exec execFunc) error) error {
	return d.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		return fn(func(q string, args ...any) error {
			_, err := d.wexec(ctx, q, args...)
			return err
		})
	}, nil)
}

func (d dbEligibility) reader(ctx context.Context) (*sql.DB, error) {
	if d.isClosed() {
		return nil, errStoreClosed
	}
	return d.rdb, ctx.Err()
}

const (
	suppressSQL = `INSERT OR REPLACE INTO eligibility_suppressions (key, channel, masked, reason, source, at)
				VALUES (?, ?, ?, ?, ?, ?)`
	preferSQL = `INSERT INTO eligibility_preferences (user, topic, opted_out, at) VALUES (?, ?, ?, ?)
			ON CONFLICT (user, topic) DO UPDATE SET opted_out = excluded.opted_out, at = excluded.at WHERE excluded.at >= at`
)

// Suppress implements eligibility.Store.
func (s *eligibilityStore) Suppress(ctx context.Context, ss ...eligibility.Suppression) error {
	return s.b.exec(ctx, func(exec execFunc) error {
		for _, x := range ss {
			if err := exec(suppressSQL, x.Key, x.Channel, x.Masked, x.Reason, x.Source, x.At.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// Unsuppress implements eligibility.Store.
func (s *eligibilityStore) Unsuppress(ctx context.Context, key string) error {
	return s.b.exec(ctx, func(exec execFunc) error {
		return exec(`DELETE FROM eligibility_suppressions WHERE key = ?`, key)
	})
}

// Suppressed implements eligibility.Store.
func (s *eligibilityStore) Suppressed(ctx context.Context, key string) (eligibility.Suppression, bool, error) {
	rdb, err := s.b.reader(ctx)
	if err != nil {
		return eligibility.Suppression{}, false, err
	}
	x := eligibility.Suppression{Key: key}
	var at int64
	err = rdb.QueryRowContext(ctx, `SELECT channel, masked, reason, source, at FROM eligibility_suppressions WHERE key = ?`, key).
		Scan(&x.Channel, &x.Masked, &x.Reason, &x.Source, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return eligibility.Suppression{}, false, nil
	case err != nil:
		return eligibility.Suppression{}, false, s.b.classify(err)
	}
	x.At = time.Unix(0, at).UTC()
	return x, true, nil
}

// SetPreference implements eligibility.Store: the later choice wins.
func (s *eligibilityStore) SetPreference(ctx context.Context, p eligibility.Preference) error {
	out := 0
	if p.OptedOut {
		out = 1
	}
	return s.b.exec(ctx, func(exec execFunc) error {
		return exec(preferSQL, p.User, p.Topic, out, p.At.UnixNano())
	})
}

// OptedOut implements eligibility.Store.
func (s *eligibilityStore) OptedOut(ctx context.Context, user string, topics []string) (string, bool, error) {
	rdb, err := s.b.reader(ctx)
	if err != nil {
		return "", false, err
	}
	for _, t := range topics {
		var out int
		err := rdb.QueryRowContext(ctx, `SELECT opted_out FROM eligibility_preferences WHERE user = ? AND topic = ?`, user, t).Scan(&out)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return "", false, s.b.classify(err)
		case out == 1:
			return t, true, nil
		}
	}
	return "", false, nil
}

// Close implements eligibility.Store: it closes the whole file (a DB's
// Eligibility closes the DB).
func (s *eligibilityStore) Close() error { return s.b.Close() }
