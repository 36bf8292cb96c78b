package embedded

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/heraldhq/herald/eligibility"
)

// eligibilityStore is the eligibility.Store of a DB: suppressions by
// recipient key, preferences by user and topic; writes through the group
// commit, reads on the readers.
type eligibilityStore struct{ db *DB }

var _ eligibility.Store = (*eligibilityStore)(nil)

// Eligibility returns the suppression list's and preferences' store in
// this file.
func (db *DB) Eligibility() eligibility.Store { return &eligibilityStore{db: db} }

func (s *eligibilityStore) read(ctx context.Context) error {
	if s.db.isClosed() {
		return errStoreClosed
	}
	return ctx.Err()
}

// Suppress implements eligibility.Store.
func (s *eligibilityStore) Suppress(ctx context.Context, ss ...eligibility.Suppression) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		for _, x := range ss {
			if _, err := s.db.wexec(ctx, `INSERT OR REPLACE INTO eligibility_suppressions (key, channel, masked, reason, source, at)
				VALUES (?, ?, ?, ?, ?, ?)`, x.Key, x.Channel, x.Masked, x.Reason, x.Source, x.At.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// Unsuppress implements eligibility.Store.
func (s *eligibilityStore) Unsuppress(ctx context.Context, key string) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		_, err := s.db.wexec(ctx, `DELETE FROM eligibility_suppressions WHERE key = ?`, key)
		return err
	}, nil)
}

// Suppressed implements eligibility.Store.
func (s *eligibilityStore) Suppressed(ctx context.Context, key string) (eligibility.Suppression, bool, error) {
	if err := s.read(ctx); err != nil {
		return eligibility.Suppression{}, false, err
	}
	x := eligibility.Suppression{Key: key}
	var at int64
	err := s.db.rdb.QueryRowContext(ctx, `SELECT channel, masked, reason, source, at FROM eligibility_suppressions WHERE key = ?`, key).
		Scan(&x.Channel, &x.Masked, &x.Reason, &x.Source, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return eligibility.Suppression{}, false, nil
	case err != nil:
		return eligibility.Suppression{}, false, s.db.classify(err)
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
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		_, err := s.db.wexec(ctx, `INSERT INTO eligibility_preferences (user, topic, opted_out, at) VALUES (?, ?, ?, ?)
			ON CONFLICT (user, topic) DO UPDATE SET opted_out = excluded.opted_out, at = excluded.at WHERE excluded.at >= at`,
			p.User, p.Topic, out, p.At.UnixNano())
		return err
	}, nil)
}

// OptedOut implements eligibility.Store.
func (s *eligibilityStore) OptedOut(ctx context.Context, user string, topics []string) (string, bool, error) {
	if err := s.read(ctx); err != nil {
		return "", false, err
	}
	for _, t := range topics {
		var out int
		err := s.db.rdb.QueryRowContext(ctx, `SELECT opted_out FROM eligibility_preferences WHERE user = ? AND topic = ?`, user, t).Scan(&out)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return "", false, s.db.classify(err)
		case out == 1:
			return t, true, nil
		}
	}
	return "", false, nil
}

// Close implements eligibility.Store: it closes the whole DB.
func (s *eligibilityStore) Close() error { return s.db.Close() }
