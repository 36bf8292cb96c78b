package capping_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/capping"
)

var ctx = context.Background()

func newLimiter(t *testing.T, cfg *capping.Config) (*capping.Limiter, capping.Store) {
	t.Helper()
	s := capping.NewMemoryStore()
	t.Cleanup(func() { _ = s.Close() })
	l, err := capping.New(s, cfg)
	require.NoError(t, err)
	return l, s
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

func TestBadRulesAreRefusedAtConstruction(t *testing.T) {
	t.Parallel()
	day := capping.Calendar(capping.Day)
	cases := []struct {
		rules []capping.Rule
		cfg   capping.Config
		name  string
	}{
		{rules: []capping.Rule{{Name: "zero", Kind: capping.Global, Limit: 1}}, name: "zero"},
		{rules: []capping.Rule{{Name: "neg", Kind: capping.Global, Limit: -1, Window: day}}, name: "neg"},
		{rules: []capping.Rule{{Name: "rolling0", Kind: capping.Global, Limit: 1, Window: capping.Rolling(0)}}, name: "rolling0"},
		{rules: []capping.Rule{{Name: "tz", Kind: capping.Global, Limit: 1, Window: day, TimeZone: "Mars/Olympus"}}, name: "tz"},
		{rules: []capping.Rule{{Name: "dup", Kind: capping.Global, Limit: 1, Window: day}, {Name: "dup", Kind: capping.Label, Limit: 1, Window: day}}, name: "dup"},
		{rules: []capping.Rule{{Name: "kind", Limit: 1, Window: day}}, name: "kind"},
		{rules: []capping.Rule{{Name: "both", Kind: capping.Automation, Limit: 1, Window: day, MinInterval: time.Hour}}, name: "both"},
		{rules: []capping.Rule{{Name: "", Kind: capping.Global, Limit: 1, Window: day}}, name: ""},
		{cfg: capping.Config{DefaultTimeZone: "Nowhere/Town"}, name: "DefaultTimeZone"},
		{cfg: capping.Config{QuietHours: &capping.QuietHours{Start: "25:00", End: "08:00"}}, name: "quiet hours"},
	}
	for _, tc := range cases {
		cfg := tc.cfg
		cfg.Rules = tc.rules
		_, err := capping.New(capping.NewMemoryStore(), &cfg)
		var re *capping.RuleError
		require.ErrorAs(t, err, &re, tc.name)
		require.Equal(t, tc.name, re.Rule)
		require.Contains(t, err.Error(), fmt.Sprintf("%q", tc.name))
	}
}

func TestExactUnderConcurrencyWithLabelsAndGlobal(t *testing.T) {
	t.Parallel()
	const n = 20
	l, _ := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "global", Kind: capping.Global, Limit: n, Window: capping.Rolling(24 * time.Hour)},
		{Name: "promo", Kind: capping.Label, Limit: n / 2, Window: capping.Rolling(24 * time.Hour), Labels: []string{"promo"}},
	}})
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var committed, promos atomic.Int64
	var maxSeen atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				s := capping.Subject{User: "ada", Channel: "push"}
				promo := (w+i)%2 == 0
				if promo {
					s.Labels = []string{"promo"}
				}
				d, err := l.Reserve(ctx, s, now)
				require.NoError(t, err)
				if !d.Allowed {
					continue
				}
				if i%4 == 0 { // a permanent failure gives the slot back
					require.NoError(t, l.Release(ctx, d.Reservation, now))
					continue
				}
				require.NoError(t, l.Commit(ctx, d.Reservation))
				c := committed.Add(1)
				if promo {
					promos.Add(1)
				}
				for m := maxSeen.Load(); c > m && !maxSeen.CompareAndSwap(m, c); m = maxSeen.Load() {
				}
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, maxSeen.Load(), int64(n), "never over the global limit")
	require.Equal(t, int64(n), committed.Load(), "enough commits arrived to fill the global rule exactly")
	require.LessOrEqual(t, promos.Load(), int64(n/2))
	u, err := l.Usage(ctx, capping.Subject{User: "ada", Channel: "push", Labels: []string{"promo"}}, now)
	require.NoError(t, err)
	require.Equal(t, n, u[0].Count)
	require.Equal(t, int(promos.Load()), u[1].Count)
}

