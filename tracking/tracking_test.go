package tracking_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/tracking"
	"github.com/heraldhq/herald/tracking/storetest"
	"github.com/heraldhq/herald/tracking/trackingtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	ctx = context.Background()
	t0  = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
)

func ev(i int, typ tracking.Type) tracking.Event {
	return tracking.Event{ID: fmt.Sprintf("e-%d-%s", i, typ), MessageID: fmt.Sprintf("m-%d", i), Channel: "push", Provider: "apns",
		Campaign: "spring", Type: typ, At: t0.Add(time.Duration(i) * time.Second)}
}

func newOutbox(t *testing.T, store tracking.Store, cfg *tracking.OutboxConfig) *tracking.Outbox {
	t.Helper()
	if cfg == nil {
		cfg = &tracking.OutboxConfig{}
	}
	cfg.PollInterval = 5 * time.Millisecond
	cfg.MaxBackoff = 20 * time.Millisecond
	o, err := tracking.NewOutbox(store, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = o.Close(cctx)
	})
	return o
}

func TestWebhookOutageLosesNothingAndNeverBlocksSenders(t *testing.T) {
	t.Parallel()
	key := secret.String("webhook-key")
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	received := map[string]int{}
	var badSig atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !tracking.VerifySignature(key.Bytes(), r.Header.Get("X-Herald-Timestamp"), r.Header.Get("X-Herald-Signature"), body, time.Now(), time.Minute) {
			badSig.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		var b struct{ Events []tracking.Event }
		require.NoError(t, json.Unmarshal(body, &b))
		mu.Lock()
		for _, e := range b.Events {
			received[e.ID]++
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	sink := &tracking.WebhookSink{URL: hook.URL, Secret: key}
	o := newOutbox(t, tracking.NewMemoryStore(), &tracking.OutboxConfig{Sinks: []tracking.Sink{sink}})

	const n = 2000
	var slowest time.Duration
	for i := range n {
		start := time.Now()
		require.NoError(t, o.Track(ctx, ev(i, tracking.Sent)))
		slowest = max(slowest, time.Since(start))
	}
	require.NoError(t, o.Flush(ctx))
	st, err := o.SinkStatus(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(n), st[0].Backlog, "the webhook is down: everything waits in the journal")
	require.True(t, st[0].OldestUndelivered.Equal(t0))
	require.Eventually(t, func() bool {
		st, err := o.SinkStatus(ctx)
		return err == nil && st[0].LastError != "" && st[0].Failures > 0
	}, 5*time.Second, 5*time.Millisecond, "the failing webhook shows in the status")
	require.Less(t, slowest, 500*time.Millisecond, "Track never waited for the sink (which kept failing)")

	down.Store(false)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) == n
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	for id, c := range received {
		require.Equal(t, 1, c, "event %s delivered %d times", id, c)
	}
	mu.Unlock()
	require.Zero(t, badSig.Load())
	require.Eventually(t, func() bool {
		st, err := o.SinkStatus(ctx)
		return err == nil && st[0].Backlog == 0 // the cursor moves after the sink answered
	}, 5*time.Second, 5*time.Millisecond)
}

func TestRecorderSinkSeesOrderPerMessageAfterFailures(t *testing.T) {
	t.Parallel()
	rec := trackingtest.NewRecorder("rec")
	rec.Fail(errors.New("sink down"))
	o := newOutbox(t, tracking.NewMemoryStore(), &tracking.OutboxConfig{Sinks: []tracking.Sink{rec}, BatchSize: 7})
	for i := range 50 {
		require.NoError(t, o.Track(ctx, ev(i, tracking.Sent), ev(i, tracking.Delivered), ev(i, tracking.Opened)))
	}
	require.NoError(t, o.Flush(ctx))
	rec.Fail(nil)
	require.True(t, rec.WaitFor(150, 5*time.Second))
	pos := map[string]int{}
	for i, e := range rec.Unique() {
		pos[e.ID] = i
	}
	for i := range 50 {
		require.Less(t, pos[ev(i, tracking.Sent).ID], pos[ev(i, tracking.Delivered).ID])
		require.Less(t, pos[ev(i, tracking.Delivered).ID], pos[ev(i, tracking.Opened).ID])
	}
}

func TestJournalOutageIsRecordedAsAGapAndMakesRatesIncomplete(t *testing.T) {
	t.Parallel()
	store := tracking.NewMemoryStore()
	o := newOutbox(t, store, &tracking.OutboxConfig{Buffer: 10})
	// Before the outage: 10 messages sent, delivered, 4 opened.
	for i := range 10 {
		_, err := o.TrackDurable(ctx, ev(i, tracking.Sent), ev(i, tracking.Delivered))
		require.NoError(t, err)
		if i < 4 {
			_, err = o.TrackDurable(ctx, ev(i, tracking.Opened))
			require.NoError(t, err)
		}
	}
	before, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.True(t, before.Complete)
	require.True(t, before.OpenRate.Complete)
	require.InDelta(t, 0.4, before.OpenRate.Value, 1e-9)

	// The journal fails; events pile up past the buffer and are dropped.
	store.SetFailure(errors.New("disk full"))
	dropped, first, last := 0, 0, 0
	for i := 100; i < 200; i++ {
		if err := o.Track(ctx, ev(i, tracking.Opened)); errors.Is(err, tracking.ErrBufferFull) {
			if dropped == 0 {
				first = i
			}
			last = i
			dropped++
		}
	}
	require.Positive(t, dropped)
	store.SetFailure(nil)
	require.NoError(t, o.Flush(ctx))
	gaps, err := o.Gaps(ctx, t0, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, gaps, 1, "the window of lost events is recorded")
	require.False(t, gaps[0].Declared)
	// The first events of the outage waited in the buffer and were recorded
	// once the journal was back; the gap covers the ones that overflowed.
	// (Which ones overflowed depends on when the appender took its first
	// batch: the buffer may free up once during the loop.)
	require.False(t, gaps[0].From.After(t0.Add(time.Duration(first)*time.Second)))
	require.False(t, gaps[0].From.Before(t0.Add(100*time.Second)), "events buffered before the overflow are not in the gap")
	require.True(t, gaps[0].To.After(t0.Add(time.Duration(last)*time.Second)), "gap %v..%v, dropped %d..%d", gaps[0].From.Sub(t0), gaps[0].To.Sub(t0), first, last)

	st, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.False(t, st.Complete)
	require.False(t, st.OpenRate.Complete, "an open rate over a gap is never presented as complete")
	require.Len(t, st.Gaps, 1)
	// A range outside the gap stays complete.
	early, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(30 * time.Second)})
	require.NoError(t, err)
	require.True(t, early.Complete)
}

