// Command heraldload measures the whole push path as a user runs it — 16
// producers calling Dispatcher.Send while 16 workers deliver through the
// real APNs client to an in-process fake APNs, tracking on — against a bare
// apns2 loop sending to the same fake in the same kind of process:
//
//	go run ./cmd/heraldload                      # bare + embedded, 5 rounds
//	go run ./cmd/heraldload -systems bare,embedded,postgres,redis -rounds 5
//
// Each run is a fresh child process (its own fake, store, CPU and RSS
// counts); the systems run in a new random order every round, and the
// disk's raw fsync rate is measured before each run. The report gives per
// round and as medians: messages/s, the ratio to the bare loop of the same
// round, Send p50/p99/max while workers deliver, commits per message and
// CPU per message (user+system of the whole process, fake included, for
// both), and with the medians the cores each used and bare's CPU a
// message over the system's — which the ratio to bare follows when both
// are CPU-bound. PostgreSQL and Redis come from HERALD_POSTGRES_URL and
// HERALD_REDIS_ADDR (or -pg, -redis).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

const topic = "com.example.load"

var (
	systems   = flag.String("systems", "bare,embedded", "comma-separated: bare, embedded, postgres, redis")
	rounds    = flag.Int("rounds", 5, "interleaved rounds")
	messages  = flag.Int("messages", 30_000, "messages per run")
	producers = flag.Int("producers", 16, "goroutines calling Send (or, bare, pushing)")
	workers   = flag.Int("workers", 16, "the transactional lane's concurrency")
	dir       = flag.String("dir", "", "directory for the embedded stores (default: the system's temporary directory)")
	pgURL     = flag.String("pg", os.Getenv("HERALD_POSTGRES_URL"), "PostgreSQL URL")
	redisAddr = flag.String("redis", os.Getenv("HERALD_REDIS_ADDR"), "Redis address")
	child     = flag.String("child", "", "internal: run one system and print its result")
	cpuprof   = flag.String("cpuprofile", "", "with -child: write a CPU profile of the run")
	tracef    = flag.String("trace", "", "with -child: write an execution trace of the run (go tool trace)")
)

