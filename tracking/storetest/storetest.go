// Package storetest is the conformance suite every tracking.Store must
// pass: the memory journal, the embedded store's and PostgreSQL's run it.
// It imports only the standard library and package tracking, so a store
// in another module can run it too.
//
//	func TestTrackingConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) tracking.Store { return newStore(t) }, nil)
//	}
package storetest

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/tracking"
)

// Options tune the suite.
type Options struct {
	// Reopen, when set, closes s and opens the same journal again; the
	// Durability case runs with it.
	Reopen func(t *testing.T, s tracking.Store) tracking.Store
	// Appenders and PerAppender size the concurrent-append case (defaults
	// 8 and 250).
	Appenders, PerAppender int
}

// base is the suite's epoch: whole microseconds, which every store keeps.
var base = time.Date(2030, 3, 4, 5, 6, 7, 8000, time.UTC)

var ctx = context.Background()

// Run runs the suite. open must return a new, empty store and arrange its
// Close with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) tracking.Store, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	if opts.Appenders == 0 {
		opts.Appenders = 8
	}
	if opts.PerAppender == 0 {
		opts.PerAppender = 250
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s tracking.Store)
	}{
		{"AppendInOrderSkippingKnownIDs", testAppend},
		{"EventsRoundTrip", testRoundTrip},
		{"ReadPages", testRead},
		{"Cursors", testCursors},
		{"Gaps", testGaps},
		{"CountsDistinctMessages", testCounts},
		{"Has", testHas},
		{"MessageEvents", testMessageEvents},
		{"ConcurrentAppenders", func(t *testing.T, s tracking.Store) { testConcurrent(t, s, opts.Appenders, opts.PerAppender) }},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	if opts.Reopen != nil {
		t.Run("Durability", func(t *testing.T) {
			t.Parallel()
			testDurability(t, open(t), opts.Reopen)
		})
	}
}

func ev(id, msg string, typ tracking.Type, at time.Time) tracking.Event {
	return tracking.Event{ID: id, MessageID: msg, Type: typ, At: at}
}

func appendOK(t *testing.T, s tracking.Store, want int, evs ...tracking.Event) {
	t.Helper()
	n, err := s.Append(ctx, evs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if n != want {
		t.Fatalf("Append added %d, want %d", n, want)
	}
}

func readAll(t *testing.T, s tracking.Store) []tracking.Record {
	t.Helper()
	var out []tracking.Record
	after := int64(0)
	for {
		rs, err := s.Read(ctx, after, 100)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
		after = rs[len(rs)-1].Seq
	}
}

func ids(rs []tracking.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Event.ID
	}
	return out
}

func testAppend(t *testing.T, s tracking.Store) {
	if h, err := s.Head(ctx); err != nil || h != 0 {
		t.Fatalf("Head of an empty journal: %d, %v", h, err)
	}
	appendOK(t, s, 3, ev("a", "m1", tracking.Accepted, base), ev("b", "m1", tracking.Sent, base.Add(time.Second)), ev("c", "m2", tracking.Sent, base))
	// A repeat (after a crash, a retried ingest) is skipped, the rest kept
	// in order, and an ID twice in one call counts once.
	appendOK(t, s, 2, ev("b", "m1", tracking.Sent, base.Add(time.Second)), ev("d", "m2", tracking.Opened, base), ev("e", "m3", tracking.Sent, base), ev("e", "m3", tracking.Sent, base))
	rs := readAll(t, s)
	if got, want := ids(rs), []string{"a", "b", "c", "d", "e"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("journal order %v, want %v", got, want)
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].Seq <= rs[i-1].Seq {
			t.Fatalf("sequence numbers not increasing: %d then %d", rs[i-1].Seq, rs[i].Seq)
		}
	}
	h, err := s.Head(ctx)
	if err != nil || h != rs[len(rs)-1].Seq {
		t.Fatalf("Head %d (%v), want the last record's %d", h, err, rs[len(rs)-1].Seq)
	}
	appendOK(t, s, 0)
}

