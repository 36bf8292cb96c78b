package redisstore

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/capping"
)

// Capping is capping.Store on Redis: a counter is a sorted set of slots
// (member: reservation ID, score: time in µs); a pending reservation is a
// hash with its lease and keys. One script checks every counter and takes
// the slots, so a reservation is atomic across rules and hosts.
type Capping struct {
	rdb    redis.UniversalClient
	p      string
	closed atomic.Bool
}

var _ capping.Store = (*Capping)(nil)

// Capping returns the capping store sharing s's client and prefix.
func (s *Store) Capping() *Capping { return &Capping{rdb: s.rdb, p: s.p} }

var capScripts = map[string]*redis.Script{
	// KEYS[1] prefix; ARGV: id, at, lease, n, then per check: key since limit
	"reserve": redis.NewScript(`
local p, id, at, lease, n = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', p .. 'capres:' .. id) == 1 then return -1 end -- a retry of a pending reservation
local seen = redis.call('ZSCORE', p .. 'cap:' .. ARGV[5], id)
if seen and tonumber(seen) >= tonumber(ARGV[6]) then return -1 end -- committed already: the message counts once
for i = 0, n - 1 do
  local k, since, limit = p .. 'cap:' .. ARGV[5 + i*3], ARGV[6 + i*3], tonumber(ARGV[7 + i*3])
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. since)
  if redis.call('ZCOUNT', k, since, '+inf') >= limit then return i end
end
local keys = {}
for i = 0, n - 1 do
  local key = ARGV[5 + i*3]
  redis.call('ZADD', p .. 'cap:' .. key, at, id)
  keys[#keys + 1] = key
end
redis.call('HSET', p .. 'capres:' .. id, 'lease', lease, 'keys', table.concat(keys, '\n'))
return -1`),
	// ARGV: id, now, mode (commit | release)
	"settle": redis.NewScript(`
local p, id, now, mode = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local h = redis.call('HMGET', p .. 'capres:' .. id, 'lease', 'keys')
if not h[1] then return 'unknown' end
redis.call('DEL', p .. 'capres:' .. id)
if mode == 'commit' then return 'ok' end
if now >= tonumber(h[1]) then return 'expired' end
for key in string.gmatch(h[2], '[^\n]+') do redis.call('ZREM', p .. 'cap:' .. key, id) end
return 'ok'`),
}

func (c *Capping) check(ctx context.Context) error {
	if c.closed.Load() {
		return capping.ErrClosed
	}
	return ctx.Err()
}

// Reserve implements capping.Store.
func (c *Capping) Reserve(ctx context.Context, id string, checks []capping.Check, at, leaseUntil time.Time) (int, error) {
	if err := c.check(ctx); err != nil {
		return 0, err
	}
	if len(checks) == 0 {
		return -1, nil
	}
	args := []any{id, at.UnixMicro(), leaseUntil.UnixMicro(), len(checks)}
	for _, ch := range checks {
		args = append(args, ch.Key, ch.Since.UnixMicro(), ch.Limit)
	}
	v, err := capScripts["reserve"].Run(ctx, c.rdb, []string{c.p}, args...).Int()
	return v, err
}

func (c *Capping) settle(ctx context.Context, id string, now time.Time, mode string) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	v, err := capScripts["settle"].Run(ctx, c.rdb, []string{c.p}, id, now.UnixMicro(), mode).Text()
	switch {
	case err != nil:
		return err
	case v == "unknown":
		return capping.ErrUnknownReservation
	case v == "expired":
		return capping.ErrLeaseExpired
	}
	return nil
}

// Commit implements capping.Store.
func (c *Capping) Commit(ctx context.Context, id string) error {
	return c.settle(ctx, id, time.Time{}, "commit")
}

// Release implements capping.Store.
func (c *Capping) Release(ctx context.Context, id string, now time.Time) error {
	return c.settle(ctx, id, now, "release")
}

// Add implements capping.Store.
func (c *Capping) Add(ctx context.Context, id string, keys []string, at time.Time) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	pipe := c.rdb.TxPipeline()
	for _, k := range keys {
		pipe.ZAddNX(ctx, c.p+"cap:"+k, redis.Z{Score: float64(at.UnixMicro()), Member: id})
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Slots implements capping.Store.
func (c *Capping) Slots(ctx context.Context, key string, since time.Time) ([]capping.Slot, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	zs, err := c.rdb.ZRangeByScoreWithScores(ctx, c.p+"cap:"+key, &redis.ZRangeBy{Min: strconv.FormatInt(since.UnixMicro(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	pipe := c.rdb.Pipeline()
	exists := make([]*redis.IntCmd, len(zs))
	for i, z := range zs {
		exists[i] = pipe.Exists(ctx, c.p+"capres:"+z.Member.(string))
	}
	if len(zs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]capping.Slot, len(zs))
	for i, z := range zs {
		out[i] = capping.Slot{At: time.UnixMicro(int64(z.Score)).UTC(), Pending: exists[i].Val() == 1}
	}
	return out, nil
}

// Close implements capping.Store. The client is the host's: it stays open.
func (c *Capping) Close() error {
	c.closed.Store(true)
	return nil
}
