// Command heraldbench measures the retry queue on the embedded store, and
// a campaign's fan-out into it: the figures in BENCHMARKS.md come from it.
//
//	go run ./cmd/heraldbench               # every scenario, 3 rounds, medians
//	go run ./cmd/heraldbench -rounds 5 -scenarios e2e,retry
//
// Every scenario runs in a fresh child process on a fresh store (so peak
// RSS is its own), and the disk's fsync rate is measured just before it,
// because on shared machines that rate moves from minute to minute and
// bounds what any durable queue can do. Rounds are interleaved, and the
// report gives each scenario's median with the fsync rate of that round.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/campaign/campaigntest"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
)

type scenario struct {
	name string
	desc string
	jobs int
	run  func(ctx context.Context, path string, jobs int) (time.Duration, error)
}

func withQueue(path string, fn func(*retry.Queue) (time.Duration, error)) (time.Duration, error) {
	db, err := embedded.Open(path, nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	q, err := retry.New(db.Retry(), nil)
	if err != nil {
		return 0, err
	}
	return fn(q)
}

func enqueueScenario(producers int) func(context.Context, string, int) (time.Duration, error) {
	return func(ctx context.Context, path string, jobs int) (time.Duration, error) {
		return withQueue(path, func(q *retry.Queue) (time.Duration, error) { return bench.Enqueue(ctx, q, producers, jobs) })
	}
}

func endToEnd(failFirst bool) func(context.Context, string, int) (time.Duration, error) {
	return func(ctx context.Context, path string, jobs int) (time.Duration, error) {
		db, err := embedded.Open(path, nil)
		if err != nil {
			return 0, err
		}
		defer db.Close()
		return bench.EndToEnd(ctx, db.Retry(), jobs, 16, failFirst)
	}
}

var scenarios = []scenario{
	{"enqueue-1", "durable enqueue, 1 producer", 5_000, enqueueScenario(1)},
	{"enqueue-16", "durable enqueue, 16 producers", 50_000, enqueueScenario(16)},
	{"enqueue-256", "durable enqueue, 256 producers", 150_000, enqueueScenario(256)},
	{"batch-100", "batch enqueue of 100, 1 producer", 200_000, func(ctx context.Context, path string, jobs int) (time.Duration, error) {
		return withQueue(path, func(q *retry.Queue) (time.Duration, error) { return bench.EnqueueBatch(ctx, q, 100, jobs) })
	}},
	{"e2e", "end-to-end: 100k waiting jobs, no-op handler, concurrency 16", 100_000, endToEnd(false)},
	{"retry", "retry path: 50k jobs each failing once, retried at once, concurrency 16", 50_000, endToEnd(true)},
	{"rss-100k", "100,000 jobs waiting: fill, then claim and complete 1,000", 100_000, waiting(false)},
	{"rss-1m", "1,000,000 jobs waiting: fill, then claim and complete 1,000", 1_000_000, waiting(false)},
	{"open-1m", "Open with 1,000,000 jobs waiting (timed), then claim and complete 1,000", 1_000_000, waiting(true)},
	{"fanout-100k", "a campaign's audience of 100,000 staged (read, built, checked, stored with its cursor) while it drains at 1,000/s", 100_000, fanout},
	{"fanout-1m", "a campaign's audience of 1,000,000 staged while it drains at 1,000/s", 1_000_000, fanout},
}

// fanout stages a campaign's audience of n push recipients on the
// embedded store and times it until the audience is staged, the drain
// held to 1,000 messages/s meanwhile (no workers: nothing is delivered).
func fanout(ctx context.Context, path string, n int) (time.Duration, error) {
	db, err := embedded.Open(path, nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	d, err := herald.New(&herald.Config{Store: db.Retry(), Push: map[push.Provider]push.Sender{push.APNs: pushtest.NewRecorder(push.APNs)}})
	if err != nil {
		return 0, err
	}
	r, err := campaign.New(&campaign.Config{Dispatcher: d, Store: db.Checkpoints(),
		Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: n}}})
	if err != nil {
		return 0, err
	}
	c := campaign.Campaign{Key: "bench", Name: "bench", Audience: "all", Category: "promotions", Labels: []string{"promo"}, PerSecond: 1000,
		Content: campaign.Content{Push: &herald.PushMessage{Provider: push.APNs,
			Message: push.Message{Notification: push.Notification{Title: "Hi {{.Name}}", Body: "40% off"}}}}}
	if _, err := r.Create(ctx, c); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx, c.Key) }()
	for {
		select {
		case err := <-ran:
			return 0, fmt.Errorf("the campaign stopped before its audience was staged: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
		st, err := r.Status(ctx, c.Key)
		if err != nil {
			return 0, err
		}
		if st.FanoutDone {
			took := time.Since(start)
			cancel()
			<-ran
			if st.Staged != n || st.Recipients != n {
				return 0, fmt.Errorf("staged %d messages of %d recipients read, want %d", st.Staged, st.Recipients, n)
			}
			return took, nil
		}
	}
}

// waiting fills the store with jobs, optionally closes and reopens it (and
// times only the Open), then claims and completes 1,000 of them.
func waiting(reopen bool) func(context.Context, string, int) (time.Duration, error) {
	return func(ctx context.Context, path string, jobs int) (time.Duration, error) {
		db, err := embedded.Open(path, nil)
		if err != nil {
			return 0, err
		}
		defer func() { _ = db.Close() }()
		q, err := retry.New(db.Retry(), nil)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := bench.Fill(ctx, q, jobs); err != nil {
			return 0, err
		}
		if reopen {
			if err := db.Close(); err != nil {
				return 0, err
			}
			start = time.Now()
			if db, err = embedded.Open(path, nil); err != nil {
				return 0, err
			}
		}
		took := time.Since(start)
		for range 100 {
			now := time.Now()
			js, err := db.Retry().Claim(ctx, retry.DefaultLane, 10, now, now.Add(time.Minute))
			if err != nil {
				return 0, err
			}
			if len(js) != 10 {
				return 0, fmt.Errorf("claimed %d of 10", len(js))
			}
			outs := make([]retry.Outcome, len(js))
			for i, j := range js {
				outs[i] = retry.Outcome{Lease: retry.Lease{ID: j.ID, Token: j.LeaseToken}, State: retry.StateCompleted, At: now}
			}
			if _, err := db.Retry().Finish(ctx, outs); err != nil {
				return 0, err
			}
		}
		if !reopen {
			took = time.Since(start)
		}
		return took, nil
	}
}

// result is what a child reports on its last line of output.
type result struct {
	Scenario  string  `json:"scenario"`
	Jobs      int     `json:"jobs"`
	Seconds   float64 `json:"seconds"`
	JobsPerS  float64 `json:"jobs_per_s"`
	FsyncsPS  float64 `json:"fsyncs_per_s"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	DiskMB    float64 `json:"disk_mb"`
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "heraldbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	rounds := flag.Int("rounds", 3, "interleaved rounds per scenario")
	names := flag.String("scenarios", "", "comma-separated scenarios (default all): "+scenarioNames())
	dir := flag.String("dir", "", "directory for the stores (default: the system's temporary directory)")
	child := flag.String("child", "", "internal: run one scenario and print its result")
	flag.Parse()
	if *child != "" {
		return runChild(ctx, *child, *dir)
	}
	var chosen []scenario
	for _, s := range scenarios {
		if *names == "" || slices.Contains(strings.Split(*names, ","), s.name) {
			chosen = append(chosen, s)
		}
	}
	if len(chosen) == 0 {
		return fmt.Errorf("no scenario matches %q (have %s)", *names, scenarioNames())
	}
	results := map[string][]result{}
	for round := 1; round <= *rounds; round++ {
		for _, s := range chosen {
			r, err := bench.RunChild[result]("-child", s.name, "-dir", *dir)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, s.name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-12s %8.2f s %10.0f jobs/s  fsync %6.0f/s  peak RSS %6.1f MB\n", round, s.name, r.Seconds, r.JobsPerS, r.FsyncsPS, r.PeakRSSMB)
			results[s.name] = append(results[s.name], r)
		}
	}
	fmt.Printf("| scenario | jobs | seconds | jobs/s (median of %d) | fsyncs/s that round | jobs per fsync | peak RSS MB | store on disk MB |\n", *rounds)
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, s := range chosen {
		rs := results[s.name]
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.JobsPerS, b.JobsPerS) })
		m := rs[len(rs)/2]
		fmt.Printf("| %s | %d | %.2f | %.0f | %.0f | %.2f | %.1f | %.0f |\n", s.desc, m.Jobs, m.Seconds, m.JobsPerS, m.FsyncsPS, m.JobsPerS/m.FsyncsPS, m.PeakRSSMB, m.DiskMB)
	}
	return nil
}

func scenarioNames() string {
	var ns []string
	for _, s := range scenarios {
		ns = append(ns, s.name)
	}
	return strings.Join(ns, ",")
}

func runChild(ctx context.Context, name, dir string) error {
	i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
	if i < 0 {
		return fmt.Errorf("unknown scenario %q", name)
	}
	s := scenarios[i]
	path, cleanup, err := bench.TempPath(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	fsyncs, err := bench.FsyncRate(filepath.Dir(path), time.Second)
	if err != nil {
		return err
	}
	d, err := s.run(ctx, path, s.jobs)
	if err != nil {
		return err
	}
	rss, err := bench.PeakRSSMB()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(result{
		Scenario: s.name, Jobs: s.jobs, Seconds: d.Seconds(), JobsPerS: float64(s.jobs) / d.Seconds(),
		FsyncsPS: fsyncs, PeakRSSMB: rss, DiskMB: diskMB(filepath.Dir(path)),
	})
}

func diskMB(dir string) float64 {
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
	}
	return float64(total) / (1 << 20)
}
