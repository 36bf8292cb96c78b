// Package redisstore runs the retry queue on Redis
// (github.com/redis/go-redis/v9), for hosts that share a Redis rather than
// a PostgreSQL. Every state change is one Lua script, so it is atomic;
// scheduled jobs wait in sorted sets by run-at, due jobs in one sorted set
// per lane and priority, leases in a sorted set by expiry (so a dead
// worker's jobs are rescued), and a fencing token in each job's hash.
//
// Durability is Redis's: the promise "accepted means on disk" holds only
// with appendonly yes and appendfsync always. With appendfsync everysec
// up to a second of acknowledged enqueues can be lost in a crash; without
// the AOF, everything since the last snapshot. New checks the server's
// settings and logs a warning when they are weaker (Durability reports
// them).
package redisstore

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/retry"
)

// Config configures a Store.
type Config struct {
	// Prefix namespaces every key. Default "herald". Keys use a hash tag,
	// {prefix}, so they share one cluster slot.
	Prefix string
	Logger *slog.Logger
	// EnqueueFlights is how many enqueue scripts may be in flight at once;
	// enqueue calls that arrive meanwhile are coalesced into the next
	// script (see Store.Enqueue). Default 2; negative: no coalescing, one
	// script per call.
	EnqueueFlights int
}

// Store is retry.Store on Redis.
type Store struct {
	rdb    redis.UniversalClient
	p      string
	log    *slog.Logger
	closed atomic.Bool
	enq    *coalescer // nil: no coalescing
}

var _ retry.Store = (*Store)(nil)

// Durability is what the server's persistence settings promise.
type Durability struct {
	AppendOnly  string // "yes" or "no"
	AppendFsync string // "always", "everysec" or "no"
	// Durable is true when an acknowledged write survives a crash.
	Durable bool
}

// New returns a store on the host's client. It reads the server's
// persistence settings and warns when acknowledged writes could be lost.
func New(ctx context.Context, rdb redis.UniversalClient, cfg *Config) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisstore: New: missing client (redis.NewClient)")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Prefix = cmp.Or(c.Prefix, "herald")
	if strings.ContainsAny(c.Prefix, "{}") {
		return nil, errors.New("redisstore: Config.Prefix may not contain braces")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{rdb: rdb, p: "{" + c.Prefix + "}:", log: c.Logger}
	d, err := s.Durability(ctx)
	if err != nil {
		return nil, fmt.Errorf("redisstore: reading persistence settings: %w", err)
	}
	if c.EnqueueFlights >= 0 {
		s.enq = &coalescer{s: s, max: cmp.Or(c.EnqueueFlights, 2)}
	}
	if !d.Durable {
		c.Logger.Warn("redisstore: Redis persistence is weaker than herald's promise; acknowledged jobs can be lost in a crash (set appendonly yes and appendfsync always)",
			"appendonly", d.AppendOnly, "appendfsync", d.AppendFsync)
	}
	return s, nil
}

// Durability reads the server's appendonly and appendfsync settings.
func (s *Store) Durability(ctx context.Context) (Durability, error) {
	var d Durability
	for _, p := range []struct {
		name string
		dst  *string
	}{{"appendonly", &d.AppendOnly}, {"appendfsync", &d.AppendFsync}} {
		m, err := s.rdb.ConfigGet(ctx, p.name).Result()
		if err != nil {
			return d, err
		}
		*p.dst = m[p.name]
	}
	d.Durable = d.AppendOnly == "yes" && d.AppendFsync == "always"
	return d, nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return retry.ErrClosed
	}
	return ctx.Err()
}

func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUS(v string) time.Time {
	n, _ := strconv.ParseInt(v, 10, 64)
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(n).UTC()
}

//go:embed scripts.lua
var scriptsLua string

var scripts = func() map[string]*redis.Script {
	out := map[string]*redis.Script{}
	bodies := map[string]string{}
	for _, part := range strings.Split(scriptsLua, "--@@ ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		bodies[strings.TrimSpace(name)] = body
		out[strings.TrimSpace(name)] = redis.NewScript(common + body)
	}
	// checkpoint is enqueue with a fan-out's record moved in the same
	// script (atomic: no other command runs between), refused before any
	// write when the record does not exist.
	enq := strings.TrimSpace(bodies["enqueue"])
	enq = strings.TrimSuffix(enq, "return out")
	out["checkpoint"] = redis.NewScript(common + checkpointPrologue + enq + checkpointEpilogue)
	// drain is enqueue with a staged page moved in the same script.
	out["drain"] = redis.NewScript(common + drainPrologue + enq + drainEpilogue)
	// inbox is enqueue with Inbox items written in the same script.
	out["inbox"] = redis.NewScript(common + "local nj = tonumber(ARGV[1])\nlocal ib = 2 + nj * 14\n" + enq + inboxEpilogue)
	return out
}()

