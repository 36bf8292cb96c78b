package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/tracking"
	"github.com/heraldhq/herald/tracking/trackingtest"
)

func trackEv(i int, typ tracking.Type, at time.Time) tracking.Event {
	return tracking.Event{ID: fmt.Sprintf("e%d-%s", i, typ), MessageID: fmt.Sprintf("m%d", i), Type: typ, At: at,
		Campaign: "spring", Channel: "email", Labels: []string{"promo"}}
}

func TestTrackingStoreSurvivesReopenAndSinkOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	rec := trackingtest.NewRecorder("rec")
	rec.Fail(errors.New("warehouse down"))
	o, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{Sinks: []tracking.Sink{rec}, PollInterval: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, o.Track(ctx, trackEv(i, tracking.Sent, t0.Add(time.Duration(i)*time.Second))))
	}
	require.NoError(t, o.Flush(ctx))
	n, err := o.TrackDurable(ctx, trackEv(1, tracking.Sent, t0), trackEv(1, tracking.Opened, t0.Add(time.Hour)))
	require.NoError(t, err)
	require.Equal(t, 1, n, "the repeated event ID is skipped")
	require.NoError(t, o.DeclareGap(ctx, t0.Add(2*time.Hour), t0.Add(3*time.Hour), "maintenance"))
	require.NoError(t, o.Close(ctx))
	require.Empty(t, rec.All(), "the sink was down the whole time")
	require.NoError(t, db.Close())

	// A new process: the journal, the gap and the sink's position survived.
	db, err = embedded.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	rec.Fail(nil)
	o, err = tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{Sinks: []tracking.Sink{rec}, PollInterval: 5 * time.Millisecond})
	require.NoError(t, err)
	defer o.Close(ctx)
	require.True(t, rec.WaitFor(101, 10*time.Second))
	require.Len(t, rec.All(), 101, "each event delivered once after the outage")
	require.Equal(t, []string{"promo"}, rec.All()[0].Labels)
	st, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(4 * time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 100, st.Counts[tracking.Sent])
	require.Equal(t, 1, st.Counts[tracking.Opened])
	require.False(t, st.OpenRate.Complete, "the declared gap overlaps the range")
	require.Len(t, st.Gaps, 1)
	has, err := db.Tracking().Has(ctx, "m1", tracking.Opened)
	require.NoError(t, err)
	require.True(t, has)
}
