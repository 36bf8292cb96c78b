package postgres

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/audience"
)

// audienceStore is the audience.Store on PostgreSQL.
type audienceStore struct {
	db               *DB
	members, uploads string
}

var _ audience.Store = (*audienceStore)(nil)

// Audiences returns the stored audiences' store.
func (db *DB) Audiences() audience.Store {
	return &audienceStore{db: db, members: db.schema + ".audience_members", uploads: db.schema + ".audience_uploads"}
}

// Upload implements audience.Store: the upload ID and its members are one transaction.
func (s *audienceStore) Upload(ctx context.Context, aud, id string, ms []audience.Member) (bool, error) {
	dup := false
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO `+s.uploads+` (audience, upload_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, aud, id)
		if err != nil {
			return err
		}
		if dup = tag.RowsAffected() == 0; dup {
			return nil
		}
		b := &pgx.Batch{}
		for _, m := range ms {
			data, err := json.Marshal(m)
			if err != nil {
				return err
			}
			b.Queue(`INSERT INTO `+s.members+` (audience, user_id, data) VALUES ($1, $2, $3)
				ON CONFLICT (audience, user_id) DO UPDATE SET data = excluded.data`, aud, m.User, data)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	return dup, err
}

// Remove implements audience.Store.
func (s *audienceStore) Remove(ctx context.Context, aud string, users []string) error {
	_, err := s.db.pool.Exec(ctx, `DELETE FROM `+s.members+` WHERE audience = $1 AND user_id = ANY($2)`, aud, users)
	return err
}

// Page implements audience.Store.
func (s *audienceStore) Page(ctx context.Context, aud, after string, limit int) ([]audience.Member, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT data FROM `+s.members+` WHERE audience = $1 AND user_id > $2 ORDER BY user_id COLLATE "C" LIMIT $3`, aud, after, limit)
	if err != nil {
		return nil, err
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
	var n int
	err := s.db.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.members+` WHERE audience = $1`, aud).Scan(&n)
	return n, err
}

// Close implements audience.Store. The pool is the host's: it stays open.
func (s *audienceStore) Close() error { return nil }