// The checkpoint script's extra arguments follow the jobs: record key,
// cursor, recipients, invalid, done.
const checkpointPrologue = `
local nj = tonumber(ARGV[1])
local cb = 2 + nj * 14
local ck = p .. 'ck:' .. ARGV[cb]
if redis.call('EXISTS', ck) == 0 then return redis.error_reply('checkpoint: not found') end
`

// The inbox script's extra arguments follow the jobs: the number of
// items, then per item its user, ID, feed member and JSON. An item
// already there (by user and ID) is left as it is.
const inboxEpilogue = `
local ni = tonumber(ARGV[ib])
for i = 0, ni - 1 do
  local b = ib + 1 + i * 4
  local user, id, member, data = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3]
  if redis.call('HSETNX', p .. 'inbox:' .. user .. ':items', id, data) == 1 then
    redis.call('ZADD', p .. 'inbox:' .. user .. ':feed', 0, member)
    redis.call('HSET', p .. 'inbox:' .. user .. ':members', id, member)
  end
end
return out
`

// countMade counts the jobs an enqueue made (not duplicates); on a
// conflict (nothing of the jobs written) it returns, leaving the record
// or page the script would move as it was.
const countMade = `
local made = 0
for _, r in ipairs(out) do
  if r[2] >= 2 then return out end
  if r[2] == 0 then made = made + 1 end
end
`

const checkpointEpilogue = countMade + `
redis.call('HSET', ck, 'cursor', ARGV[cb + 1])
redis.call('HINCRBY', ck, 'recipients', tonumber(ARGV[cb + 2]))
redis.call('HINCRBY', ck, 'invalid', tonumber(ARGV[cb + 3]))
redis.call('HINCRBY', ck, 'enqueued', made)
if ARGV[cb + 4] == '1' then redis.call('HSET', ck, 'done', 1) end
return out
`

// The drain script's extra arguments follow the jobs: record key, page
// seq, offset, invalid. A stale drain (page gone, or already past offset)
// is refused before any write; a conflict leaves the page as it was.
const drainPrologue = `
local nj = tonumber(ARGV[1])
local cb = 2 + nj * 14
local ck, pg = p .. 'ck:' .. ARGV[cb], p .. 'ckp:' .. ARGV[cb]
local seq, offset = ARGV[cb + 1], tonumber(ARGV[cb + 2])
local pc = redis.call('HMGET', pg, 'c' .. seq, 'o' .. seq)
if not pc[1] or offset <= tonumber(pc[2]) or offset > tonumber(pc[1]) then return redis.error_reply('checkpoint: not found') end
`

const drainEpilogue = countMade + `
if offset == tonumber(pc[1]) then
  redis.call('HDEL', pg, 'd' .. seq, 'c' .. seq, 'o' .. seq)
  redis.call('ZREM', p .. 'ckz:' .. ARGV[cb], seq)
else
  redis.call('HSET', pg, 'o' .. seq, offset)
end
redis.call('HINCRBY', ck, 'enqueued', made)
redis.call('HINCRBY', ck, 'drained', offset - tonumber(pc[2]))
redis.call('HINCRBY', ck, 'invalid', tonumber(ARGV[cb + 3]))
return out
`

// common is prepended to every script: key helpers and indexing.
const common = `
local p = KEYS[1]
local function pad(id) return string.format('%020d', id) end
local function job(id) return p .. 'job:' .. id end
local function index(id)
  local h = redis.call('HMGET', job(id), 'lane', 'state', 'priority', 'run_at', 'finished_at')
  local lane, state, prio, runat, fin = h[1], tonumber(h[2]), h[3], tonumber(h[4]), tonumber(h[5])
  if state == 1 then
    redis.call('ZADD', p .. 'ready:' .. lane .. ':' .. prio, runat, pad(id))
    redis.call('ZADD', p .. 'prios:' .. lane, -tonumber(prio), prio)
  elseif state == 2 then
    redis.call('ZADD', p .. 'sched:' .. lane, runat, id)
  elseif state == 4 or state == 5 or state == 6 then
    redis.call('ZADD', p .. 'fin:' .. lane .. ':' .. state, fin, id)
  end
end
local function unindex(id)
  local h = redis.call('HMGET', job(id), 'lane', 'state', 'priority')
  local lane, state, prio = h[1], tonumber(h[2]), h[3]
  if not lane then return end
  if state == 1 then redis.call('ZREM', p .. 'ready:' .. lane .. ':' .. prio, pad(id))
  elseif state == 2 then redis.call('ZREM', p .. 'sched:' .. lane, id)
  elseif state == 3 then redis.call('ZREM', p .. 'running', id); redis.call('ZREM', p .. 'running:' .. lane, id)
  else redis.call('ZREM', p .. 'fin:' .. lane .. ':' .. state, id) end
end
`

