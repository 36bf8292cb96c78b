package redisstore

import (
	"context"
	"strconv"
	"strings"
	"time"

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
	k := c.key(r.Key)
	created, err := c.s.rdb.HSetNX(ctx, k, "spec", string(r.Spec)).Result()
	if err != nil {
		return checkpoint.Record{}, false, err
	}
	if created {
		if err := c.s.rdb.HSet(ctx, k, "state", string(r.State), "cursor", r.Cursor, "recipients", r.Recipients,
			"enqueued", r.Enqueued, "invalid", r.Invalid, "done", b2s(r.Done), "created", us(r.Created)).Err(); err != nil {
			return checkpoint.Record{}, false, err
		}
	}
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
		Created: fromUS(m["created"])}, nil
}

// SetState implements checkpoint.Store.
func (c *Checkpoints) SetState(ctx context.Context, key string, state checkpoint.State) error {
	if err := c.s.check(ctx); err != nil {
		return err
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
		if err != nil && strings.Contains(err.Error(), "checkpoint: not found") {
			return nil, checkpoint.ErrNotFound
		}
		return res, err
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