func testRoundTrip(t *testing.T, s tracking.Store) {
	in := tracking.Event{
		ID: "full", MessageID: "order-42", User: "u1", Device: "phone", Channel: "push", Provider: "apns",
		Campaign: "spring", Automation: "welcome", Labels: []string{"promo", "fr"}, Type: tracking.Failed,
		At: base, Attempt: 3, ProviderMessageID: "apns-id-1", ErrorClass: "unavailable", Reason: "opted out of category:promotions",
	}
	appendOK(t, s, 1, in)
	rs := readAll(t, s)
	if len(rs) != 1 {
		t.Fatalf("%d records, want 1", len(rs))
	}
	out := rs[0].Event
	if !out.At.Equal(in.At) {
		t.Fatalf("At %s, want %s", out.At, in.At)
	}
	out.At = in.At
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("event changed in the journal:\n got %+v\nwant %+v", out, in)
	}
}

func testRead(t *testing.T, s tracking.Store) {
	var evs []tracking.Event
	for i := range 25 {
		evs = append(evs, ev(fmt.Sprint("e", i), fmt.Sprint("m", i), tracking.Sent, base))
	}
	appendOK(t, s, 25, evs...)
	first, err := s.Read(ctx, 0, 10)
	if err != nil || len(first) != 10 || first[0].Event.ID != "e0" {
		t.Fatalf("first page: %d records (%v), want 10 from e0", len(first), err)
	}
	next, err := s.Read(ctx, first[9].Seq, 10)
	if err != nil || len(next) != 10 || next[0].Event.ID != "e10" {
		t.Fatalf("second page: %d records (%v), want 10 from e10", len(next), err)
	}
	h, _ := s.Head(ctx)
	past, err := s.Read(ctx, h, 10)
	if err != nil || len(past) != 0 {
		t.Fatalf("after the head: %d records (%v), want none", len(past), err)
	}
}

