package redisstore

import (
	"context"
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/audience"
)

// Audiences is audience.Store on Redis: a sorted set of users per
// audience (all at score 0, so ZRANGEBYLEX pages them in user order), a
// hash of members' fields as JSON, and a set of applied upload IDs; an
// upload is one script.
type Audiences struct{ s *Store }

var _ audience.Store = (*Audiences)(nil)

// Audiences returns the stored audiences' store sharing s's client and prefix.
func (s *Store) Audiences() *Audiences { return &Audiences{s: s} }

func (a *Audiences) keys(aud string) (users, data, uploads string) {
	b := a.s.p + "aud:" + aud + ":"
	return b + "users", b + "data", b + "uploads"
}

var uploadScript = redis.NewScript(`
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 1 end
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 0`)

// Upload implements audience.Store.
func (a *Audiences) Upload(ctx context.Context, aud, id string, ms []audience.Member) (bool, error) {
	if err := a.s.check(ctx); err != nil {
		return false, err
	}
	u, d, up := a.keys(aud)
	args := []any{id}
	for _, m := range ms {
		b, err := json.Marshal(m)
		if err != nil {
			return false, err
		}
		args = append(args, m.User, string(b))
	}
	n, err := uploadScript.Run(ctx, a.s.rdb, []string{u, d, up}, args...).Int()
	return n == 1, err
}

// Remove implements audience.Store.
func (a *Audiences) Remove(ctx context.Context, aud string, users []string) error {
	if err := a.s.check(ctx); err != nil || len(users) == 0 {
		return err
	}
	u, d, _ := a.keys(aud)
	_, err := a.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		vals := make([]any, len(users))
		for i, x := range users {
			vals[i] = x
		}
		p.ZRem(ctx, u, vals...)
		p.HDel(ctx, d, users...)
		return nil
	})
	return err
}

// Page implements audience.Store.
func (a *Audiences) Page(ctx context.Context, aud, after string, limit int) ([]audience.Member, error) {
	if err := a.s.check(ctx); err != nil {
		return nil, err
	}
	u, d, _ := a.keys(aud)
	min := "-"
	if after != "" {
		min = "(" + after
	}
	users, err := a.s.rdb.ZRangeByLex(ctx, u, &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)}).Result()
	if err != nil || len(users) == 0 {
		return nil, err
	}
	vals, err := a.s.rdb.HMGet(ctx, d, users...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]audience.Member, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var m audience.Member
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Size implements audience.Store.
func (a *Audiences) Size(ctx context.Context, aud string) (int, error) {
	if err := a.s.check(ctx); err != nil {
		return 0, err
	}
	u, _, _ := a.keys(aud)
	n, err := a.s.rdb.ZCard(ctx, u).Result()
	return int(n), err
}

// Close implements audience.Store. The client is the host's: it stays open.
func (a *Audiences) Close() error { return nil }