func (s *Store) run(ctx context.Context, name string, args ...any) (any, error) {
	return scripts[name].Run(ctx, s.rdb, []string{s.p}, args...).Result()
}

// enqueueNow runs the enqueue script for ops' jobs, in order, and stores
// each op's results.
func (s *Store) enqueueNow(ctx context.Context, ops []*enqOp) error {
	n := 0
	for _, o := range ops {
		n += len(o.jobs)
	}
	args := make([]any, 0, 1+14*n)
	args = append(args, n)
	for oi, o := range ops {
		args = appendJobArgs(args, o.jobs, o.keysSince, oi)
	}
	v, err := s.run(ctx, "enqueue", args...)
	if err != nil {
		return err
	}
	arr, _ := v.([]any)
	if len(arr) != n {
		return fmt.Errorf("redisstore: enqueue script returned %d results for %d jobs", len(arr), n)
	}
	for _, o := range ops {
		o.res = make([]retry.EnqueueResult, len(o.jobs))
		conflict := -1
		for i := range o.res {
			pair := arr[0].([]any)
			arr = arr[1:]
			if pair[1].(int64) == 2 {
				conflict = i
			}
			o.res[i] = retry.EnqueueResult{ID: pair[0].(int64), Duplicate: pair[1].(int64) == 1}
		}
		if conflict >= 0 {
			o.res = nil
			o.err = &retry.ConflictError{Index: conflict, Key: o.jobs[conflict].IdempotencyKey}
		}
	}
	return nil
}

// appendJobArgs appends the enqueue script's 14 arguments per job; op
// numbers the caller's call among those a coalesced script carries.
func appendJobArgs(args []any, jobs []*retry.Job, keysSince time.Time, op int) []any {
	since := us(keysSince)
	for _, j := range jobs {
		args = append(args, j.Kind, j.Lane, int(j.State), j.Priority, us(j.RunAt), us(j.ExpiresAt), j.MaxAttempts,
			j.IdempotencyKey, us(j.CreatedAt), us(j.UpdatedAt), string(j.Payload), since, j.Digest, op)
	}
	return args
}

// enqueueWith runs script, an enqueue script with more written in the
// same script (a checkpoint's record, Inbox items), for one caller's
// jobs followed by extra arguments, and returns the jobs' results, or a
// *retry.ConflictError.
func (s *Store) enqueueWith(ctx context.Context, script string, jobs []*retry.Job, keysSince time.Time, extra ...any) ([]retry.EnqueueResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	args := appendJobArgs(append(make([]any, 0, 1+14*len(jobs)+len(extra)), len(jobs)), jobs, keysSince, 0)
	v, err := s.run(ctx, script, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	arr, _ := v.([]any)
	if len(arr) != len(jobs) {
		return nil, fmt.Errorf("redisstore: %s script returned %d results for %d jobs", script, len(arr), len(jobs))
	}
	res := make([]retry.EnqueueResult, len(jobs))
	for i, x := range arr {
		pair := x.([]any)
		if pair[1].(int64) >= 2 {
			return nil, &retry.ConflictError{Index: i, Key: jobs[i].IdempotencyKey}
		}
		res[i] = retry.EnqueueResult{ID: pair[0].(int64), Duplicate: pair[1].(int64) == 1}
	}
	return res, nil
}

var fields = []string{"kind", "lane", "state", "priority", "run_at", "expires_at", "max_attempts", "attempt",
	"lease_token", "lease_until", "idem_key", "last_error", "created_at", "updated_at", "finished_at", "payload", "skipped"}

func parseJob(id int64, vals []any) (*retry.Job, error) {
	if len(vals) != len(fields) || vals[0] == nil {
		return nil, retry.ErrNotFound
	}
	str := func(i int) string {
		if vals[i] == nil {
			return ""
		}
		return vals[i].(string)
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	return &retry.Job{
		ID: id, Kind: str(0), Lane: str(1), State: retry.State(num(2)), Priority: int(num(3)),
		RunAt: fromUS(str(4)), ExpiresAt: fromUS(str(5)), MaxAttempts: int(num(6)), Attempt: int(num(7)),
		LeaseToken: num(8), LeaseUntil: fromUS(str(9)), IdempotencyKey: str(10), LastError: str(11),
		CreatedAt: fromUS(str(12)), UpdatedAt: fromUS(str(13)), FinishedAt: fromUS(str(14)), Payload: []byte(str(15)),
		Skipped: str(16) == "1",
	}, nil
}

func (s *Store) getMany(ctx context.Context, ids []int64) ([]*retry.Job, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.p+"job:"+strconv.FormatInt(id, 10), fields...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]*retry.Job, 0, len(ids))
	for i, c := range cmds {
		j, err := parseJob(ids[i], c.Val())
		if errors.Is(err, retry.ErrNotFound) {
			continue
		}
		out = append(out, j)
	}
	return out, nil
}

