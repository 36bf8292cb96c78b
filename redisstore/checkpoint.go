package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/retry"
)

// Checkpoints is checkpoint.Store on Redis: a hash per fan-out
// ({prefix}ck:<key>), moved by the same script that enqueues its page's
// jobs.
type Checkpoints struct{ s *Store }

var _ checkpoint.Store = (*Checkpoints)(nil)

// Checkpoints returns the fan-outs' store sharing s's client and prefix
// (campaign.Config's Store).
func (s *Store) Checkpoints() *Checkpoints { return &Checkpoints{s: s} }

func (c *Checkpoints) key(k string) string { return c.s.p + "ck:" + k }

// Create implements checkpoint.Store.
func (c *Checkpoints) Create(ctx context.Context, r checkpoint.Record) (checkpoint.Record, bool, error) {
	if err := c.s.check(ctx); err != nil {
		return checkpoint.Record{}, false, err
	}
	// One script: the record and its place in the list, or nothing.
	n, err := c.s.run(ctx, "ckcreate", r.Key, string(r.Spec), string(r.State), r.Cursor, r.Recipients, r.Enqueued, r.Invalid,
		b2s(r.Done), us(r.Created))
	if err != nil {
		return checkpoint.Record{}, false, err
	}
	created := n == int64(1)
	got, err := c.Get(ctx, r.Key)
	return got, created, err
}

// Get implements checkpoint.Store.
func (c *Checkpoints) Get(ctx context.Context, key string) (checkpoint.Record, error) {
	if err := c.s.check(ctx); err != nil {
		return checkpoint.Record{}, err
	}
	m, err := c.s.rdb.HGetAll(ctx, c.key(key)).Result()
	if err != nil {
		return checkpoint.Record{}, err
	}
	if len(m) == 0 {
		return checkpoint.Record{}, checkpoint.ErrNotFound
	}
	atoi := func(k string) int { n, _ := strconv.Atoi(m[k]); return n }
	return checkpoint.Record{Key: key, Spec: []byte(m["spec"]), State: checkpoint.State(m["state"]), Cursor: m["cursor"],
		Recipients: atoi("recipients"), Enqueued: atoi("enqueued"), Invalid: atoi("invalid"), Done: m["done"] == "1",
		Created: fromUS(m["created"]), Staged: atoi("staged"), Drained: atoi("drained"), Cancelled: atoi("cancelled"),
		Pages: int64(atoi("pages"))}, nil
}

// List implements checkpoint.Store: the keys are in a sorted set of
// equal scores ({prefix}cks, by byte order), added at Create.
func (c *Checkpoints) List(ctx context.Context, after string, limit int) ([]checkpoint.Record, error) {
	if err := c.s.check(ctx); err != nil {
		return nil, err
	}
	min := "-"
	if after != "" {
		min = "(" + after
	}
	keys, err := c.s.rdb.ZRangeByLex(ctx, c.s.p+"cks", &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)}).Result()
	if err != nil {
		return nil, err
	}
	out := make([]checkpoint.Record, 0, len(keys))
	for _, k := range keys {
		r, err := c.Get(ctx, k)
		if errors.Is(err, checkpoint.ErrNotFound) { // removed by hand
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// SetState implements checkpoint.Store.
func (c *Checkpoints) SetState(ctx context.Context, key string, state checkpoint.State) error {
	if err := c.s.check(ctx); err != nil {
		return err
	}
	if state == checkpoint.Cancelled {
		_, err := c.s.run(ctx, "cancel", key, string(state))
		return notFound(err)
	}
	n, err := c.s.rdb.Exists(ctx, c.key(key)).Result()
	if err != nil {
		return err
	}
	if n == 0 {
		return checkpoint.ErrNotFound
	}
	return c.s.rdb.HSet(ctx, c.key(key), "state", string(state)).Err()
}

// Checkpoint implements checkpoint.Store: one script enqueues the jobs
// and moves the record, or does nothing when the record does not exist.
func (c *Checkpoints) Checkpoint(key, cursor string, recipients, invalid int, done bool) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		res, err := c.s.enqueueWith(ctx, "checkpoint", jobs, since, key, cursor, recipients, invalid, b2s(done))
		return res, notFound(err)
	})
}

// notFound maps the scripts' "checkpoint: not found" to ErrNotFound.
func notFound(err error) error {
	if err != nil && strings.Contains(err.Error(), "checkpoint: not found") {
		return checkpoint.ErrNotFound
	}
	return err
}

// Stage implements checkpoint.Store: one script moves the record and
// stores the page.
func (c *Checkpoints) Stage(ctx context.Context, key, cursor string, recipients, invalid int, done bool, data []byte, count int) error {
	if err := c.s.check(ctx); err != nil {
		return err
	}
	_, err := c.s.run(ctx, "stage", key, cursor, recipients, invalid, b2s(done), count, string(data))
	return notFound(err)
}

// Claim implements checkpoint.Store: one script reads and moves the lease.
func (c *Checkpoints) Claim(ctx context.Context, key, owner string, now, until time.Time) (bool, error) {
	if err := c.s.check(ctx); err != nil {
		return false, err
	}
	n, err := c.s.run(ctx, "ckclaim", key, owner, now.UnixMicro(), until.UnixMicro())
	if err != nil {
		return false, notFound(err)
	}
	return n == int64(1), nil
}

// Pages implements checkpoint.Store.
func (c *Checkpoints) Pages(ctx context.Context, key string, after int64, limit int) ([]checkpoint.Page, error) {
	if err := c.s.check(ctx); err != nil {
		return nil, err
	}
	seqs, err := c.s.rdb.ZRangeByScore(ctx, c.s.p+"ckz:"+key, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(after, 10), Max: "+inf", Count: int64(limit)}).Result()
	if err != nil || len(seqs) == 0 {
		return nil, err
	}
	fields := make([]string, 0, 3*len(seqs))
	for _, seq := range seqs {
		fields = append(fields, "d"+seq, "c"+seq, "o"+seq)
	}
	vals, err := c.s.rdb.HMGet(ctx, c.s.p+"ckp:"+key, fields...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]checkpoint.Page, 0, len(seqs))
	for i, seq := range seqs {
		d, ok := vals[3*i].(string)
		if !ok { // drained or cancelled between the two reads
			continue
		}
		n, _ := strconv.ParseInt(seq, 10, 64)
		count, _ := strconv.Atoi(fmt.Sprint(vals[3*i+1]))
		off, _ := strconv.Atoi(fmt.Sprint(vals[3*i+2]))
		out = append(out, checkpoint.Page{Seq: n, Data: []byte(d), Count: count, Offset: off})
	}
	return out, nil
}

// Drain implements checkpoint.Store: one script enqueues the jobs and
// moves the page, or does nothing when the drain is stale.
func (c *Checkpoints) Drain(key string, seq int64, offset, invalid int) retry.Enqueuer {
	return retry.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		res, err := c.s.enqueueWith(ctx, "drain", jobs, since, key, seq, offset, invalid)
		return res, notFound(err)
	})
}

// Close implements checkpoint.Store. The client is the host's: it stays open.
func (c *Checkpoints) Close() error { return nil }

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