func TestCalendarWindowsFollowTheUsersTimeZoneAcrossDST(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "daily", Kind: capping.Global, Limit: 1, Window: capping.Calendar(capping.Day)},
		{Name: "weekly", Kind: capping.Label, Limit: 1, Window: capping.Calendar(capping.Week), Labels: []string{"digest"}},
	}})
	ny := mustLoc(t, "America/New_York")
	user := capping.Subject{User: "ny", TimeZone: "America/New_York", Channel: "email"}
	// 23:30 on Saturday 9 March 2030 in New York is 04:30 UTC on the 10th.
	late := time.Date(2030, 3, 9, 23, 30, 0, 0, ny)
	d, err := l.Reserve(ctx, user, late)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	d, err = l.Reserve(ctx, user, late.Add(20*time.Minute)) // 23:50, same local day
	require.NoError(t, err)
	require.False(t, d.Allowed)
	require.Equal(t, "daily", d.CappedBy)
	require.True(t, d.DeferUntil.Equal(time.Date(2030, 3, 10, 0, 0, 0, 0, ny)), "deferred to local midnight, got %s", d.DeferUntil.In(ny))
	// 10 March 2030 is the spring-forward day: 23 hours long in New York.
	d, err = l.Reserve(ctx, user, time.Date(2030, 3, 10, 0, 10, 0, 0, ny))
	require.NoError(t, err)
	require.True(t, d.Allowed, "a new local day, though the same UTC day")
	d, err = l.Reserve(ctx, user, time.Date(2030, 3, 10, 23, 0, 0, 0, ny))
	require.NoError(t, err)
	require.False(t, d.Allowed)
	next := time.Date(2030, 3, 11, 0, 0, 0, 0, ny)
	require.True(t, d.DeferUntil.Equal(next))
	require.Equal(t, 23*time.Hour, next.Sub(time.Date(2030, 3, 10, 0, 0, 0, 0, ny)), "the DST day is 23 hours")

	// The same instant in Tokyo is already another day.
	tokyo := capping.Subject{User: "tk", TimeZone: "Asia/Tokyo", Channel: "email"}
	d, err = l.Reserve(ctx, tokyo, time.Date(2030, 3, 10, 23, 59, 0, 0, mustLoc(t, "Asia/Tokyo")))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	d, err = l.Reserve(ctx, tokyo, time.Date(2030, 3, 11, 0, 0, 0, 0, mustLoc(t, "Asia/Tokyo")))
	require.NoError(t, err)
	require.True(t, d.Allowed, "midnight in Tokyo starts a new day")

	// Weeks start on Monday in the user's zone.
	paris := mustLoc(t, "Europe/Paris")
	digest := capping.Subject{User: "fr", TimeZone: "Europe/Paris", Channel: "email", Labels: []string{"digest"}}
	sunday := time.Date(2030, 3, 31, 23, 0, 0, 0, paris) // Paris switches to summer time that night
	d, err = l.Reserve(ctx, digest, sunday.Add(-48*time.Hour))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	d, err = l.Reserve(ctx, digest, sunday)
	require.NoError(t, err)
	require.False(t, d.Allowed)
	require.Equal(t, "weekly", d.CappedBy)
	require.True(t, d.DeferUntil.Equal(time.Date(2030, 4, 1, 0, 0, 0, 0, paris)), "next Monday 00:00 Paris, got %s", d.DeferUntil.In(paris))
}

func TestRollingWindowEdges(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "hourly", Kind: capping.Global, Limit: 2, Window: capping.Rolling(time.Hour)},
	}})
	t0 := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	u := capping.Subject{User: "u"}
	for _, at := range []time.Time{t0, t0.Add(10 * time.Minute)} {
		d, err := l.Reserve(ctx, u, at)
		require.NoError(t, err)
		require.True(t, d.Allowed)
		require.NoError(t, l.Commit(ctx, d.Reservation))
	}
	d, err := l.Reserve(ctx, u, t0.Add(time.Hour-time.Microsecond))
	require.NoError(t, err)
	require.False(t, d.Allowed, "the first slot counts until one hour has passed")
	require.True(t, d.DeferUntil.Equal(t0.Add(time.Hour)), "free when the oldest slot leaves: got %s", d.DeferUntil)
	d, err = l.Reserve(ctx, u, t0.Add(time.Hour))
	require.NoError(t, err)
	require.True(t, d.Allowed, "exactly one hour later the first slot has left the window")
}

