package multiproc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// Stores are one server's stores for SurviveDispatcher.
type Stores struct {
	Retry    retry.Store
	Capping  capping.Store
	Tracking tracking.Store
}

// SurviveDispatcher runs the whole send path — a Dispatcher with capping
// (four marketing messages a user a day) and tracking, all on one
// server's stores — while disruptions fire at the given counts of
// accepted messages: 200 users get six messages each; a refused Send is
// retried with its key. It checks that every accepted message ends sent
// or capped, no user gets more than the cap, every send is in the
// tracking journal, and reports repeats (at least once: a send whose
// completion a disruption cut off may run again; its capping slot is
// reused, never counted twice).
func SurviveDispatcher(t *testing.T, st Stores, disruptions map[int]func()) {
	t.Helper()
	ctx := context.Background()
	rec := pushtest.NewRecorder(push.APNs)
	outbox, err := tracking.NewOutbox(st.Tracking, &tracking.OutboxConfig{PollInterval: 10 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	limiter, err := capping.New(st.Capping, &capping.Config{RetryDelay: 200 * time.Millisecond,
		Rules: []capping.Rule{{Name: "four-a-day", Kind: capping.Global, Limit: 4, Window: capping.Calendar(capping.Day)}}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := herald.New(&herald.Config{Store: st.Retry, Push: map[push.Provider]push.Sender{push.APNs: rec},
		Limiter: limiter, Tracker: outbox, Campaign: retry.LaneConfig{Concurrency: 8},
		Queue: retry.Config{PollInterval: 20 * time.Millisecond, LeaseDuration: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const users, each = 200, 6
	keys := make(chan string, users*each)
	for m := range each {
		for u := range users {
			keys <- fmt.Sprintf("u%d-m%d", u, m)
		}
	}
	close(keys)
	var mu sync.Mutex
	accepted := map[string]int64{}
	refused := 0
	fired := map[int]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				user, _, _ := strings.Cut(key, "-")
				m := herald.Message{IdempotencyKey: key, User: user, TTL: time.Hour,
					Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: pushtest.DeviceToken(key),
						Notification: push.Notification{Title: key}}}}
				for {
					r, err := d.Send(ctx, m)
					if err == nil {
						mu.Lock()
						accepted[key] = r.ID
						mu.Unlock()
						break
					}
					if !errors.Is(err, herald.ErrNotAccepted) {
						t.Errorf("send %s: %v", key, err)
						return
					}
					mu.Lock()
					refused++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				run := due(disruptions, fired, len(accepted))
				mu.Unlock()
				if run != nil {
					run()
				}
			}
		}()
	}
	wg.Wait()
	// Every accepted message ends: completed (sent, or skipped as capped).
	deadline := time.Now().Add(3 * time.Minute)
	var sent, capped int
	for {
		sent, capped = 0, 0
		open := 0
		for key, id := range accepted {
			j, err := d.Queue().Job(ctx, id)
			switch {
			case err != nil:
				open++ // the store is back in a moment
			case j.State != retry.StateCompleted:
				open++
			case j.Skipped:
				capped++
			default:
				sent++
			}
			_ = key
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted messages never ended", open, len(accepted))
		}
		time.Sleep(100 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = d.Stop(sctx)
	if err := outbox.Flush(sctx); err != nil {
		t.Fatalf("tracking flush: %v", err)
	}
	perUser := map[string]map[string]bool{}
	sends := 0
	for _, m := range rec.Sent() {
		user, _, _ := strings.Cut(m.IdempotencyKey, "-")
		if perUser[user] == nil {
			perUser[user] = map[string]bool{}
		}
		perUser[user][m.IdempotencyKey] = true
		sends++
	}
	distinct := 0
	for user, ks := range perUser {
		distinct += len(ks)
		if len(ks) > 4 {
			t.Errorf("%s got %d messages: over the cap of 4", user, len(ks))
		}
		for k := range ks {
			ok, err := st.Tracking.Has(ctx, k, tracking.Sent)
			if err != nil || !ok {
				t.Errorf("%s was sent and is not in the tracking journal (%v)", k, err)
			}
		}
	}
	_ = outbox.Close(sctx)
	if len(accepted) != users*each || sent+capped != len(accepted) || distinct != sent {
		t.Fatalf("accepted %d of %d, sent %d + capped %d, distinct sends %d", len(accepted), users*each, sent, capped, distinct)
	}
	t.Logf("accepted=%d sent=%d (cap %d) capped=%d repeats=%d refused_then_retried=%d disruptions=%d lost=0",
		len(accepted), sent, users*4, capped, sends-distinct, refused, len(fired))
}