func TestDeclaredGapsAndCloseWithoutFlush(t *testing.T) {
	t.Parallel()
	store := tracking.NewMemoryStore()
	o, err := tracking.NewOutbox(store, nil)
	require.NoError(t, err)
	require.NoError(t, o.DeclareGap(ctx, t0, t0.Add(time.Hour), "tracking disabled during the migration"))
	require.Error(t, o.DeclareGap(ctx, t0, t0, "empty"))
	store.SetFailure(errors.New("store unreachable"))
	require.NoError(t, o.Track(ctx, ev(5000, tracking.Sent)))
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.Error(t, o.Close(cctx), "it could not flush")
	store.SetFailure(nil)
	// The gap of the unflushed event could not be written while the store
	// was down; a new outbox on the store is how it would be retried. Here
	// the declared gap is there and listed.
	gaps, err := store.Gaps(ctx, t0, t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.NotEmpty(t, gaps)
	require.True(t, gaps[0].Declared)
	require.ErrorIs(t, o.Track(ctx, ev(1, tracking.Sent)), tracking.ErrBufferFull, "a closed outbox refuses and notes the loss")
}

func TestCloseWithoutFlushRecordsAGap(t *testing.T) {
	t.Parallel()
	store := newSlowStore(t)
	o, err := tracking.NewOutbox(store, nil)
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, o.Track(ctx, ev(i, tracking.Sent)))
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	require.Error(t, o.Close(cctx), "the journal never took the events")
	gaps, err := store.Gaps(ctx, t0.Add(-time.Hour), t0.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, gaps, 1)
	require.False(t, gaps[0].From.After(t0))
	require.True(t, gaps[0].To.After(t0.Add(99*time.Second)), "the gap covers every unrecorded event")
}

