package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/internal/fakeproviders"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/server"
)

// BenchmarkHTTPLoad: 256 HTTP clients send pushes to heraldd (in this
// process, on the embedded store, delivering to the fake APNs) for
// HERALD_LOAD_SECONDS (default 10; BENCHMARKS.md quotes 60):
//
//	HERALD_LOAD_SECONDS=60 go test -run '^$' -bench HTTPLoad -benchtime 1x ./server/
//
// It reports accepted/s, the p50 and p99 of the 202, and lost: accepted
// messages not completed once the backlog drained. HERALD_LOAD_PAUSE=1
// pauses the push lanes while the clients send (the door alone, with no
// delivery sharing the cores) and resumes them for the drain.
func BenchmarkHTTPLoad(b *testing.B) {
	secs := 10
	if s := os.Getenv("HERALD_LOAD_SECONDS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	for range b.N {
		loadRound(b, time.Duration(secs)*time.Second, 256)
	}
}

func loadRound(b *testing.B, d time.Duration, clients int) {
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f, err := fakeproviders.Start(b, dir, &fakeproviders.Options{Listen: ln.Addr().String(),
		Extra: "lanes:\n  transactional:\n    concurrency: 32\n"})
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := server.LoadConfig(f.Config)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	key := f.Keys["sender"]
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var accepted, failed atomic.Int64
	lats := make([][]time.Duration, clients)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	paused, _ := strconv.ParseBool(os.Getenv("HERALD_LOAD_PAUSE"))
	lanes := []string{herald.Lane(true, "apns"), herald.Lane(false, "apns")}
	if paused {
		for _, l := range lanes {
			if err := s.Dispatcher().Queue().Pause(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	}
	busy0, h0 := scrapeLoad(b, base)
	b.ResetTimer()
	start, cpu0 := time.Now(), bench.CPUTime()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				k := fmt.Sprintf("load-%d-%d", c, i)
				body, _ := json.Marshal(pushMsg("apns", pushtest.DeviceToken(k), "load", ""))
				req, _ := http.NewRequest("POST", base+"/v1/messages", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", k)
				t := time.Now()
				res, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body) // so the connection is reused
				res.Body.Close()
				if res.StatusCode == 202 {
					lats[c] = append(lats[c], time.Since(t))
					accepted.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cores := (bench.CPUTime() - cpu0).Seconds() / elapsed.Seconds()
	b.StopTimer()
	busy1, h1 := scrapeLoad(b, base)
	busy := (busy1 - busy0) / elapsed.Seconds()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	if paused {
		for _, l := range lanes {
			if err := s.Dispatcher().Queue().Resume(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Drain: every accepted message must complete.
	var completed int
	drainBy := time.Now().Add(5 * time.Minute)
	for time.Now().Before(drainBy) {
		st, err := s.Dispatcher().Queue().Stats(context.Background())
		if err == nil {
			completed = 0
			for _, l := range st {
				completed += l.Completed
			}
			if int64(completed) >= accepted.Load() {
				break
			}
		}
		time.Sleep(time.Second)
	}
	cancel()
	<-done
	tr.CloseIdleConnections()
	if len(all) == 0 {
		b.Fatal("nothing accepted")
	}
	b.ReportMetric(float64(accepted.Load())/elapsed.Seconds(), "accepted/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(accepted.Load()-int64(completed)), "lost")
	b.ReportMetric(float64(failed.Load()), "refused")
	// The process's CPU over the window (server, its workers and the
	// clients): at the machine's cores, the door is CPU-bound.
	b.ReportMetric(cores, "cores")
	// The store's writer: its busy share of the window, from /metrics.
	b.ReportMetric(busy, "writer-busy")
	// The mean time inside the 202s' handler (the server's own histogram)
	// beside the clients' mean: the difference is spent before and after
	// the handler (connections, the HTTP server, the scheduler).
	if n := h1.count - h0.count; n > 0 {
		b.ReportMetric((h1.sum-h0.sum)/float64(n)*1000, "handler-mean-ms")
	}
	var total time.Duration
	for _, l := range all {
		total += l
	}
	b.ReportMetric(float64(total.Microseconds())/float64(len(all))/1000, "client-mean-ms")
}

type histSum struct {
	sum   float64
	count uint64
}

// scrapeLoad reads the store writer's busy seconds and the 202s' handler
// histogram of POST /v1/messages from /metrics.
func scrapeLoad(b *testing.B, base string) (float64, histSum) {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		b.Fatal(err)
	}
	var h histSum
	if f := fams["herald_http_request_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			route, code := "", ""
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			if route == "POST /v1/messages" && code == "202" && m.Histogram != nil {
				h.sum += m.GetHistogram().GetSampleSum()
				h.count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return sum(fams, "herald_store_writer_busy_seconds_total", nil), h
}
