package postgres

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/eligibility"
)

// eligibilityStore is the eligibility.Store on PostgreSQL: suppressions by
// recipient key, preferences by user and topic, in the DB's schema.
type eligibilityStore struct {
	db     *DB
	supp   string
	prefs  string
	closed atomic.Bool
}

var _ eligibility.Store = (*eligibilityStore)(nil)

// Eligibility returns the suppression list's and preferences' store.
func (db *DB) Eligibility() eligibility.Store {
	return &eligibilityStore{db: db, supp: db.schema + ".eligibility_suppressions", prefs: db.schema + ".eligibility_preferences"}
}

func (s *eligibilityStore) check(ctx context.Context) error {
	if s.closed.Load() {
		return eligibility.ErrClosed
	}
	return ctx.Err()
}

// Suppress implements eligibility.Store.
func (s *eligibilityStore) Suppress(ctx context.Context, ss ...eligibility.Suppression) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, x := range ss {
		b.Queue(`INSERT INTO `+s.supp+` (key, channel, masked, reason, source, at) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (key) DO UPDATE SET channel = excluded.channel, masked = excluded.masked, reason = excluded.reason,
			source = excluded.source, at = excluded.at`, x.Key, x.Channel, x.Masked, x.Reason, x.Source, x.At)
	}
	return s.db.pool.SendBatch(ctx, b).Close()
}

// Unsuppress implements eligibility.Store.
func (s *eligibilityStore) Unsuppress(ctx context.Context, key string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	_, err := s.db.pool.Exec(ctx, `DELETE FROM `+s.supp+` WHERE key = $1`, key)
	return err
}

// Suppressed implements eligibility.Store.
func (s *eligibilityStore) Suppressed(ctx context.Context, key string) (eligibility.Suppression, bool, error) {
	if err := s.check(ctx); err != nil {
		return eligibility.Suppression{}, false, err
	}
	x := eligibility.Suppression{Key: key}
	err := s.db.pool.QueryRow(ctx, `SELECT channel, masked, reason, source, at FROM `+s.supp+` WHERE key = $1`, key).
		Scan(&x.Channel, &x.Masked, &x.Reason, &x.Source, &x.At)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return eligibility.Suppression{}, false, nil
	case err != nil:
		return eligibility.Suppression{}, false, err
	}
	x.At = x.At.UTC()
	return x, true, nil
}

// SetPreference implements eligibility.Store: the later choice wins.
func (s *eligibilityStore) SetPreference(ctx context.Context, p eligibility.Preference) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	_, err := s.db.pool.Exec(ctx, `INSERT INTO `+s.prefs+` AS p (user_id, topic, opted_out, at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, topic) DO UPDATE SET opted_out = excluded.opted_out, at = excluded.at WHERE excluded.at >= p.at`,
		p.User, p.Topic, p.OptedOut, p.At)
	return err
}

// OptedOut implements eligibility.Store.
func (s *eligibilityStore) OptedOut(ctx context.Context, user string, topics []string) (string, bool, error) {
	if err := s.check(ctx); err != nil {
		return "", false, err
	}
	rows, err := s.db.pool.Query(ctx, `SELECT topic FROM `+s.prefs+` WHERE user_id = $1 AND topic = ANY($2) AND opted_out`, user, topics)
	if err != nil {
		return "", false, err
	}
	out := map[string]bool{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return "", false, err
		}
		out[t] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", false, err
	}
	for _, t := range topics {
		if out[t] {
			return t, true, nil
		}
	}
	return "", false, nil
}

// Close implements eligibility.Store. The pool is the host's: it stays open.
func (s *eligibilityStore) Close() error {
	s.closed.Store(true)
	return nil
}