// slowStore blocks appends until release is closed (at the end of the test).
type slowStore struct {
	*tracking.MemoryStore
	release chan struct{}
	entered chan struct{}
}

func newSlowStore(t *testing.T) *slowStore {
	s := &slowStore{MemoryStore: tracking.NewMemoryStore(), release: make(chan struct{}), entered: make(chan struct{}, 100)}
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *slowStore) Append(ctx context.Context, events []tracking.Event) (int, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return s.MemoryStore.Append(ctx, events)
}

func TestStatsRates(t *testing.T) {
	t.Parallel()
	o := newOutbox(t, tracking.NewMemoryStore(), nil)
	var events []tracking.Event
	for i := range 20 {
		events = append(events, ev(i, tracking.Sent))
		if i < 16 {
			events = append(events, ev(i, tracking.Delivered))
		}
		if i < 8 {
			events = append(events, ev(i, tracking.Opened))
			e := ev(i, tracking.Opened) // a second open of the same message counts once
			e.ID += "-again"
			events = append(events, e)
		}
		if i < 2 {
			events = append(events, ev(i, tracking.Clicked))
		}
	}
	_, err := o.TrackDurable(ctx, events...)
	require.NoError(t, err)
	st, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 20, st.Counts[tracking.Sent])
	require.InDelta(t, 0.8, st.DeliveryRate.Value, 1e-9)
	require.InDelta(t, 0.5, st.OpenRate.Value, 1e-9)
	require.InDelta(t, 0.125, st.ClickRate.Value, 1e-9)
	require.True(t, st.Complete)
	_, err = o.Stats(ctx, tracking.Query{From: t0, To: t0.Add(time.Hour)})
	require.Error(t, err)
}

func TestRegenerateFromOutcomes(t *testing.T) {
	t.Parallel()
	o := newOutbox(t, tracking.NewMemoryStore(), nil)
	_, err := o.TrackDurable(ctx, tracking.Event{ID: "live-1", MessageID: "msg-1", Type: tracking.Sent, At: t0, Campaign: "spring"})
	require.NoError(t, err)
	oc := func(ref string, end tracking.Type, attempts int, at time.Time) tracking.Outcome {
		return tracking.Outcome{Event: tracking.Event{MessageID: "msg-" + ref, Campaign: "spring", Channel: "push"}, End: end, Attempts: attempts, At: at, Ref: ref}
	}
	outcomes := []tracking.Outcome{
		oc("1", tracking.Sent, 1, t0.Add(time.Minute)),
		oc("2", tracking.Sent, 3, t0.Add(2*time.Minute)),
		oc("3", tracking.Dead, 5, t0.Add(3*time.Minute)),
		oc("4", tracking.Expired, 1, t0.Add(4*time.Minute)),
		oc("5", tracking.Sent, 1, t0.Add(2*time.Hour)), // outside
		oc("6", tracking.Queued, 1, t0),                // not an end
	}
	n, err := o.Regenerate(ctx, outcomes, t0, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 4, n, "msg-2 sent+failed, msg-3 dead, msg-4 expired; msg-1's sent was already there")
	n, err = o.Regenerate(ctx, outcomes, t0, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Zero(t, n, "regenerating twice adds nothing")
	st, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, map[tracking.Type]int{tracking.Sent: 2, tracking.Failed: 1, tracking.Dead: 1, tracking.Expired: 1}, st.Counts)
}

