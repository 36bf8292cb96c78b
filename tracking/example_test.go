package tracking_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/tracking"
	"github.com/heraldhq/herald/tracking/trackingtest"
)

// Events go to the journal first and to the sinks after: a sink that is
// down misses nothing, it gets every event when it is back. A window the
// journal could not record is a gap, and the rates over it say so.
func ExampleOutbox() {
	ctx := context.Background()
	analytics := trackingtest.NewRecorder("analytics")
	analytics.Fail(errors.New("503 from the analytics pipeline"))
	o, _ := tracking.NewOutbox(tracking.NewMemoryStore(), &tracking.OutboxConfig{
		Sinks: []tracking.Sink{analytics}, PollInterval: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	defer o.Close(ctx)
	t0 := time.Date(2030, 6, 3, 12, 0, 0, 0, time.UTC)
	for i, typ := range []tracking.Type{tracking.Sent, tracking.Sent, tracking.Opened} {
		msg := fmt.Sprint("m", min(i, 1))
		_ = o.Track(ctx, tracking.Event{ID: fmt.Sprint("e", i), MessageID: msg, Type: typ, At: t0.Add(time.Duration(i) * time.Second), Campaign: "spring"})
	}
	_ = o.Flush(ctx) // journaled, though the sink is down
	analytics.Fail(nil)
	analytics.WaitFor(3, time.Second)
	fmt.Println("analytics got", len(analytics.All()), "events after its outage")

	_ = o.DeclareGap(ctx, t0.Add(time.Minute), t0.Add(2*time.Minute), "journal disk full")
	st, _ := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	fmt.Println("sent", st.Counts[tracking.Sent], "opened", st.Counts[tracking.Opened], "open rate", st.OpenRate.Value, "complete", st.Complete)
	// Output:
	// analytics got 3 events after its outage
	// sent 2 opened 1 open rate 0.5 complete false
}
