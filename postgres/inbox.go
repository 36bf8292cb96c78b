package postgres

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
)

// inboxStore is the inbox.Store on PostgreSQL: items written in the same
// transaction as the jobs of the messages they come from.
type inboxStore struct {
	db *DB
	t  string
}

var _ inbox.Store = (*inboxStore)(nil)

// Inbox returns the Inbox's store.
func (db *DB) Inbox() inbox.Store { return &inboxStore{db: db, t: db.schema + ".inbox_items"} }

type inboxContent struct {
	Title    string            `json:"title,omitempty"`
	Body     string            `json:"body,omitempty"`
	Data     map[string]string `json:"data,omitempty"`
	Category string            `json:"category,omitempty"`
	Campaign string            `json:"campaign,omitempty"`
}

// Enqueuer implements inbox.Store: jobs and items in one transaction (the
// queue passed in must be this DB's).
func (s *inboxStore) Enqueuer(_ retry.Enqueuer, items []inbox.Item) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
			var err error
			if len(jobs) > 0 {
				if res, err = s.db.retry.enqueueIn(ctx, tx, jobs, since, true); err != nil {
					return err
				}
			}
			b := &pgx.Batch{}
			for _, it := range items {
				content, err := json.Marshal(inboxContent{Title: it.Title, Body: it.Body, Data: it.Data, Category: it.Category, Campaign: it.Campaign})
				if err != nil {
					return err
				}
				b.Queue(`INSERT INTO `+s.t+` (user_id, id, created, expires, content) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
					it.User, it.ID, it.Created, ts(it.Expires), content)
			}
			return tx.SendBatch(ctx, b).Close()
		})
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

const inboxCols = `user_id, id, created, expires, read_at, seen_at, archived_at, content`

func scanInbox(r pgx.Row) (inbox.Item, error) {
	var it inbox.Item
	var expires, read, seen, archived *time.Time
	var content []byte
	if err := r.Scan(&it.User, &it.ID, &it.Created, &expires, &read, &seen, &archived, &content); err != nil {
		return inbox.Item{}, err
	}
	var c inboxContent
	if err := json.Unmarshal(content, &c); err != nil {
		return inbox.Item{}, err
	}
	it.Title, it.Body, it.Data, it.Category, it.Campaign = c.Title, c.Body, c.Data, c.Category, c.Campaign
	it.Created = it.Created.UTC()
	for _, p := range []struct {
		src *time.Time
		dst *time.Time
	}{{expires, &it.Expires}, {read, &it.ReadAt}, {seen, &it.SeenAt}, {archived, &it.ArchivedAt}} {
		if p.src != nil {
			*p.dst = p.src.UTC()
		}
	}
	return it, nil
}

// Feed implements inbox.Store.
func (s *inboxStore) Feed(ctx context.Context, user string, q inbox.Query) ([]inbox.Item, string, error) {
	where := []string{"user_id = $1", "(expires IS NULL OR expires > $2)"}
	args := []any{user, q.Now}
	if q.Archived {
		where = append(where, "archived_at IS NOT NULL")
	} else {
		where = append(where, "archived_at IS NULL")
	}
	if q.After != "" {
		c, id, err := inbox.ParseCursor(q.After)
		if err != nil {
			return nil, "", err
		}
		args = append(args, c, id)
		where = append(where, "(created, id COLLATE \"C\") < ($3, $4)")
	}
	n := q.PageSize()
	args = append(args, n+1)
	rows, err := s.db.pool.Query(ctx, `SELECT `+inboxCols+` FROM `+s.t+` WHERE `+strings.Join(where, " AND ")+
		` ORDER BY created DESC, id COLLATE "C" DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []inbox.Item
	for rows.Next() {
		it, err := scanInbox(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > n {
		out = out[:n]
		next = inbox.Cursor(out[n-1].Created, out[n-1].ID)
	}
	return out, next, nil
}

// Counts implements inbox.Store.
func (s *inboxStore) Counts(ctx context.Context, user string, now time.Time) (inbox.Counts, error) {
	var c inbox.Counts
	err := s.db.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE read_at IS NULL), count(*) FILTER (WHERE seen_at IS NULL) FROM `+s.t+`
		WHERE user_id = $1 AND archived_at IS NULL AND (expires IS NULL OR expires > $2)`, user, now).Scan(&c.Unread, &c.Unseen)
	return c, err
}

// Mark implements inbox.Store.
func (s *inboxStore) Mark(ctx context.Context, user string, ids []string, m inbox.Mark, at time.Time) (int, error) {
	var set, cond string
	switch m {
	case inbox.Read:
		set, cond = "read_at = $3, seen_at = coalesce(seen_at, $3)", "read_at IS NULL"
	case inbox.Seen:
		set, cond = "seen_at = $3", "seen_at IS NULL"
	case inbox.Archived:
		set, cond = "archived_at = $3", "archived_at IS NULL"
	case inbox.Unread:
		set, cond = "read_at = NULL", "read_at IS NOT NULL AND $3::timestamptz IS NOT NULL"
	case inbox.Unarchived:
		set, cond = "archived_at = NULL", "archived_at IS NOT NULL AND $3::timestamptz IS NOT NULL"
	default:
		return 0, nil
	}
	tag, err := s.db.pool.Exec(ctx, `UPDATE `+s.t+` SET `+set+` WHERE user_id = $1 AND id = ANY($2) AND `+cond, user, ids, at)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// Prune implements inbox.Store.
func (s *inboxStore) Prune(ctx context.Context, now, createdBefore time.Time) (int, error) {
	tag, err := s.db.pool.Exec(ctx, `DELETE FROM `+s.t+` WHERE expires <= $1 OR created < $2`, now, createdBefore)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// Close implements inbox.Store. The pool is the host's: it stays open.
func (s *inboxStore) Close() error { return nil }