func TestAutomationMinimumInterval(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "cart", Kind: capping.Automation, MinInterval: 6 * time.Hour},
	}})
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cart := capping.Subject{User: "u", Automation: "abandoned-cart"}
	d, _ := l.Reserve(ctx, cart, t0)
	require.True(t, d.Allowed)
	d, _ = l.Reserve(ctx, cart, t0.Add(5*time.Hour))
	require.False(t, d.Allowed)
	require.True(t, d.DeferUntil.Equal(t0.Add(6*time.Hour)))
	d, _ = l.Reserve(ctx, capping.Subject{User: "u", Automation: "winback"}, t0.Add(5*time.Hour))
	require.True(t, d.Allowed, "another automation has its own counter")
	d, _ = l.Reserve(ctx, capping.Subject{User: "u"}, t0.Add(5*time.Hour))
	require.True(t, d.Allowed, "a message of no automation is not counted")
}

func TestQuietHours(t *testing.T) {
	t.Parallel()
	paris := mustLoc(t, "Europe/Paris")
	l, _ := newLimiter(t, &capping.Config{QuietHours: &capping.QuietHours{Start: "22:00", End: "08:00"}})
	u := capping.Subject{User: "u", TimeZone: "Europe/Paris", Channel: "push"}
	d, err := l.Reserve(ctx, u, time.Date(2030, 6, 1, 23, 0, 0, 0, paris))
	require.NoError(t, err)
	require.True(t, d.Deferred())
	require.Equal(t, "quiet hours", d.CappedBy)
	require.True(t, d.DeferUntil.Equal(time.Date(2030, 6, 2, 8, 0, 0, 0, paris)), "deferred, not dropped: got %s", d.DeferUntil)
	d, _ = l.Reserve(ctx, u, time.Date(2030, 6, 2, 7, 59, 0, 0, paris))
	require.True(t, d.DeferUntil.Equal(time.Date(2030, 6, 2, 8, 0, 0, 0, paris)))
	d, _ = l.Reserve(ctx, u, time.Date(2030, 6, 2, 8, 0, 0, 0, paris))
	require.True(t, d.Allowed)
	tx := u
	tx.Transactional = true
	d, _ = l.Reserve(ctx, tx, time.Date(2030, 6, 1, 23, 0, 0, 0, paris))
	require.True(t, d.Allowed, "transactional messages ignore quiet hours")

	drop, _ := newLimiter(t, &capping.Config{QuietHours: &capping.QuietHours{Start: "22:00", End: "08:00", Drop: true}})
	d, _ = drop.Reserve(ctx, u, time.Date(2030, 6, 1, 23, 0, 0, 0, paris))
	require.False(t, d.Allowed)
	require.False(t, d.Deferred())
}

func TestTransactionalIsExemptUnlessIncluded(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "marketing", Kind: capping.Global, Limit: 1, Window: capping.Rolling(time.Hour)},
		{Name: "sms-all", Kind: capping.Global, Limit: 2, Window: capping.Rolling(time.Hour), Channels: []string{"sms"}, IncludeTransactional: true},
	}})
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d, _ := l.Reserve(ctx, capping.Subject{User: "u", Channel: "push"}, now)
	require.True(t, d.Allowed)
	d, _ = l.Reserve(ctx, capping.Subject{User: "u", Channel: "push"}, now)
	require.False(t, d.Allowed)
	d, _ = l.Reserve(ctx, capping.Subject{User: "u", Channel: "push", Transactional: true}, now)
	require.True(t, d.Allowed, "a transactional message is exempt from marketing caps")
	require.Empty(t, d.Reservation, "and takes no slot")
	for range 2 {
		d, _ = l.Reserve(ctx, capping.Subject{User: "u2", Channel: "sms", Transactional: true}, now)
		require.True(t, d.Allowed)
	}
	d, _ = l.Reserve(ctx, capping.Subject{User: "u2", Channel: "sms", Transactional: true}, now)
	require.False(t, d.Allowed, "a rule that includes transactional messages counts them")
	require.Equal(t, "sms-all", d.CappedBy)
}

func TestLeaseExpiryCountsAsSent(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, &capping.Config{Lease: time.Minute, Rules: []capping.Rule{
		{Name: "r", Kind: capping.Global, Limit: 1, Window: capping.Rolling(time.Hour)},
	}})
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d, _ := l.Reserve(ctx, capping.Subject{User: "u"}, now)
	require.True(t, d.Allowed)
	// The worker crashed: nobody commits. After the lease a release is refused.
	err := l.Release(ctx, d.Reservation, now.Add(2*time.Minute))
	require.ErrorIs(t, err, capping.ErrLeaseExpired)
	d, _ = l.Reserve(ctx, capping.Subject{User: "u"}, now.Add(3*time.Minute))
	require.False(t, d.Allowed, "the unsettled reservation counts as sent")
}