func ids(v any) []int64 {
	arr, _ := v.([]any)
	out := make([]int64, 0, len(arr))
	for _, x := range arr {
		switch n := x.(type) {
		case int64:
			out = append(out, n)
		case string:
			i, _ := strconv.ParseInt(n, 10, 64)
			out = append(out, i)
		}
	}
	return out
}

// Claim implements retry.Store.
func (s *Store) Claim(ctx context.Context, lane string, limit int, now, leaseUntil time.Time) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	v, err := s.run(ctx, "claim", lane, limit, us(now), us(leaseUntil))
	if err != nil {
		return nil, err
	}
	js, err := s.getMany(ctx, ids(v))
	if err != nil {
		return nil, err
	}
	retry.SortClaimed(js)
	return js, nil
}

func (s *Store) perLease(ctx context.Context, name string, n int, args func(i int) []any) ([]error, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	all := []any{n}
	for i := range n {
		all = append(all, args(i)...)
	}
	v, err := s.run(ctx, name, all...)
	if err != nil {
		return nil, err
	}
	arr := v.([]any)
	errs := make([]error, n)
	for i := range n {
		if arr[i].(int64) == 0 {
			errs[i] = retry.ErrLeaseLost
		}
	}
	return errs, nil
}

// ExtendLeases implements retry.Store.
func (s *Store) ExtendLeases(ctx context.Context, leases []retry.Lease, until time.Time) ([]error, error) {
	return s.perLease(ctx, "extend", len(leases), func(i int) []any {
		return []any{leases[i].ID, leases[i].Token, us(until)}
	})
}

// Finish implements retry.Store.
func (s *Store) Finish(ctx context.Context, outcomes []retry.Outcome) ([]error, error) {
	return s.perLease(ctx, "finish", len(outcomes), func(i int) []any {
		o := &outcomes[i]
		var runAt, fin int64
		switch o.State {
		case retry.StateScheduled:
			runAt = us(o.RunAt)
		case retry.StateAvailable:
			runAt = us(o.At)
		default:
			fin = us(o.At)
		}
		uncount := 0
		if o.Uncount {
			uncount = 1
		}
		skipped := 0
		if o.Skip && o.State == retry.StateCompleted {
			skipped = 1
		}
		return []any{o.ID, o.Token, int(o.State), us(o.At), o.Error, uncount, runAt, fin, skipped}
	})
}

// Rescue implements retry.Store.
func (s *Store) Rescue(ctx context.Context, now time.Time) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	v, err := s.run(ctx, "rescue", us(now))
	if err != nil {
		return nil, err
	}
	js, err := s.getMany(ctx, ids(v))
	slices.SortFunc(js, func(a, b *retry.Job) int { return int(a.ID - b.ID) })
	return js, err
}

// Get implements retry.Store.
func (s *Store) Get(ctx context.Context, id int64) (*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	vals, err := s.rdb.HMGet(ctx, s.p+"job:"+strconv.FormatInt(id, 10), fields...).Result()
	if err != nil {
		return nil, err
	}
	return parseJob(id, vals)
}

// List implements retry.Store. It reads every job (an operator's tool,
// not a hot path).
func (s *Store) List(ctx context.Context, f retry.Filter) ([]*retry.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var cand []int64
	if len(f.IDs) > 0 {
		cand = slices.Clone(f.IDs)
	} else {
		last, err := s.rdb.Get(ctx, s.p+"seq").Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for id := f.AfterID + 1; id <= last; id++ {
			cand = append(cand, id)
		}
	}
	slices.Sort(cand)
	var out []*retry.Job
	for len(cand) > 0 {
		chunk := cand[:min(1000, len(cand))]
		cand = cand[len(chunk):]
		js, err := s.getMany(ctx, chunk)
		if err != nil {
			return nil, err
		}
		for _, j := range js {
			if f.Match(j) {
				out = append(out, j)
				if f.Limit > 0 && len(out) == f.Limit {
					return out, nil
				}
			}
		}
	}
	return out, nil
}

