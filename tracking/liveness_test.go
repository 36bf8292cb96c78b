package tracking

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const hb = 20 * time.Millisecond

// abandon stops o's goroutines without Close: a crash, as far as the
// store can tell.
func abandon(o *Outbox) {
	o.cancel()
	o.wg.Wait()
}

func waitChecked(t *testing.T, o *Outbox) {
	t.Helper()
	select {
	case <-o.Recovered():
	case <-time.After(5 * time.Second):
		t.Fatal("the previous run's marks were not examined in 5s")
	}
}

func event(i int, at time.Time) Event {
	return Event{ID: fmt.Sprint("e", i), MessageID: fmt.Sprint("m", i), Type: Delivered, Channel: "push", At: at}
}

// A run that dies with events buffered (the journal refused them) leaves
// its marks; the next run finds them unmoved and records a gap over every
// lost event's time.
func TestACrashWithBufferedEventsIsRecordedAsAGap(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	o1, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	waitChecked(t, o1)
	require.NoError(t, o1.Track(ctx, event(0, time.Now())))
	require.NoError(t, o1.Flush(ctx))
	time.Sleep(3 * hb) // a heartbeat sees nothing pending

	store.SetFailure(errors.New("journal down"))
	var lost []time.Time
	for i := 1; i <= 5; i++ {
		at := time.Now()
		lost = append(lost, at)
		require.NoError(t, o1.Track(ctx, event(i, at)))
		time.Sleep(hb / 2)
	}
	abandon(o1)
	store.SetFailure(nil)

	o2, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	waitChecked(t, o2)
	gaps, err := store.Gaps(ctx, lost[0].Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, gaps, 1, "the crash must be recorded once")
	for _, at := range lost {
		require.True(t, gaps[0].Overlaps(at, at.Add(time.Nanosecond)), "lost event at %v outside the gap %+v", at, gaps[0])
	}
	require.Contains(t, gaps[0].Reason, "without Close")
	require.NoError(t, o2.Close(ctx))
}

// A clean Close leaves nothing to report, however often it happens.
func TestCleanCloseRecordsNoGap(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	for i := range 3 {
		o, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
		require.NoError(t, err)
		waitChecked(t, o)
		require.NoError(t, o.Track(ctx, event(i, time.Now())))
		time.Sleep(2 * hb)
		require.NoError(t, o.Close(ctx))
		alive, err := store.Cursor(ctx, o.aliveKey())
		require.NoError(t, err)
		require.Zero(t, alive, "a clean close clears the alive mark")
	}
	gaps, err := store.Gaps(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, gaps)
}

// Two running outboxes under one name are not a crash: the second sees the
// first's heartbeats move and records nothing. Outboxes with their own
// names do not look at each other's marks.
func TestARunningPeerIsNotACrash(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	a, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	waitChecked(t, a)
	time.Sleep(2 * hb)
	b, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	c, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb, Instance: "host-c"})
	require.NoError(t, err)
	waitChecked(t, b)
	waitChecked(t, c)
	gaps, err := store.Gaps(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, gaps)
	for _, o := range []*Outbox{a, b, c} {
		require.NoError(t, o.Close(ctx))
	}
}

// A run closed before it examined the previous run's marks leaves them:
// the crash is still reported by the run after.
func TestCloseBeforeTheCheckKeepsTheEvidence(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	o1, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	waitChecked(t, o1)
	time.Sleep(2 * hb)
	abandon(o1)

	o2, err := NewOutbox(store, &OutboxConfig{Heartbeat: time.Minute}) // its check would take minutes
	require.NoError(t, err)
	require.NoError(t, o2.Close(ctx))
	require.False(t, o2.checked.Load())

	o3, err := NewOutbox(store, &OutboxConfig{Heartbeat: hb})
	require.NoError(t, err)
	waitChecked(t, o3)
	gaps, err := store.Gaps(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, gaps, 1)
	require.NoError(t, o3.Close(ctx))
}

func TestSinkNamesMayNotUseTheLivenessPrefix(t *testing.T) {
	_, err := NewOutbox(NewMemoryStore(), &OutboxConfig{Sinks: []Sink{&SlogSink{}, namedSink(livenessPrefix + "x")}})
	require.ErrorContains(t, err, "reserved")
}

type namedSink string

func (n namedSink) Name() string                       { return string(n) }
func (namedSink) Write(context.Context, []Event) error { return nil }
