package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"time"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
)

// inboxStore is the inbox.Store of a DB: items by user and ID, their
// content as JSON, their states as times; written in the same write as
// the jobs of the messages they come from.
type inboxStore struct{ db *DB }

var _ inbox.Store = (*inboxStore)(nil)

// Inbox returns the Inbox's store in this file.
func (db *DB) Inbox() inbox.Store { return &inboxStore{db: db} }

type inboxContent struct {
	Title    string            `json:"title,omitempty"`
	Body     string            `json:"body,omitempty"`
	Data     map[string]string `json:"data,omitempty"`
	Category string            `json:"category,omitempty"`
	Campaign string            `json:"campaign,omitempty"`
}

// Enqueuer implements inbox.Store: the jobs go to this file's queue (the
// queue passed in must be it) and the items in the same write.
func (s *inboxStore) Enqueuer(_ retry.Enqueuer, items []inbox.Item) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		var res []retry.EnqueueResult
		err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
			var err error
			if len(jobs) > 0 {
				if res, err = s.db.retry.enqueueIn(ctx, jobs, since); err != nil {
					return err
				}
			}
			for _, it := range items {
				b, err := json.Marshal(inboxContent{Title: it.Title, Body: it.Body, Data: it.Data, Category: it.Category, Campaign: it.Campaign})
				if err != nil {
					return err
				}
				if _, err := s.db.wexec(ctx, `INSERT OR IGNORE INTO inbox_items (user, id, created, expires, read_at, seen_at, archived_at, content)
					VALUES (?, ?, ?, ?, 0, 0, 0, ?)`, it.User, it.ID, nanos(it.Created), nanos(it.Expires), b); err != nil {
					return err
				}
			}
			return nil
		}, func() { s.db.retry.admit(jobs, res) })
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

const inboxCols = `user, id, created, expires, read_at, seen_at, archived_at, content`

func scanItem(r scanner) (inbox.Item, error) {
	var it inbox.Item
	var created, expires, read, seen, archived int64
	var b []byte
	if err := r.Scan(&it.User, &it.ID, &created, &expires, &read, &seen, &archived, &b); err != nil {
		return inbox.Item{}, err
	}
	var c inboxContent
	if err := json.Unmarshal(b, &c); err != nil {
		return inbox.Item{}, err
	}
	it.Title, it.Body, it.Data, it.Category, it.Campaign = c.Title, c.Body, c.Data, c.Category, c.Campaign
	it.Created, it.Expires = fromNanos(created), fromNanos(expires)
	it.ReadAt, it.SeenAt, it.ArchivedAt = fromNanos(read), fromNanos(seen), fromNanos(archived)
	return it, nil
}

// Feed implements inbox.Store.
func (s *inboxStore) Feed(ctx context.Context, user string, q inbox.Query) ([]inbox.Item, string, error) {
	if s.db.isClosed() {
		return nil, "", errStoreClosed
	}
	where := []string{"user = ?", "(expires = 0 OR expires > ?)"}
	args := []any{user, q.Now.UnixNano()}
	if q.Archived {
		where = append(where, "archived_at <> 0")
	} else {
		where = append(where, "archived_at = 0")
	}
	if q.After != "" {
		c, id, err := inbox.ParseCursor(q.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created < ? OR (created = ? AND id < ?))")
		args = append(args, c.UnixNano(), c.UnixNano(), id)
	}
	n := q.PageSize()
	args = append(args, n+1)
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT `+inboxCols+` FROM inbox_items WHERE `+strings.Join(where, " AND ")+
		` ORDER BY created DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, "", s.db.classify(err)
	}
	defer rows.Close()
	var out []inbox.Item
	for rows.Next() {
		it, err := scanItem(rows)
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
	if s.db.isClosed() {
		return inbox.Counts{}, errStoreClosed
	}
	var c inbox.Counts
	err := s.db.rdb.QueryRowContext(ctx, `SELECT coalesce(sum(read_at = 0), 0), coalesce(sum(seen_at = 0), 0) FROM inbox_items
		WHERE user = ? AND archived_at = 0 AND (expires = 0 OR expires > ?)`, user, now.UnixNano()).Scan(&c.Unread, &c.Unseen)
	return c, err
}

// Mark implements inbox.Store.
func (s *inboxStore) Mark(ctx context.Context, user string, ids []string, m inbox.Mark, at time.Time) (int, error) {
	var set, cond string
	switch m {
	case inbox.Read:
		set, cond = "read_at = ?1, seen_at = CASE WHEN seen_at = 0 THEN ?1 ELSE seen_at END", "read_at = 0"
	case inbox.Seen:
		set, cond = "seen_at = ?1", "seen_at = 0"
	case inbox.Archived:
		set, cond = "archived_at = ?1", "archived_at = 0"
	case inbox.Unread:
		set, cond = "read_at = 0", "read_at <> 0 AND ?1 = ?1"
	case inbox.Unarchived:
		set, cond = "archived_at = 0", "archived_at <> 0 AND ?1 = ?1"
	default:
		return 0, nil
	}
	n := 0
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		n = 0
		for _, id := range ids {
			r, err := c.ExecContext(ctx, `UPDATE inbox_items SET `+set+` WHERE user = ?2 AND id = ?3 AND `+cond, at.UnixNano(), user, id)
			if err != nil {
				return err
			}
			k, _ := r.RowsAffected()
			n += int(k)
		}
		return nil
	}, nil)
	return n, err
}

// Prune implements inbox.Store.
func (s *inboxStore) Prune(ctx context.Context, now, createdBefore time.Time) (int, error) {
	n := 0
	err := s.db.write(ctx, func(ctx context.Context, c *sql.Conn) error {
		r, err := c.ExecContext(ctx, `DELETE FROM inbox_items WHERE (expires <> 0 AND expires <= ?) OR created < ?`, now.UnixNano(), createdBefore.UnixNano())
		if err != nil {
			return err
		}
		k, _ := r.RowsAffected()
		n = int(k)
		return nil
	}, nil)
	return n, err
}

// Close implements inbox.Store: it closes the whole DB.
func (s *inboxStore) Close() error { return s.db.Close() }
