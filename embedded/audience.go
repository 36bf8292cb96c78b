package embedded

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/heraldhq/herald/audience"
)

// audienceStore is the audience.Store of a DB: members by audience and
// user (their fields as JSON), applied upload IDs beside them.
type audienceStore struct{ db *DB }

var _ audience.Store = (*audienceStore)(nil)

// Audiences returns the stored audiences' store in this file.
func (db *DB) Audiences() audience.Store { return &audienceStore{db: db} }

// Upload implements audience.Store: the upload ID and its members are one write.
func (s *audienceStore) Upload(ctx context.Context, aud, id string, ms []audience.Member) (bool, error) {
	dup := false
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		r, err := s.db.wexec(ctx, `INSERT OR IGNORE INTO audience_uploads (audience, upload_id) VALUES (?, ?)`, aud, id)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			dup = true
			return nil
		}
		dup = false
		for _, m := range ms {
			b, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if _, err := s.db.wexec(ctx, `INSERT OR REPLACE INTO audience_members (audience, user, data) VALUES (?, ?, ?)`, aud, m.User, b); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	return dup, err
}

// Remove implements audience.Store.
func (s *audienceStore) Remove(ctx context.Context, aud string, users []string) error {
	return s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		for _, u := range users {
			if _, err := s.db.wexec(ctx, `DELETE FROM audience_members WHERE audience = ? AND user = ?`, aud, u); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// Page implements audience.Store.
func (s *audienceStore) Page(ctx context.Context, aud, after string, limit int) ([]audience.Member, error) {
	if s.db.isClosed() {
		return nil, errStoreClosed
	}
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT data FROM audience_members WHERE audience = ? AND user > ? ORDER BY user LIMIT ?`, aud, after, limit)
	if err != nil {
		return nil, s.db.classify(err)
	}
	defer rows.Close()
	var out []audience.Member
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var m audience.Member
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Size implements audience.Store.
func (s *audienceStore) Size(ctx context.Context, aud string) (int, error) {
	if s.db.isClosed() {
		return 0, errStoreClosed
	}
	var n int
	err := s.db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM audience_members WHERE audience = ?`, aud).Scan(&n)
	return n, err
}

// Close implements audience.Store: it closes the whole DB.
func (s *audienceStore) Close() error { return s.db.Close() }