func testCursors(t *testing.T, s tracking.Store) {
	if c, err := s.Cursor(ctx, "webhook"); err != nil || c != 0 {
		t.Fatalf("unknown sink's cursor: %d, %v; want 0", c, err)
	}
	for sink, seq := range map[string]int64{"webhook": 7, "sql": 3} {
		if err := s.SetCursor(ctx, sink, seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetCursor(ctx, "webhook", 9); err != nil {
		t.Fatal(err)
	}
	for sink, want := range map[string]int64{"webhook": 9, "sql": 3, "otel": 0} {
		if c, err := s.Cursor(ctx, sink); err != nil || c != want {
			t.Fatalf("cursor of %s: %d (%v), want %d", sink, c, err, want)
		}
	}
}

func testGaps(t *testing.T, s tracking.Store) {
	g1 := tracking.Gap{From: base, To: base.Add(time.Hour), Reason: "journal down"}
	g2 := tracking.Gap{From: base.Add(2 * time.Hour), To: base.Add(3 * time.Hour), Reason: "maintenance", Declared: true}
	for _, g := range []tracking.Gap{g1, g2} {
		if err := s.AddGap(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		from, to time.Time
		want     []string
	}{
		{base.Add(-time.Hour), base.Add(4 * time.Hour), []string{"journal down", "maintenance"}},
		{base.Add(30 * time.Minute), base.Add(90 * time.Minute), []string{"journal down"}},
		{base.Add(time.Hour), base.Add(2 * time.Hour), nil}, // [from, to): touching is not overlapping
		{base.Add(-time.Hour), base, nil},
		{base.Add(150 * time.Minute), base.Add(151 * time.Minute), []string{"maintenance"}},
	}
	for _, tc := range cases {
		gs, err := s.Gaps(ctx, tc.from, tc.to)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, g := range gs {
			got = append(got, g.Reason)
			if g.Reason == "maintenance" && (!g.Declared || !g.From.Equal(g2.From) || !g.To.Equal(g2.To)) {
				t.Fatalf("gap changed in the store: %+v, want %+v", g, g2)
			}
			if g.Reason == "journal down" && g.Declared {
				t.Fatalf("a recorded gap came back declared: %+v", g)
			}
		}
		sort.Strings(got)
		if !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("gaps over [%s, %s): %v, want %v", tc.from.Sub(base), tc.to.Sub(base), got, tc.want)
		}
	}
}

func testCounts(t *testing.T, s tracking.Store) {
	evs := []tracking.Event{
		{ID: "1", MessageID: "m1", Type: tracking.Sent, At: base, Campaign: "spring"},
		{ID: "2", MessageID: "m1", Type: tracking.Sent, At: base.Add(time.Second), Campaign: "spring"}, // the same message again
		{ID: "3", MessageID: "m2", Type: tracking.Sent, At: base, Campaign: "spring", Automation: "welcome"},
		{ID: "4", MessageID: "m2", Type: tracking.Opened, At: base.Add(time.Minute), Campaign: "spring", Automation: "welcome"},
		{ID: "5", MessageID: "m3", Type: tracking.Sent, At: base, Campaign: "autumn"},
		{ID: "6", MessageID: "m4", Type: tracking.Sent, At: base.Add(time.Hour), Campaign: "spring"}, // outside [From, To)
	}
	appendOK(t, s, len(evs), evs...)
	cases := []struct {
		q    tracking.Query
		want map[tracking.Type]int
	}{
		{tracking.Query{Campaign: "spring", From: base, To: base.Add(time.Hour)}, map[tracking.Type]int{tracking.Sent: 2, tracking.Opened: 1}},
		{tracking.Query{Automation: "welcome", From: base, To: base.Add(2 * time.Hour)}, map[tracking.Type]int{tracking.Sent: 1, tracking.Opened: 1}},
		{tracking.Query{From: base, To: base.Add(2 * time.Hour)}, map[tracking.Type]int{tracking.Sent: 4, tracking.Opened: 1}},
		{tracking.Query{Campaign: "none", From: base, To: base.Add(time.Hour)}, map[tracking.Type]int{}},
	}
	for _, tc := range cases {
		got, err := s.Counts(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range got {
			if v == 0 {
				delete(got, k)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("Counts(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

// testHas finds an event by message and type whatever its ID's shape:
// herald's own ("<message>/<type>/<attempt>"), a host's, or one that
// starts with another message's ID.
func testHas(t *testing.T, s tracking.Store) {
	appendOK(t, s, 4, ev("x", "m1", tracking.Sent, base), ev("m3/delivered/1", "m3", tracking.Delivered, base),
		ev("m3/opened", "m4", tracking.Opened, base), ev("m3/x/clicked/1", "m3/x", tracking.Clicked, base))
	for _, tc := range []struct {
		msg  string
		typ  tracking.Type
		want bool
	}{{"m1", tracking.Sent, true}, {"m1", tracking.Opened, false}, {"m2", tracking.Sent, false},
		{"m3", tracking.Delivered, true}, {"m3", tracking.Opened, false}, {"m3", tracking.Clicked, false},
		{"m4", tracking.Opened, true}, {"m3/x", tracking.Clicked, true}, {"m3/x", tracking.Delivered, false}} {
		got, err := s.Has(ctx, tc.msg, tc.typ)
		if err != nil || got != tc.want {
			t.Fatalf("Has(%s, %s) = %v (%v), want %v", tc.msg, tc.typ, got, err, tc.want)
		}
	}
}

// testMessageEvents: a journal that lists a message's events
// (tracking.MessageReader) lists its events in order, at most limit, and
// none of another message's.
func testMessageEvents(t *testing.T, s tracking.Store) {
	mr, ok := s.(tracking.MessageReader)
	if !ok {
		t.Skip("the store does not implement tracking.MessageReader")
	}
	// IDs of every shape: a host's, herald's own ("<message>/<type>/<n>"),
	// and ones that start with another message's ID and a slash.
	appendOK(t, s, 8, ev("a", "m1", tracking.Accepted, base), ev("b", "m2", tracking.Accepted, base),
		ev("m1/failed/1", "m1", tracking.Failed, base.Add(time.Second)), ev("m1/other", "m2", tracking.Failed, base.Add(time.Second)),
		ev("m1/x/sent/1", "m1/x", tracking.Sent, base.Add(time.Second)), ev("d", "m1", tracking.Sent, base.Add(2*time.Second)),
		ev("m1/delivered/1", "m1", tracking.Delivered, base.Add(3*time.Second)), ev("m10/sent/1", "m10", tracking.Sent, base))
	types := func(msg string, limit int) string {
		t.Helper()
		got, err := mr.MessageEvents(ctx, msg, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range got {
			out = append(out, e.ID)
		}
		return fmt.Sprint(out)
	}
	for _, tc := range []struct {
		msg   string
		limit int
		want  string
	}{{"m1", 10, "[a m1/failed/1 d m1/delivered/1]"}, {"m1", 2, "[a m1/failed/1]"}, {"m2", 10, "[b m1/other]"},
		{"m1/x", 10, "[m1/x/sent/1]"}, {"m10", 10, "[m10/sent/1]"}, {"m3", 10, "[]"}} {
		if got := types(tc.msg, tc.limit); got != tc.want {
			t.Fatalf("MessageEvents(%s, %d) = %s, want %s (journal order)", tc.msg, tc.limit, got, tc.want)
		}
	}
}

// testConcurrent: appenders racing with overlapping IDs (as hosts
// replaying the same events do) leave each ID exactly once, in a journal
// whose sequence numbers increase.
func testConcurrent(t *testing.T, s tracking.Store, appenders, per int) {
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i += 10 {
				var batch []tracking.Event
				for j := i; j < min(i+10, per); j++ {
					// Half the IDs are shared with the next appender.
					owner := a
					if j%2 == 1 {
						owner = (a + 1) % appenders
					}
					batch = append(batch, ev(fmt.Sprintf("a%d-%d", owner, j), fmt.Sprint("m", j), tracking.Sent, base))
				}
				if _, err := s.Append(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	rs := readAll(t, s)
	seen := map[string]bool{}
	for i, r := range rs {
		if seen[r.Event.ID] {
			t.Fatalf("event %s journaled twice", r.Event.ID)
		}
		seen[r.Event.ID] = true
		if i > 0 && r.Seq <= rs[i-1].Seq {
			t.Fatalf("sequence numbers not increasing: %d then %d", rs[i-1].Seq, r.Seq)
		}
	}
	if want := appenders * per; len(rs) != want {
		t.Fatalf("%d events journaled, want %d distinct", len(rs), want)
	}
}

func testClosed(t *testing.T, s tracking.Store) {
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Append(ctx, []tracking.Event{ev("z", "m", tracking.Sent, base)}); err == nil {
		t.Fatal("Append after Close succeeded")
	}
	if _, err := s.Read(ctx, 0, 1); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}

func testDurability(t *testing.T, s tracking.Store, reopen func(*testing.T, tracking.Store) tracking.Store) {
	appendOK(t, s, 2, ev("a", "m1", tracking.Sent, base), ev("b", "m2", tracking.Sent, base))
	if err := s.SetCursor(ctx, "webhook", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddGap(ctx, tracking.Gap{From: base, To: base.Add(time.Minute), Reason: "crash"}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if got := ids(readAll(t, s)); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("after reopen: %v, want [a b]", got)
	}
	if c, err := s.Cursor(ctx, "webhook"); err != nil || c != 1 {
		t.Fatalf("cursor after reopen: %d (%v), want 1", c, err)
	}
	gs, err := s.Gaps(ctx, base.Add(-time.Hour), base.Add(time.Hour))
	if err != nil || len(gs) != 1 {
		t.Fatalf("gaps after reopen: %v (%v), want the crash gap", gs, err)
	}
	// The journal goes on after reopening: new events follow, repeats are
	// still skipped.
	appendOK(t, s, 1, ev("a", "m1", tracking.Sent, base), ev("c", "m3", tracking.Sent, base))
	if got := ids(readAll(t, s)); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Fatalf("after appending past the reopen: %v", got)
	}
}