func TestSQLSlogAndOTelSinks(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "events.db"))
	require.NoError(t, err)
	defer db.Close()
	sqlSink := &tracking.SQLSink{DB: db}
	ddl, err := sqlSink.CreateTableSQL()
	require.NoError(t, err)
	_, err = db.Exec(ddl)
	require.NoError(t, err)
	var logs bytes.Buffer
	slogSink := &tracking.SlogSink{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Level: slog.LevelInfo}
	reader := metric.NewManualReader()
	provider := metric.NewMeterProvider(metric.WithReader(reader))
	otelSink, err := tracking.NewOTelSink(provider.Meter("herald"))
	require.NoError(t, err)

	events := []tracking.Event{ev(1, tracking.Sent), ev(2, tracking.Sent), ev(1, tracking.Delivered)}
	for _, s := range []tracking.Sink{sqlSink, slogSink, otelSink} {
		require.NoError(t, s.Write(ctx, events))
	}
	require.NoError(t, sqlSink.Write(ctx, events), "a retried batch is ignored by ID")
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM herald_events`).Scan(&n))
	require.Equal(t, 3, n)
	require.Equal(t, 3, strings.Count(logs.String(), `"msg":"herald event"`))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	sum := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64])
	byType := map[string]int64{}
	for _, dp := range sum.DataPoints {
		v, _ := dp.Attributes.Value("type")
		byType[v.AsString()] += dp.Value
	}
	require.Equal(t, map[string]int64{"sent": 2, "delivered": 1}, byType)

	_, err = (&tracking.SQLSink{DB: db, Table: "x; DROP TABLE y"}).CreateTableSQL()
	require.Error(t, err)
}

func ingest(t *testing.T, h http.Handler, body string, hdr map[string]string) (int, tracking.IngestResponse, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/events", strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	var res tracking.IngestResponse
	_ = json.Unmarshal(rr.Body.Bytes(), &res)
	return rr.Code, res, rr.Header()
}

func batch(events ...string) string { return `{"events":[` + strings.Join(events, ",") + `]}` }

func open(id, msg string) string {
	return fmt.Sprintf(`{"id":%q,"message_id":%q,"type":"opened","at":"2030-01-01T12:00:00Z","campaign":"spring"}`, id, msg)
}

func TestIngestDeduplicatesAndRefusesMalformedEvents(t *testing.T) {
	t.Parallel()
	o := newOutbox(t, tracking.NewMemoryStore(), nil)
	h := tracking.IngestHandler(o, &tracking.IngestConfig{Token: secret.String("app-token"), Now: func() time.Time { return t0 }})
	auth := map[string]string{"Authorization": "Bearer app-token"}

	code, res, _ := ingest(t, h, batch(open("c1", "m1"), open("c2", "m2")), auth)
	require.Equal(t, 202, code)
	require.Equal(t, tracking.IngestResponse{Accepted: 2}, res)
	code, res, _ = ingest(t, h, batch(open("c1", "m1"), open("c2", "m2")), auth)
	require.Equal(t, 202, code, "a retried batch is fine")
	require.Equal(t, tracking.IngestResponse{Accepted: 0, Duplicates: 2}, res)

	code, res, _ = ingest(t, h, batch(
		open("c3", "m3"),
		`{"id":"c4","message_id":"m4","type":"sent","at":"2030-01-01T12:00:00Z"}`,
		`{"message_id":"m5","type":"opened","at":"2030-01-01T12:00:00Z"}`,
		`{"id":"c6","type":"clicked","at":"2030-01-01T12:00:00Z"}`,
		`{"id":"c7","message_id":"m7","type":"opened","at":"2031-01-01T12:00:00Z"}`,
		`"not an object"`,
	), auth)
	require.Equal(t, 400, code)
	require.Equal(t, 1, res.Accepted, "the valid event of the batch is kept")
	require.Len(t, res.Rejected, 5)
	require.Equal(t, 1, res.Rejected[0].Index)
	require.Contains(t, res.Rejected[0].Reason, "not an engagement type")
	require.Contains(t, res.Rejected[1].Reason, "no id")
	require.Contains(t, res.Rejected[2].Reason, "no message_id")
	require.Contains(t, res.Rejected[3].Reason, "future")

	st, err := o.Stats(ctx, tracking.Query{Campaign: "spring", From: t0, To: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 3, st.Counts[tracking.Opened], "each opened message counted once")

	code, _, _ = ingest(t, h, `{"events":`, auth)
	require.Equal(t, 400, code)
}

func TestIngestLimitsAndAuth(t *testing.T) {
	t.Parallel()
	o := newOutbox(t, tracking.NewMemoryStore(), nil)
	key := secret.String("hmac-key")
	h := tracking.IngestHandler(o, &tracking.IngestConfig{HMACKey: key, MaxEvents: 3, MaxBody: 4096, Now: func() time.Time { return t0 }})
	body := batch(open("a", "m"))
	signed := func(b string, ts time.Time) map[string]string {
		return map[string]string{"X-Herald-Timestamp": strconv.FormatInt(ts.Unix(), 10), "X-Herald-Signature": tracking.Sign(key.Bytes(), ts.Unix(), []byte(b))}
	}
	code, _, _ := ingest(t, h, body, signed(body, t0))
	require.Equal(t, 202, code)
	code, _, _ = ingest(t, h, body, nil)
	require.Equal(t, 401, code, "unsigned")
	code, _, _ = ingest(t, h, body, signed(body, t0.Add(-10*time.Minute)))
	require.Equal(t, 401, code, "stale signature")
	code, _, _ = ingest(t, h, body, signed(strings.Replace(body, `"m"`, `"x"`, 1), t0))
	require.Equal(t, 401, code, "signature of another body")

	four := batch(open("1", "m"), open("2", "m"), open("3", "m"), open("4", "m"))
	code, _, _ = ingest(t, h, four, signed(four, t0))
	require.Equal(t, 413, code, "too many events")
	huge := batch(open(strings.Repeat("x", 5000), "m"))
	code, _, _ = ingest(t, h, huge, signed(huge, t0))
	require.Equal(t, 413, code, "body too large")

	tokenH := tracking.IngestHandler(o, &tracking.IngestConfig{Token: secret.String("t"), Now: func() time.Time { return t0 }})
	code, _, _ = ingest(t, tokenH, body, map[string]string{"Authorization": "Bearer wrong"})
	require.Equal(t, 401, code)
}

func TestIngestShedsLoad(t *testing.T) {
	t.Parallel()
	store := &slowStore{MemoryStore: tracking.NewMemoryStore(), release: make(chan struct{}), entered: make(chan struct{}, 1)}
	o := newOutbox(t, store, nil)
	h := tracking.IngestHandler(o, &tracking.IngestConfig{MaxInFlight: 1, Now: func() time.Time { return t0 }})
	first := make(chan int)
	go func() {
		code, _, _ := ingest(t, h, batch(open("slow", "m")), nil)
		first <- code
	}()
	<-store.entered // the first batch is being written
	code, _, hdr := ingest(t, h, batch(open("b", "m")), nil)
	require.Equal(t, 429, code)
	require.Equal(t, "1", hdr.Get("Retry-After"))
	close(store.release)
	require.Equal(t, 202, <-first)

	failing := tracking.NewMemoryStore()
	failing.SetFailure(errors.New("down"))
	o2 := newOutbox(t, failing, nil)
	code, _, hdr = ingest(t, tracking.IngestHandler(o2, &tracking.IngestConfig{Now: func() time.Time { return t0 }}), batch(open("c", "m")), nil)
	require.Equal(t, 503, code)
	require.NotEmpty(t, hdr.Get("Retry-After"))
}

// A SlogSink without a Logger writes to slog.Default instead of panicking
// in the forwarder goroutine.
func TestSlogSinkDefaultsToTheDefaultLogger(t *testing.T) {
	require.NoError(t, (&tracking.SlogSink{}).Write(ctx, []tracking.Event{ev(1, tracking.Sent)}))
}

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) tracking.Store { return tracking.NewMemoryStore() }, nil)
}
