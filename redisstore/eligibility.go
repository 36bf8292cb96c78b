package redisstore

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/eligibility"
)

// Eligibility is eligibility.Store on Redis: a hash per suppression
// ({prefix}elig:s:<key>) and a hash of topics per user
// ({prefix}elig:p:<user>, each value "0|at" or "1|at", the later choice
// winning in one script). Both are written with the server's
// appendfsync, like the queue.
type Eligibility struct {
	rdb    redis.UniversalClient
	p      string
	closed atomic.Bool
}

var _ eligibility.Store = (*Eligibility)(nil)

// Eligibility returns the suppression list's and preferences' store
// sharing s's client and prefix.
func (s *Store) Eligibility() *Eligibility { return &Eligibility{rdb: s.rdb, p: s.p} }

func (e *Eligibility) check(ctx context.Context) error {
	if e.closed.Load() {
		return eligibility.ErrClosed
	}
	return ctx.Err()
}

// Suppress implements eligibility.Store.
func (e *Eligibility) Suppress(ctx context.Context, ss ...eligibility.Suppression) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, x := range ss {
			k := e.p + "elig:s:" + x.Key
			p.Del(ctx, k)
			p.HSet(ctx, k, "channel", x.Channel, "masked", x.Masked, "reason", x.Reason, "source", x.Source, "at", us(x.At))
		}
		return nil
	})
	return err
}

// Unsuppress implements eligibility.Store.
func (e *Eligibility) Unsuppress(ctx context.Context, key string) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.rdb.Del(ctx, e.p+"elig:s:"+key).Err()
}

// Suppressed implements eligibility.Store.
func (e *Eligibility) Suppressed(ctx context.Context, key string) (eligibility.Suppression, bool, error) {
	if err := e.check(ctx); err != nil {
		return eligibility.Suppression{}, false, err
	}
	m, err := e.rdb.HGetAll(ctx, e.p+"elig:s:"+key).Result()
	if err != nil {
		return eligibility.Suppression{}, false, err
	}
	if len(m) == 0 {
		return eligibility.Suppression{}, false, nil
	}
	return eligibility.Suppression{Key: key, Channel: m["channel"], Masked: m["masked"], Reason: m["reason"],
		Source: m["source"], At: fromUS(m["at"])}, true, nil
}

var setPref = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sep = string.find(cur, '|')
  if tonumber(string.sub(cur, sep + 1)) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return 1`)

// SetPreference implements eligibility.Store: the later choice wins.
func (e *Eligibility) SetPreference(ctx context.Context, p eligibility.Preference) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	out := "0"
	if p.OptedOut {
		out = "1"
	}
	return setPref.Run(ctx, e.rdb, []string{e.p + "elig:p:" + p.User}, p.Topic, out, us(p.At)).Err()
}

// OptedOut implements eligibility.Store.
func (e *Eligibility) OptedOut(ctx context.Context, user string, topics []string) (string, bool, error) {
	if err := e.check(ctx); err != nil {
		return "", false, err
	}
	if len(topics) == 0 {
		return "", false, nil
	}
	vals, err := e.rdb.HMGet(ctx, e.p+"elig:p:"+user, topics...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", false, err
	}
	for i, v := range vals {
		if s, ok := v.(string); ok && strings.HasPrefix(s, "1|") {
			return topics[i], true, nil
		}
	}
	return "", false, nil
}

// Close implements eligibility.Store. The client is the host's: it stays open.
func (e *Eligibility) Close() error {
	e.closed.Store(true)
	return nil
}
