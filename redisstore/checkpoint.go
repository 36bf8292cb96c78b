package redisstore

import (
	"context"
	"fmt"
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
	return checkpoint.EnqueuerFunc(func(ctx context.Context, jobs []*retry.Job, since time.Time) ([]retry.EnqueueResult, error) {
		if err := c.s.check(ctx); err != nil {
			return nil, err
		}
		args := make([]any, 0, 6+14*len(jobs))
		args = append(args, len(jobs))
		s := us(since)
		for _, j := range jobs {
			args = append(args, j.Kind, j.Lane, int(j.State), j.Priority, us(j.RunAt), us(j.ExpiresAt), j.MaxAttempts,
				j.IdempotencyKey, us(j.CreatedAt), us(j.UpdatedAt), string(j.Payload), s, j.Digest, 0)
		}
		args = append(args, key, cursor, recipients, invalid, b2s(done))
		v, err := c.s.run(ctx, "checkpoint", args...)
		if err != nil {
			if strings.Contains(err.Error(), "checkpoint: not found") {
				return nil, checkpoint.ErrNotFound
			}
			return nil, err
		}
		arr, _ := v.([]any)
		if len(arr) != len(jobs) {
			return nil, fmt.Errorf("redisstore: checkpoint script returned %d results for %d jobs", len(arr), len(jobs))
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
