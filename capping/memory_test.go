package capping_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	cappingtest.Run(t, func(t *testing.T) capping.Store {
		s := capping.NewMemoryStore()
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, nil)
}

// hidden hides the concrete store, so the Limiter takes the Store
// interface path instead of its MemoryStore fast path.
type hidden struct{ capping.Store }

// The Limiter's fast path to a MemoryStore (keys built on the stack) and
// the Store interface path must decide alike, step for step, and leave the
// same counters (read back through the interface).
func TestMemoryFastPathAgreesWithStoreInterface(t *testing.T) {
	t.Parallel()
	cfg := &capping.Config{Rules: []capping.Rule{
		{Name: "global", Kind: capping.Global, Limit: 6, Window: capping.Rolling(time.Hour)},
		{Name: "daily", Kind: capping.Global, Limit: 9, Window: capping.Calendar(capping.Day), Channels: []string{"push"}},
		{Name: "label", Kind: capping.Label, Limit: 2, Window: capping.Rolling(30 * time.Minute)},
		{Name: "device", Kind: capping.Global, Limit: 3, Window: capping.Rolling(time.Hour), PerDevice: true},
		{Name: "auto", Kind: capping.Automation, MinInterval: 10 * time.Minute},
	}}
	fastStore, slowStore := capping.NewMemoryStore(), capping.NewMemoryStore()
	t.Cleanup(func() { _ = fastStore.Close(); _ = slowStore.Close() })
	fast, err := capping.New(fastStore, cfg)
	require.NoError(t, err)
	slow, err := capping.New(hidden{slowStore}, cfg)
	require.NoError(t, err)

	rng := rand.New(rand.NewPCG(1, 2))
	users := []string{"u1", "u2", "a|b", "a|c", "ü"}
	labels := []string{"promo", "news", "x"}
	now := time.Date(2030, 3, 30, 22, 0, 0, 0, time.UTC)
	type pending struct{ fast, slow string }
	var open []pending
	for step := range 3000 {
		now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
		s := capping.Subject{
			User:     users[rng.IntN(len(users))],
			Device:   fmt.Sprint("d", rng.IntN(2)),
			TimeZone: []string{"", "Europe/Paris", "America/New_York"}[rng.IntN(3)],
			Channel:  []string{"push", "email"}[rng.IntN(2)],
		}
		for _, lb := range labels {
			if rng.IntN(3) == 0 {
				s.Labels = append(s.Labels, lb)
			}
		}
		if rng.IntN(2) == 0 {
			s.Automation = "welcome"
		}
		df, err := fast.Reserve(ctx, s, now)
		require.NoError(t, err)
		ds, err := slow.Reserve(ctx, s, now)
		require.NoError(t, err)
		require.Equal(t, ds.Allowed, df.Allowed, "step %d %+v", step, s)
		require.Equal(t, ds.CappedBy, df.CappedBy, "step %d", step)
		require.True(t, ds.DeferUntil.Equal(df.DeferUntil), "step %d: %v vs %v", step, ds.DeferUntil, df.DeferUntil)
		if df.Reservation != "" {
			open = append(open, pending{df.Reservation, ds.Reservation})
		}
		for len(open) > 0 && rng.IntN(3) > 0 {
			i := rng.IntN(len(open))
			p := open[i]
			open = slices.Delete(open, i, i+1)
			if rng.IntN(4) == 0 {
				require.Equal(t, slow.Release(ctx, p.slow, now) == nil, fast.Release(ctx, p.fast, now) == nil)
			} else {
				require.NoError(t, fast.Commit(ctx, p.fast))
				require.NoError(t, slow.Commit(ctx, p.slow))
			}
		}
		uf, err := fast.Usage(ctx, s, now)
		require.NoError(t, err)
		us, err := slow.Usage(ctx, s, now)
		require.NoError(t, err)
		require.Equal(t, us, uf, "step %d", step)
	}
}
