package server

import (
	"sync"
	"time"

	"github.com/heraldhq/herald/embedded"
)

// Every accepted message, outcome and tracking event of a heraldd on one
// file waits for that file's single writer, so the writer's busy share is
// the store's headroom (BENCHMARKS.md: near 1, each write queues behind
// others). Its counters are sampled every loadEvery, and the console and
// the admin API show its use over the last loadWindow.
const (
	loadEvery  = 5 * time.Second
	loadWindow = time.Minute
)

// StoreLoad is the embedded file's writer over a recent window.
type StoreLoad struct {
	// Holds is what the file holds: "store" (the embedded store:
	// everything) or "journal" (the tracking journal beside Redis).
	Holds string `json:"holds"`
	// Window is how long the figures cover, in seconds: a minute, up to
	// loadEvery more (the samples' spacing), or less just after start.
	Window float64 `json:"window_seconds"`
	// WriterBusy is the share of the window the writer spent applying
	// writes (their SQL and their commits). Near 1 the store is
	// saturated: each write waits behind others.
	WriterBusy float64 `json:"writer_busy"`
	// CommitsPerSecond is the rate of transactions (each one fsync).
	CommitsPerSecond float64 `json:"commits_per_second"`
	// WritesPerCommit is how many writes shared a commit on average.
	WritesPerCommit float64 `json:"writes_per_commit"`
}

// Saturated is true when the writer was busy 90 % of the window or more.
func (l StoreLoad) Saturated() bool { return l.WriterBusy >= 0.9 }

type loadSample struct {
	at time.Time
	ws embedded.WriteStats
}

// loadSamples keeps the writer's counters of the last window, oldest first.
type loadSamples struct {
	mu      sync.Mutex
	window  time.Duration
	samples []loadSample
}

func (l *loadSamples) add(at time.Time, ws embedded.WriteStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples = append(l.samples, loadSample{at, ws})
	// Keep one sample at or before the window's start, so the figures
	// cover the whole window.
	for len(l.samples) > 1 && at.Sub(l.samples[1].at) >= l.window {
		l.samples = l.samples[1:]
	}
}

// get returns the load from the window's start (the newest sample at or
// before it, or the oldest there is) to now and its counters cur.
func (l *loadSamples) get(now time.Time, cur embedded.WriteStats) (StoreLoad, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) == 0 {
		return StoreLoad{}, false
	}
	a := l.samples[0]
	for _, s := range l.samples[1:] {
		if now.Sub(s.at) < l.window {
			break
		}
		a = s
	}
	span := now.Sub(a.at)
	if span <= 0 {
		return StoreLoad{}, false
	}
	out := StoreLoad{
		Window:           span.Seconds(),
		WriterBusy:       min(float64(cur.Busy-a.ws.Busy)/float64(span), 1),
		CommitsPerSecond: float64(cur.Commits-a.ws.Commits) / span.Seconds(),
	}
	if c := cur.Commits - a.ws.Commits; c > 0 {
		out.WritesPerCommit = float64(cur.Writes-a.ws.Writes) / float64(c)
	}
	return out, true
}

// storeLoad returns the embedded store's load over the last window; false
// for a store without a file.
func (s *Server) storeLoad() (StoreLoad, bool) {
	if s.st.file == nil {
		return StoreLoad{}, false
	}
	l, ok := s.load.get(time.Now(), s.st.file.WriteStats())
	l.Holds = s.st.holds
	return l, ok
}

// sampleLoad samples the embedded store's counters every every until the
// server closes (New took the first sample). Stores without a file (PostgreSQL) have nothing to
// sample.
func (s *Server) sampleLoad(every time.Duration) {
	f := s.st.file
	if f == nil {
		return
	}
	s.rescan.Add(1)
	go func() {
		defer s.rescan.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.closed:
				return
			case now := <-t.C:
				s.load.add(now, f.WriteStats())
			}
		}
	}()
}