// result is what a child prints as its last line.
type result struct {
	System        string  `json:"system"`
	Messages      int     `json:"messages"`
	PerS          float64 `json:"per_s"`
	SendP50       float64 `json:"send_p50_ms"`
	SendP99       float64 `json:"send_p99_ms"`
	SendMax       float64 `json:"send_max_ms"`
	Commits       float64 `json:"commits_per_msg"` // embedded: commits; postgres: transactions; redis: commands
	CPUMicros     float64 `json:"cpu_us_per_msg"`
	FsyncsPS      float64 `json:"fsyncs_per_s"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	TrackedEvents int64   `json:"tracked_events"`
	// SchedP99 is the 99th percentile of how long runnable goroutines
	// waited for a processor (runtime/metrics /sched/latencies): on 2
	// cores it is what a Send waits beyond its fsync.
	SchedP99 float64 `json:"sched_p99_ms"`
	// WriterBusy is the share of the run the embedded store's writer was
	// applying writes (WriteStats.Busy): near 1, the store is the limit.
	WriterBusy float64 `json:"writer_busy,omitempty"`
}

func main() {
	flag.Parse()
	var err error
	if *child != "" {
		err = runChild(context.Background(), *child)
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "heraldload:", err)
		os.Exit(1)
	}
}

func run() error {
	names := strings.Split(*systems, ",")
	for _, n := range names {
		if !slices.Contains([]string{"bare", "embedded", "postgres", "redis"}, n) {
			return fmt.Errorf("unknown system %q", n)
		}
	}
	byRound := make([]map[string]result, *rounds)
	for r := range *rounds {
		byRound[r] = map[string]result{}
		order := slices.Clone(names)
		mrand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, n := range order {
			res, err := runInChild(n)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, n, err)
			}
			byRound[r][n] = res
			busy := ""
			if res.WriterBusy > 0 {
				busy = fmt.Sprintf("  writer busy %.2f", res.WriterBusy)
			}
			fmt.Fprintf(os.Stderr, "round %d %-9s %8.0f msg/s  Send p50 %6.2f p99 %6.2f max %7.2f ms  %.2f commits/msg  %5.0f µs CPU/msg  fsync %5.0f/s  RSS %5.1f MB  sched p99 %.2f ms%s\n",
				r+1, n, res.PerS, res.SendP50, res.SendP99, res.SendMax, res.Commits, res.CPUMicros, res.FsyncsPS, res.PeakRSSMB, res.SchedP99, busy)
		}
	}
	fmt.Printf("| round | system | messages/s | ÷ bare | Send p50 ms | p99 ms | max ms | commits/msg | CPU µs/msg | raw fsyncs/s |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|\n")
	ratios, cpuRatios := map[string][]float64{}, map[string][]float64{}
	for r, m := range byRound {
		for _, n := range names {
			res := m[n]
			ratio := math.NaN()
			if b, ok := m["bare"]; ok && b.PerS > 0 {
				ratio = res.PerS / b.PerS
				ratios[n] = append(ratios[n], ratio)
				if res.CPUMicros > 0 {
					cpuRatios[n] = append(cpuRatios[n], b.CPUMicros/res.CPUMicros)
				}
			}
			fmt.Printf("| %d | %s | %.0f | %.2f | %s | %s | %s | %s | %.0f | %.0f |\n", r+1, n, res.PerS, ratio,
				ms(n, res.SendP50), ms(n, res.SendP99), ms(n, res.SendMax), commits(n, res.Commits), res.CPUMicros, res.FsyncsPS)
		}
	}
	fmt.Printf("\nMedians of %d interleaved rounds (%d messages each, %d producers, %d workers):\n\n", *rounds, *messages, *producers, *workers)
	// Where both sides are CPU-bound (cores alike), ÷ bare follows bare's
	// CPU a message ÷ the system's: the last two columns show whether it is.
	fmt.Printf("| system | messages/s | ÷ bare (median of the rounds' ratios) | Send p50 ms | p99 ms | max ms | commits/msg | CPU µs/msg | raw fsyncs/s | peak RSS MB | cores | bare's CPU/msg ÷ its |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range names {
		med := func(f func(result) float64) float64 {
			var xs []float64
			for _, m := range byRound {
				xs = append(xs, f(m[n]))
			}
			return median(xs)
		}
		ratio, cpuRatio := "—", "—"
		if len(ratios[n]) > 0 {
			ratio = fmt.Sprintf("%.2f", median(ratios[n]))
		}
		if len(cpuRatios[n]) > 0 {
			cpuRatio = fmt.Sprintf("%.2f", median(cpuRatios[n]))
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %s | %s | %.0f | %.0f | %.1f | %.2f | %s |\n", n,
			med(func(r result) float64 { return r.PerS }), ratio,
			ms(n, med(func(r result) float64 { return r.SendP50 })), ms(n, med(func(r result) float64 { return r.SendP99 })),
			ms(n, med(func(r result) float64 { return r.SendMax })), commits(n, med(func(r result) float64 { return r.Commits })),
			med(func(r result) float64 { return r.CPUMicros }), med(func(r result) float64 { return r.FsyncsPS }),
			med(func(r result) float64 { return r.PeakRSSMB }),
			med(func(r result) float64 { return r.PerS * r.CPUMicros / 1e6 }), cpuRatio)
	}
	return nil
}

func ms(system string, v float64) string {
	if system == "bare" {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}

func commits(system string, v float64) string {
	switch system {
	case "bare":
		return "—"
	case "redis":
		return fmt.Sprintf("%.2f cmds", v)
	case "postgres":
		return fmt.Sprintf("%.2f xacts", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func runInChild(system string) (result, error) {
	return bench.RunChild[result]("-child", system, "-messages", fmt.Sprint(*messages), "-producers", fmt.Sprint(*producers),
		"-workers", fmt.Sprint(*workers), "-dir", *dir, "-pg", *pgURL, "-redis", *redisAddr)
}

func runChild(ctx context.Context, system string) error {
	path, cleanup, err := bench.TempPath(*dir)
	if err != nil {
		return err
	}
	defer cleanup()
	fsyncs, err := bench.FsyncRate(filepath.Dir(path), time.Second)
	if err != nil {
		return err
	}
	tb := &exampletb.TB{}
	defer tb.Done()
	fake := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{topic}})
	tokens := make([]string, 1024)
	for i := range tokens {
		tokens[i] = pushtest.DeviceToken(fmt.Sprint("d", i))
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *tracef != "" {
		f, err := os.Create(*tracef)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	var res result
	if system == "bare" {
		res, err = runBare(ctx, fake, tokens)
	} else {
		res, err = runPipeline(ctx, system, path, fake, tokens)
	}
	if err != nil {
		return err
	}
	if got := len(fake.Delivered()); got != *messages {
		return fmt.Errorf("%s: the fake APNs received %d of %d", system, got, *messages)
	}
	res.System, res.Messages, res.FsyncsPS = system, *messages, fsyncs
	res.PeakRSSMB, _ = bench.PeakRSSMB()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// runBare is the baseline: apns2's token client with its own settings,
// producers goroutines pushing in a loop.
func runBare(ctx context.Context, fake *pushtest.APNsServer, tokens []string) (result, error) {
	p8, keyID, teamID := fake.AuthKey()
	key, err := token.AuthKeyFromBytes(p8.Bytes())
	if err != nil {
		return result{}, err
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: keyID, TeamID: teamID})
	c.Host = fake.URL()
	c.HTTPClient = &http.Client{
		Transport: &http2.Transport{TLSClientConfig: fake.TLSConfig(), ReadIdleTimeout: apns2.ReadIdleTimeout},
		Timeout:   apns2.HTTPClientTimeout,
	}
	defer c.CloseIdleConnections()
	cpu0, start := bench.CPUTime(), time.Now()
	err = produce(func(i int) error {
		r, err := c.PushWithContext(ctx, &apns2.Notification{
			DeviceToken: tokens[i%len(tokens)], Topic: topic,
			Payload: []byte(`{"aps":{"alert":{"title":"Order shipped","body":"On its way"}}}`),
		})
		if err == nil && !r.Sent() {
			err = fmt.Errorf("apns: %d %s", r.StatusCode, r.Reason)
		}
		return err
	})
	elapsed, cpu := time.Since(start), bench.CPUTime()-cpu0
	if err != nil {
		return result{}, err
	}
	return result{PerS: float64(*messages) / elapsed.Seconds(), CPUMicros: float64(cpu.Microseconds()) / float64(*messages)}, nil
}

// produce calls fn for messages 1..-messages from -producers goroutines
// and returns the first error (each goroutine stops at its own).
func produce(fn func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range *producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(*messages); i = next.Add(1) {
				if err := fn(int(i)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return err
}

// stores opens the system's queue store and tracking journal, and a
// counter of its durable writes.
type stores struct {
	retry   retry.Store
	journal tracking.Store
	writes  func() float64
	busy    func() time.Duration // the embedded store's writer (nil for the others)
	close   func()
}

func randName() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "l" + hex.EncodeToString(b)
}

func openStores(ctx context.Context, system, path string) (*stores, error) {
	switch system {
	case "embedded":
		db, err := embedded.Open(path, nil)
		if err != nil {
			return nil, err
		}
		return &stores{retry: db.Retry(), journal: db.Tracking(), close: func() { _ = db.Close() },
			writes: func() float64 { return float64(db.WriteStats().Commits) },
			busy:   func() time.Duration { return db.WriteStats().Busy }}, nil
	case "postgres":
		if *pgURL == "" {
			return nil, errors.New("postgres: set HERALD_POSTGRES_URL or -pg")
		}
		pool, err := pgxpool.New(ctx, *pgURL)
		if err != nil {
			return nil, err
		}
		schema := randName()
		db, err := postgres.New(pool, &postgres.Config{Schema: schema})
		if err == nil {
			err = db.Migrate(ctx)
		}
		if err != nil {
			pool.Close()
			return nil, err
		}
		return &stores{retry: db.Retry(), journal: db.Tracking(),
			close: func() {
				_, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
				pool.Close()
			},
			writes: func() float64 {
				// Statistics reach pg_stat_database within a second of idling.
				time.Sleep(1100 * time.Millisecond)
				var n int64
				_ = pool.QueryRow(ctx, `SELECT pg_stat_clear_snapshot()`).Scan(new(any))
				_ = pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
				return float64(n)
			}}, nil
	case "redis":
		if *redisAddr == "" {
			return nil, errors.New("redis: set HERALD_REDIS_ADDR or -redis")
		}
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
		prefix := randName()
		s, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: prefix})
		if err != nil {
			_ = rdb.Close()
			return nil, err
		}
		// Redis has no journal store: the tracking journal is an embedded
		// file beside it, as heraldd runs it.
		db, err := embedded.Open(path, nil)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		return &stores{retry: s, journal: db.Tracking(),
			close: func() {
				_ = db.Close()
				keys, _ := rdb.Keys(context.Background(), "{"+prefix+"}:*").Result()
				for len(keys) > 0 {
					n := min(1000, len(keys))
					rdb.Del(context.Background(), keys[:n]...)
					keys = keys[n:]
				}
				_ = s.Close()
			},
			writes: func() float64 {
				info, _ := rdb.Info(ctx, "stats").Result()
				for line := range strings.SplitSeq(info, "\n") {
					if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
						var n float64
						_, _ = fmt.Sscan(v, &n)
						return n
					}
				}
				return 0
			}}, nil
	}
	return nil, fmt.Errorf("unknown system %q", system)
}

// countSink is the host's analytics sink: it reads the journal as a real
// one would, and counts.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Name() string { return "count" }
func (s *countSink) Write(_ context.Context, evs []tracking.Event) error {
	s.n.Add(int64(len(evs)))
	return nil
}

// runPipeline: the Dispatcher started, producers calling Send while its
// workers deliver, until the fake APNs answered every message.
func runPipeline(ctx context.Context, system, path string, fake *pushtest.APNsServer, tokens []string) (result, error) {
	st, err := openStores(ctx, system, path)
	if err != nil {
		return result{}, err
	}
	defer st.close()
	sink := &countSink{}
	outbox, err := tracking.NewOutbox(st.journal, &tracking.OutboxConfig{Sinks: []tracking.Sink{sink}})
	if err != nil {
		return result{}, err
	}
	c, err := apns.New((&apns.Config{Topic: topic}).UseFake(fake))
	if err != nil {
		return result{}, err
	}
	defer c.CloseIdleConnections()
	var delivered atomic.Int64
	all := make(chan struct{})
	d, err := herald.New(&herald.Config{
		Store:         st.retry,
		Push:          map[push.Provider]push.Sender{push.APNs: c},
		Tracker:       outbox,
		Transactional: retry.LaneConfig{Concurrency: *workers},
		Queue: retry.Config{Observer: func(e retry.Event) {
			if e.Type == retry.EventSucceeded && delivered.Add(1) == int64(*messages) {
				close(all)
			}
		}},
	})
	if err != nil {
		return result{}, err
	}
	if err := d.Start(ctx); err != nil {
		return result{}, err
	}
	lat := make([]time.Duration, *messages)
	w0 := st.writes()
	var b0 time.Duration
	if st.busy != nil {
		b0 = st.busy()
	}
	cpu0, start := bench.CPUTime(), time.Now()
	err = produce(func(i int) error {
		m := herald.Message{IdempotencyKey: fmt.Sprint("m-", i), User: fmt.Sprint("u", i%1000), Transactional: true,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
				Token: tokens[i%len(tokens)], Notification: push.Notification{Title: "Order shipped", Body: "On its way"}}}}
		t0 := time.Now()
		_, err := d.Send(ctx, m)
		lat[i-1] = time.Since(t0)
		return err
	})
	if err != nil {
		return result{}, err
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("%d of %d delivered after 5 minutes", delivered.Load(), *messages)
	}
	elapsed, cpu := time.Since(start), bench.CPUTime()-cpu0
	busy := 0.0
	if st.busy != nil {
		busy = (st.busy() - b0).Seconds() / elapsed.Seconds()
	}
	if err := d.Stop(ctx); err != nil {
		return result{}, err
	}
	if err := outbox.Close(ctx); err != nil {
		return result{}, err
	}
	writes := st.writes() - w0
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	return result{
		PerS:    float64(*messages) / elapsed.Seconds(),
		SendP50: q(0.5), SendP99: q(0.99), SendMax: q(1),
		Commits:       writes / float64(*messages),
		CPUMicros:     float64(cpu.Microseconds()) / float64(*messages),
		TrackedEvents: sink.n.Load(),
		SchedP99:      schedLatencyP99(),
		WriterBusy:    busy,
	}, nil
}

// schedLatencyP99 reads the runtime's scheduling latency histogram.
func schedLatencyP99() float64 {
	sm := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(sm)
	if sm[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := sm[0].Value.Float64Histogram()
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	var acc uint64
	for i, c := range h.Counts {
		acc += c
		if float64(acc) >= 0.99*float64(total) {
			return h.Buckets[i+1] * 1000
		}
	}
	return 0
}
