package capping

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sweepAll(s *MemoryStore, now time.Time) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.sweep(sh, now.UnixNano())
		sh.mu.Unlock()
	}
}

func counters(s *MemoryStore) (counters, reservations int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		counters += len(sh.counters)
		reservations += len(sh.res)
		sh.mu.Unlock()
	}
	return counters, reservations
}

// The sweep must keep a calendar day's slots for the whole day, even when
// every check so far came early in the day (a window that reached back
// only 30 minutes then).
func TestSweepKeepsACalendarDaysSlotsAllDay(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	defer s.Close()
	l, err := New(s, &Config{Rules: []Rule{{Name: "daily", Kind: Global, Limit: 1, Window: Calendar(Day)}}})
	require.NoError(t, err)
	day := time.Date(2030, 3, 4, 0, 0, 0, 0, time.UTC)
	d, err := l.Reserve(ctx, Subject{User: "u"}, day.Add(30*time.Minute))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.NoError(t, l.Commit(ctx, d.Reservation))

	sweepAll(s, day.Add(23*time.Hour))
	d, err = l.Reserve(ctx, Subject{User: "u"}, day.Add(23*time.Hour+30*time.Minute))
	require.NoError(t, err)
	require.False(t, d.Allowed, "the sweep forgot a slot of today: a second message went out")
	require.Equal(t, "daily", d.CappedBy)
}

// Idle users cost nothing: once their slots leave every window, the sweep
// removes their counters; reservations never settled count as sent and
// are forgotten a lease after their lease.
func TestSweepForgetsIdleCountersAndAbandonedReservations(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	defer s.Close()
	l, err := New(s, &Config{Lease: 10 * time.Minute, Rules: []Rule{
		{Name: "hourly", Kind: Global, Limit: 5, Window: Rolling(time.Hour)},
		{Name: "promo", Kind: Label, Limit: 5, Window: Rolling(time.Hour)},
	}})
	require.NoError(t, err)
	t0 := time.Date(2030, 3, 4, 12, 0, 0, 0, time.UTC)
	for i := range 100 {
		d, err := l.Reserve(ctx, Subject{User: "user-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Labels: []string{"p"}}, t0)
		require.NoError(t, err)
		require.True(t, d.Allowed)
		if i%2 == 0 {
			require.NoError(t, l.Commit(ctx, d.Reservation)) // the odd ones are abandoned
		}
	}
	c, r := counters(s)
	require.Equal(t, 200, c)
	require.Equal(t, 50, r)

	sweepAll(s, t0.Add(15*time.Minute)) // lease ended 5 minutes ago: kept, a late Commit still works
	_, r = counters(s)
	require.Equal(t, 50, r)

	sweepAll(s, t0.Add(25*time.Minute)) // a lease past the lease: settled as sent
	_, r = counters(s)
	require.Zero(t, r)
	slots, err := s.Slots(ctx, "hourly|user-ba", t0.Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, slots, 1)
	require.False(t, slots[0].Pending, "an abandoned reservation counts as sent")

	sweepAll(s, t0.Add(time.Hour+time.Second))
	c, _ = counters(s)
	require.Zero(t, c, "counters whose slots left every window must go")
}