// flaky is a store that can be switched off.
type flaky struct {
	capping.Store
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (f *flaky) Reserve(ctx context.Context, id string, c []capping.Check, at, lease time.Time) (int, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.Store.Reserve(ctx, id, c, at, lease)
}

func TestStoreDownFailClosed(t *testing.T) {
	t.Parallel()
	f := &flaky{Store: capping.NewMemoryStore()}
	l, err := capping.New(f, &capping.Config{Rules: []capping.Rule{{Name: "r", Kind: capping.Global, Limit: 5, Window: capping.Rolling(time.Hour)}}})
	require.NoError(t, err)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.down.Store(true)
	d, err := l.Reserve(ctx, capping.Subject{User: "u"}, now)
	require.NoError(t, err)
	require.False(t, d.Allowed, "marketing is deferred while counters cannot be checked")
	require.True(t, d.Deferred())
	require.True(t, d.DeferUntil.Equal(now.Add(time.Minute)))
	d, err = l.Reserve(ctx, capping.Subject{User: "u", Transactional: true}, now)
	require.NoError(t, err)
	require.True(t, d.Allowed, "transactional messages need no counter")
}

func TestStoreDownFailOpenThenReconcile(t *testing.T) {
	t.Parallel()
	f := &flaky{Store: capping.NewMemoryStore()}
	journal := &capping.MemoryJournal{}
	l, err := capping.New(f, &capping.Config{OnStoreDown: capping.AllowAndJournal, Journal: journal,
		Rules: []capping.Rule{{Name: "r", Kind: capping.Global, Limit: 3, Window: capping.Rolling(time.Hour)}}})
	require.NoError(t, err)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.down.Store(true)
	for i := range 2 {
		d, err := l.Reserve(ctx, capping.Subject{User: "u"}, now.Add(time.Duration(i)*time.Minute))
		require.NoError(t, err)
		require.True(t, d.Allowed)
		require.True(t, d.Journaled)
	}
	f.down.Store(false)
	// Without reconciliation the counter would allow 3 more: wrong.
	require.NoError(t, l.ReplayJournal(ctx, journal.Drain()))
	// A send the journal missed is rebuilt from the queue's completed jobs;
	// reconciling it twice counts it once.
	sent := []capping.Send{{ID: "job-77", Subject: capping.Subject{User: "u"}, At: now.Add(3 * time.Minute)}}
	require.NoError(t, l.Reconcile(ctx, sent))
	require.NoError(t, l.Reconcile(ctx, sent))
	d, err := l.Reserve(ctx, capping.Subject{User: "u"}, now.Add(4*time.Minute))
	require.NoError(t, err)
	require.False(t, d.Allowed, "2 journaled + 1 reconciled fill the limit of 3")
	u, err := l.Usage(ctx, capping.Subject{User: "u"}, now.Add(4*time.Minute))
	require.NoError(t, err)
	require.Equal(t, 3, u[0].Count)
	require.True(t, u[0].NextFree.Equal(now.Add(time.Hour)))
}

func TestUnknownSubjectTimeZone(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(t, nil)
	_, err := l.Reserve(ctx, capping.Subject{User: "u", TimeZone: "Atlantis/Lost"}, time.Now())
	require.ErrorContains(t, err, "Atlantis/Lost")
}

// A retried attempt of the same message reuses its pending reservation:
// one slot, however many times the sender asks.
func TestReserveForReusesThePendingReservation(t *testing.T) {
	t.Parallel()
	l, s := newLimiter(t, &capping.Config{Rules: []capping.Rule{
		{Name: "daily", Kind: capping.Global, Limit: 2, Window: capping.Calendar(capping.Day)},
	}})
	now := time.Date(2030, 3, 4, 12, 0, 0, 0, time.UTC)
	sub := capping.Subject{User: "u1", Channel: "push"}
	first, err := l.ReserveFor(ctx, "order-42", sub, now)
	require.NoError(t, err)
	require.True(t, first.Allowed)
	again, err := l.ReserveFor(ctx, "order-42", sub, now.Add(time.Minute)) // the attempt's outcome was unknowable
	require.NoError(t, err)
	require.True(t, again.Allowed)
	require.Equal(t, first.Reservation, again.Reservation)
	slots, err := s.Slots(ctx, "daily|u1", now.Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, slots, 1, "one message, one slot")
	require.NoError(t, l.Commit(ctx, again.Reservation))
	other, err := l.ReserveFor(ctx, "order-43", sub, now.Add(2*time.Minute))
	require.NoError(t, err)
	require.True(t, other.Allowed, "the cap of 2 still has room for a second message")
	_, err = l.ReserveFor(ctx, "", sub, now)
	require.Error(t, err)
}