// Requeue implements retry.Store.
func (s *Store) Requeue(ctx context.Context, f retry.Filter, now time.Time) (int, error) {
	f.States = []retry.State{retry.StateDead, retry.StateExpired}
	f.Limit = 0
	js, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range js {
		v, err := s.run(ctx, "requeue", j.ID, us(now))
		if err != nil {
			return n, err
		}
		n += int(v.(int64))
	}
	return n, nil
}

// Purge implements retry.Store.
func (s *Store) Purge(ctx context.Context, f retry.Filter) (int, error) {
	if len(f.States) == 0 {
		f.States = []retry.State{retry.StateCompleted, retry.StateDead, retry.StateExpired}
	}
	f.Limit = 0
	js, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range js {
		if !j.State.Finished() {
			continue
		}
		v, err := s.run(ctx, "purge", j.ID)
		if err != nil {
			return n, err
		}
		n += int(v.(int64))
	}
	return n, nil
}

// SetPaused implements retry.Store.
func (s *Store) SetPaused(ctx context.Context, lane string, paused bool) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if paused {
		return s.rdb.SAdd(ctx, s.p+"paused", lane).Err()
	}
	return s.rdb.SRem(ctx, s.p+"paused", lane).Err()
}

// Stats implements retry.Store.
func (s *Store) Stats(ctx context.Context, now time.Time) ([]retry.LaneStats, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	lanes, err := s.rdb.SUnion(ctx, s.p+"lanes", s.p+"paused").Result()
	if err != nil {
		return nil, err
	}
	paused, err := s.rdb.SMembers(ctx, s.p+"paused").Result()
	if err != nil {
		return nil, err
	}
	var rows []retry.StatsRow
	n := strconv.FormatInt(us(now), 10)
	for _, lane := range lanes {
		prios, err := s.rdb.ZRange(ctx, s.p+"prios:"+lane, 0, -1).Result()
		if err != nil {
			return nil, err
		}
		for _, pr := range prios {
			zs, err := s.rdb.ZRangeWithScores(ctx, s.p+"ready:"+lane+":"+pr, 0, 0).Result()
			if err != nil {
				return nil, err
			}
			c, err := s.rdb.ZCard(ctx, s.p+"ready:"+lane+":"+pr).Result()
			if err != nil {
				return nil, err
			}
			if c > 0 {
				rows = append(rows, retry.StatsRow{Lane: lane, State: retry.StateAvailable, Count: int(c), OldestRunAt: time.UnixMicro(int64(zs[0].Score)).UTC()})
			}
		}
		due, err := s.rdb.ZRangeByScoreWithScores(ctx, s.p+"sched:"+lane, &redis.ZRangeBy{Min: "-inf", Max: n}).Result()
		if err != nil {
			return nil, err
		}
		if len(due) > 0 {
			rows = append(rows, retry.StatsRow{Lane: lane, State: retry.StateScheduled, Count: len(due), OldestRunAt: time.UnixMicro(int64(due[0].Score)).UTC()})
		}
		later, err := s.rdb.ZCount(ctx, s.p+"sched:"+lane, "("+n, "+inf").Result()
		if err != nil {
			return nil, err
		}
		if later > 0 {
			rows = append(rows, retry.StatsRow{Lane: lane, State: retry.StateScheduled, Count: int(later), OldestRunAt: now.Add(time.Hour * 24 * 365 * 100)})
		}
		for _, st := range []retry.State{retry.StateRunning, retry.StateCompleted, retry.StateDead, retry.StateExpired} {
			key := s.p + "fin:" + lane + ":" + strconv.Itoa(int(st))
			if st == retry.StateRunning {
				key = s.p + "running:" + lane
			}
			c, err := s.rdb.ZCard(ctx, key).Result()
			if err != nil {
				return nil, err
			}
			if c > 0 {
				rows = append(rows, retry.StatsRow{Lane: lane, State: st, Count: int(c)})
			}
		}
	}
	return retry.BuildStats(now, rows, paused), nil
}

// Prune implements retry.Store.
func (s *Store) Prune(ctx context.Context, finishedBefore, keysBefore time.Time) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	v, err := s.run(ctx, "prune", us(finishedBefore), us(keysBefore))
	if err != nil {
		return 0, err
	}
	return int(v.(int64)), nil
}

// Close implements retry.Store. The client is the host's: it stays open.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}
