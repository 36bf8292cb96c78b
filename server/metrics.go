package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/tracking"
)

// metrics is heraldd's Prometheus registry. Labels are lanes, routes,
// event types, channels, providers, error classes and HTTP routes: never a
// user, token, address or key.
type metrics struct {
	s        *Server
	reg      *prometheus.Registry
	events   *prometheus.CounterVec
	requests *prometheus.HistogramVec
}

var (
	laneJobs = prometheus.NewDesc("herald_lane_jobs", "Messages in a lane by state.", []string{"lane", "state"}, nil)
	laneLag  = prometheus.NewDesc("herald_lane_oldest_ready_seconds",
		"How long the oldest due message of a lane has waited.", []string{"lane"}, nil)
	lanePaused  = prometheus.NewDesc("herald_lane_paused", "1 when a lane is paused.", []string{"lane"}, nil)
	circuitOpen = prometheus.NewDesc("herald_circuit_open",
		"1 when a route's circuit is open or probing (its messages wait).", []string{"route"}, nil)
	circuitFailures = prometheus.NewDesc("herald_circuit_failures",
		"Provider-down answers since the route's last success.", []string{"route"}, nil)
	sinkBacklog = prometheus.NewDesc("herald_tracking_sink_backlog_events",
		"Journal events a sink has not received.", []string{"sink"}, nil)
	sinkLag = prometheus.NewDesc("herald_tracking_sink_lag_seconds",
		"Age of the oldest event a sink has not received.", []string{"sink"}, nil)
	outboxPending = prometheus.NewDesc("herald_tracking_pending_events",
		"Events tracked and not yet in the journal.", nil, nil)
	gaps = prometheus.NewDesc("herald_tracking_gaps",
		"Tracking gaps (windows with missing events) in the last 24 hours.", nil, nil)
	lastProgress = prometheus.NewDesc("herald_worker_last_progress_seconds",
		"Seconds since a worker last finished an attempt.", nil, nil)
	// The embedded store's one writer: every durable write waits for it.
	storeWrites = prometheus.NewDesc("herald_store_writes_total",
		"Writes the embedded store applied (an accepted batch, a batch of outcomes or events, ...).", nil, nil)
	storeCommits = prometheus.NewDesc("herald_store_commits_total",
		"Transactions (and fsyncs) of the embedded store: writes ÷ commits is how well group commit shares the disk.", nil, nil)
	storeBusy = prometheus.NewDesc("herald_store_writer_busy_seconds_total",
		"Time the embedded store's writer spent applying writes; its rate near 1 means the store is saturated.", nil, nil)
)

func newMetrics(s *Server) *metrics {
	m := &metrics{s: s, reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_events_total",
			Help: "Tracking events: accepted, sent, failed (with the error class), capped, deferred, expired, dead, ..."},
			[]string{"type", "channel", "provider", "error_class"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_http_request_duration_seconds",
			Help: "HTTP requests by route and status.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}},
			[]string{"route", "code"}),
	}
	m.reg.MustRegister(m.events, m.requests, m, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{laneJobs, laneLag, lanePaused, circuitOpen, circuitFailures, sinkBacklog, sinkLag, outboxPending, gaps, lastProgress,
		storeWrites, storeCommits, storeBusy} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: lanes, circuits and tracking,
// read at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if st, err := s.d.Queue().Stats(ctx); err == nil {
		for _, l := range st {
			for state, n := range map[string]int{"ready": l.Ready, "scheduled": l.Scheduled, "running": l.Running,
				"completed": l.Completed, "dead": l.Dead, "expired": l.Expired} {
				g(laneJobs, float64(n), l.Lane, state)
			}
			g(laneLag, l.OldestReady.Seconds(), l.Lane)
			g(lanePaused, b2f(l.Paused), l.Lane)
		}
	}
	for _, c := range s.d.Circuits() {
		g(circuitOpen, b2f(c.State != "closed"), c.Route)
		g(circuitFailures, float64(c.Failures), c.Route)
	}
	if ss, err := s.outbox.SinkStatus(ctx); err == nil {
		for _, st := range ss {
			g(sinkBacklog, float64(st.Backlog), st.Sink)
			lag := 0.0
			if !st.OldestUndelivered.IsZero() {
				lag = time.Since(st.OldestUndelivered).Seconds()
			}
			g(sinkLag, lag, st.Sink)
		}
	}
	g(outboxPending, float64(s.outbox.Pending()))
	now := time.Now()
	if gs, err := s.outbox.Gaps(ctx, now.Add(-24*time.Hour), now); err == nil {
		g(gaps, float64(len(gs)))
	}
	g(lastProgress, time.Since(time.Unix(0, s.lastProgress.Load())).Seconds())
	if f := s.st.file; f != nil {
		ws := f.WriteStats()
		c := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
		}
		c(storeWrites, float64(ws.Writes))
		c(storeCommits, float64(ws.Commits))
		c(storeBusy, ws.Busy.Seconds())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// eventSink counts tracking events: attempts and outcomes per provider and
// error class, capping decisions.
type eventSink struct{ m *metrics }

func (m *metrics) sink() tracking.Sink { return eventSink{m} }

func (eventSink) Name() string { return "metrics" }

func (e eventSink) Write(_ context.Context, events []tracking.Event) error {
	for _, ev := range events {
		e.m.events.WithLabelValues(string(ev.Type), ev.Channel, ev.Provider, ev.ErrorClass).Inc()
	}
	return nil
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streams (the Inbox's) through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument times a route's requests.
func (m *metrics) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		m.requests.WithLabelValues(route, strconv.Itoa(max(sw.code, 200))).Observe(time.Since(t).Seconds())
	})
}
