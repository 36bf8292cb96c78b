package server

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/embedded"
)

func TestStoreLoadCoversTheLastWindow(t *testing.T) {
	l := &loadSamples{window: time.Minute}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, ok := l.get(t0, embedded.WriteStats{}); ok {
		t.Fatal("a load before any sample")
	}
	// For the first minute the writer is busy a tenth of the time, then
	// half of it: 100 commits a second of 4 writes each throughout.
	var ws embedded.WriteStats
	at := t0
	l.add(at, ws)
	step := func(busy float64) {
		at = at.Add(5 * time.Second)
		ws.Busy += time.Duration(busy * float64(5*time.Second))
		ws.Commits += 500
		ws.Writes += 2000
		l.add(at, ws)
	}
	for range 12 {
		step(0.1)
	}
	got, ok := l.get(at, ws)
	if !ok || got.Window != 60 || !near(got.WriterBusy, 0.1) || !near(got.CommitsPerSecond, 100) || !near(got.WritesPerCommit, 4) {
		t.Fatalf("after the first minute: %+v, %v", got, ok)
	}
	for range 12 {
		step(0.5)
	}
	if got, _ = l.get(at, ws); got.Window != 60 || !near(got.WriterBusy, 0.5) {
		t.Fatalf("the first minute should have left the window: %+v", got)
	}
	if len(l.samples) > 14 {
		t.Fatalf("%d samples kept for a minute of samples 5 s apart", len(l.samples))
	}
	// Between samples the window starts at the last sample a minute old,
	// and ends now with the counters of now.
	now := at.Add(2 * time.Second)
	ws.Busy += 2 * time.Second // saturated since the last sample
	if got, _ = l.get(now, ws); got.Window != 62 || !near(got.WriterBusy, (0.5*60+2)/62) {
		t.Fatalf("between samples: %+v", got)
	}
	if !(StoreLoad{WriterBusy: 0.95}).Saturated() || (StoreLoad{WriterBusy: 0.5}).Saturated() {
		t.Fatal("saturated is 90 % busy or more")
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
