package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
)

// Inbox is inbox.Store on Redis. Per user: a hash of items (ID → JSON
// with their states), a sorted set at score 0 whose members
// "<inverted creation>|<inverted ID>|<ID>" list the feed newest first in
// lexical order, and a hash ID → member. Items are written by the same
// script that enqueues their messages' jobs.
type Inbox struct{ s *Store }

var _ inbox.Store = (*Inbox)(nil)

// Inbox returns the Inbox's store sharing s's client and prefix.
func (s *Store) Inbox() *Inbox { return &Inbox{s: s} }

func (x *Inbox) keys(user string) (items, feed, members string) {
	b := x.s.p + "inbox:" + user + ":"
	return b + "items", b + "feed", b + "members"
}

// member orders newest first: the creation and the ID inverted, so a
// lexical range reads them in feed order; the ID itself at the end.
func member(created time.Time, id string) string {
	inv := make([]byte, len(id))
	for i := 0; i < len(id); i++ {
		inv[i] = 0xff - id[i]
	}
	return fmt.Sprintf("%020d|%x|%s", math.MaxInt64-created.UnixNano(), inv, id)
}

// Enqueuer implements inbox.Store: the jobs (through this store's queue:
// the queue passed in must be it) and the items in one script.
func (x *Inbox) Enqueuer(_ retry.Enqueuer, items []inbox.Item) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		extra := make([]any, 0, 1+4*len(items))
		extra = append(extra, len(items))
		for _, it := range items {
			b, err := json.Marshal(it)
			if err != nil {
				return nil, err
			}
			extra = append(extra, it.User, it.ID, member(it.Created, it.ID), string(b))
		}
		return x.s.enqueueWith(ctx, "inbox", jobs, since, extra...)
	})
}

func (x *Inbox) all(ctx context.Context, user string) ([]inbox.Item, error) {
	items, _, _ := x.keys(user)
	vals, err := x.s.rdb.HVals(ctx, items).Result()
	if err != nil {
		return nil, err
	}
	out := make([]inbox.Item, 0, len(vals))
	for _, v := range vals {
		var it inbox.Item
		if err := json.Unmarshal([]byte(v), &it); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}

func live(it *inbox.Item, now time.Time) bool { return it.Expires.IsZero() || now.Before(it.Expires) }

// Feed implements inbox.Store: it reads the feed in order from the
// sorted set, skipping what the query leaves out, a page at a time.
func (x *Inbox) Feed(ctx context.Context, user string, q inbox.Query) ([]inbox.Item, string, error) {
	if err := x.s.check(ctx); err != nil {
		return nil, "", err
	}
	items, feed, _ := x.keys(user)
	start := "-"
	if q.After != "" {
		c, id, err := inbox.ParseCursor(q.After)
		if err != nil {
			return nil, "", err
		}
		start = "(" + member(c, id)
	}
	n := q.PageSize()
	var out []inbox.Item
	for len(out) <= n {
		ms, err := x.s.rdb.ZRangeByLex(ctx, feed, &redis.ZRangeBy{Min: start, Max: "+", Count: int64(4 * n)}).Result()
		if err != nil {
			return nil, "", err
		}
		if len(ms) == 0 {
			break
		}
		ids := make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m[strings.LastIndexByte(m, '|')+1:]
		}
		vals, err := x.s.rdb.HMGet(ctx, items, ids...).Result()
		if err != nil {
			return nil, "", err
		}
		for _, v := range vals {
			sv, ok := v.(string)
			if !ok {
				continue
			}
			var it inbox.Item
			if err := json.Unmarshal([]byte(sv), &it); err != nil {
				return nil, "", err
			}
			if live(&it, q.Now) && it.ArchivedAt.IsZero() != q.Archived {
				out = append(out, it)
			}
		}
		start = "(" + ms[len(ms)-1]
	}
	next := ""
	if len(out) > n {
		out = out[:n]
		next = inbox.Cursor(out[n-1].Created, out[n-1].ID)
	}
	return out, next, nil
}

// Counts implements inbox.Store.
func (x *Inbox) Counts(ctx context.Context, user string, now time.Time) (inbox.Counts, error) {
	if err := x.s.check(ctx); err != nil {
		return inbox.Counts{}, err
	}
	all, err := x.all(ctx, user)
	if err != nil {
		return inbox.Counts{}, err
	}
	var c inbox.Counts
	for i := range all {
		it := &all[i]
		if !live(it, now) || !it.ArchivedAt.IsZero() {
			continue
		}
		if it.ReadAt.IsZero() {
			c.Unread++
		}
		if it.SeenAt.IsZero() {
			c.Unseen++
		}
	}
	return c, nil
}

var markScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local it = cjson.decode(v)
    local m, at, changed = ARGV[1], ARGV[2], false
    local function unset(f) return it[f] == nil or it[f] == '' or it[f] == '0001-01-01T00:00:00Z' end
    if m == 'read' then
      if unset('read_at') then it.read_at = at; changed = true end
      if unset('seen_at') then it.seen_at = at; changed = true end
    elseif m == 'seen' then
      if unset('seen_at') then it.seen_at = at; changed = true end
    elseif m == 'archived' then
      if unset('archived_at') then it.archived_at = at; changed = true end
    elseif m == 'unread' then
      if not unset('read_at') then it.read_at = nil; changed = true end
    elseif m == 'unarchived' then
      if not unset('archived_at') then it.archived_at = nil; changed = true end
    end
    if changed then
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(it))
      n = n + 1
    end
  end
end
return n`)

// Mark implements inbox.Store.
func (x *Inbox) Mark(ctx context.Context, user string, ids []string, m inbox.Mark, at time.Time) (int, error) {
	if err := x.s.check(ctx); err != nil || len(ids) == 0 {
		return 0, err
	}
	items, _, _ := x.keys(user)
	args := []any{string(m), at.UTC().Format(time.RFC3339Nano)}
	for _, id := range ids {
		args = append(args, id)
	}
	return markScript.Run(ctx, x.s.rdb, []string{items}, args...).Int()
}

// Prune implements inbox.Store: it walks every user's Inbox (SCAN).
func (x *Inbox) Prune(ctx context.Context, now, createdBefore time.Time) (int, error) {
	if err := x.s.check(ctx); err != nil {
		return 0, err
	}
	n := 0
	iter := x.s.rdb.Scan(ctx, 0, x.s.p+"inbox:*:items", 500).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		user := strings.TrimSuffix(strings.TrimPrefix(k, x.s.p+"inbox:"), ":items")
		all, err := x.all(ctx, user)
		if err != nil {
			return n, err
		}
		items, feed, members := x.keys(user)
		for i := range all {
			it := &all[i]
			if live(it, now) && !it.Created.Before(createdBefore) {
				continue
			}
			_, err := x.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HDel(ctx, items, it.ID)
				p.ZRem(ctx, feed, member(it.Created, it.ID))
				p.HDel(ctx, members, it.ID)
				return nil
			})
			if err != nil {
				return n, err
			}
			n++
		}
	}
	return n, iter.Err()
}

// Close implements inbox.Store. The client is the host's: it stays open.
func (x *Inbox) Close() error { return nil }
