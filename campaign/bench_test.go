package campaign_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/campaign/campaigntest"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
)

// BenchmarkFanOut fans a campaign's audience out into the embedded store
// (no workers: the fan-out alone), b.N recipients per run, one push each.
// At rate=unlimited the drain enqueues as fast as it can beside the
// stage, and the run ends with every message in the queue
// (recipients/s); at rate=1000 the drain is held to the campaign's rate
// and the run ends once the audience is staged (staged/s: the audience
// captured, durable, checked and counted).
//
//	go test -run '^$' -bench FanOut -benchtime 1000000x ./campaign/
func BenchmarkFanOut(b *testing.B) {
	b.Run("rate=unlimited", func(b *testing.B) { benchFanOut(b, 1e6) })
	b.Run("rate=1000", func(b *testing.B) { benchFanOut(b, 1000) })
}

func benchFanOut(b *testing.B, perSecond float64) {
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	d, err := fanoutDispatcher(db, pushtest.NewRecorder(push.APNs))
	if err != nil {
		b.Fatal(err)
	}
	r, err := campaign.New(&campaign.Config{Dispatcher: d, Store: db.Checkpoints(), Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: b.N}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := crashCampaign()
	c.Key, c.PerSecond = fmt.Sprint("bench-", b.N), perSecond
	if _, err := r.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var peak uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse+ms.StackInuse)
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx, c.Key) }()
	var staged time.Duration
	for staged == 0 {
		select {
		case err := <-ran:
			b.Fatal("Run returned before the audience was staged: ", err)
		case <-time.After(2 * time.Millisecond):
		}
		if st, err := r.Status(ctx, c.Key); err == nil && st.FanoutDone {
			staged = time.Since(start)
		}
	}
	if perSecond < 1e6 {
		b.StopTimer()
		cancel()
		<-ran
	} else if err := <-ran; err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	close(stop)
	b.ReportMetric(float64(b.N)/staged.Seconds(), "staged/s")
	if perSecond >= 1e6 {
		b.ReportMetric(float64(b.N)/el.Seconds(), "recipients/s")
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	if hwm := peakRSS(); hwm > 0 {
		b.ReportMetric(hwm, "peak-RSS-MB")
	}
}

// peakRSS reads the process's high-water resident set (Linux), in MB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkDrain runs a campaign at a set rate for a while on the
// embedded store, delivering to a recording provider, while 8 producers
// send transactional messages; it reports the achieved delivery rate
// against the set one (pacing), and transactional Send latency with the
// campaign draining beside a baseline without it, measured in the same
// run.
//
//	go test -run '^$' -bench Drain -benchtime 1x ./campaign/  (HERALD_DRAIN_SECONDS, default 20)
//
// HERALD_DRAIN_AUDIENCE gives the campaign a larger audience (its stage
// then runs inside the window); HERALD_DRAIN_STORE=postgres runs both on
// PostgreSQL (HERALD_POSTGRES_URL) instead of the embedded store;
// HERALD_DRAIN_SPLIT=process runs the campaign in a child process with a
// file, Dispatcher and recorder of its own (TestDrainCampaignChild), both
// processes checking eligibility in one shared embedded.EligibilityFile:
// heraldd's transactional and marketing instances. HERALD_DRAIN_WRAP
// starts that child through a command ("taskset -c 1 nice -n 19", as
// deploy/heraldd-marketing.service runs the marketing instance), and
// HERALD_DRAIN_CHILD_DIR puts its file elsewhere (a tmpfs).
// HERALD_DRAIN_CONTROL=1 runs both rounds without a campaign: the noise.
//
// Both rounds check eligibility, with every hundredth recipient of the
// campaign suppressed (delivered/set is about 0.99 at an exact pace).
func BenchmarkDrain(b *testing.B) {
	secs := 20
	if s, err := strconv.Atoi(os.Getenv("HERALD_DRAIN_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	const perSecond = 1000
	// The ratio of two rounds alone is the noise the ratio with a
	// campaign is read against.
	second := 1
	if os.Getenv("HERALD_DRAIN_CONTROL") == "1" {
		second = 0
	}
	for range b.N {
		base := sendLatencies(b, 0, secs, perSecond)
		with := sendLatencies(b, second, secs, perSecond)
		b.ReportMetric(with.rate/perSecond, "delivered/set")
		b.ReportMetric(float64(base.p99.Microseconds())/1000, "send-p99-ms-alone")
		b.ReportMetric(float64(with.p99.Microseconds())/1000, "send-p99-ms-with-campaign")
		b.ReportMetric(float64(with.p50.Microseconds())/1000, "send-p50-ms-with-campaign")
		b.ReportMetric(float64(with.p99)/float64(base.p99), "p99-with/alone")
	}
}

type drainResult struct {
	rate     float64
	p50, p99 time.Duration
}

// sendLatencies measures transactional Send latency for secs seconds,
// with a campaign of secs*perSecond recipients draining beside it when
// campaigns is 1.
func sendLatencies(b *testing.B, campaigns, secs int, perSecond float64) drainResult {
	b.Helper()
	queue, checkpoints, elig := drainStores(b)
	split := campaigns > 0 && os.Getenv("HERALD_DRAIN_SPLIT") == "process"
	sharedPath := ""
	if split {
		// The deployment in two processes: each has a file of its own and
		// both share the suppression list and preferences.
		sharedPath = filepath.Join(b.TempDir(), "eligibility.db")
		f, err := embedded.OpenEligibility(sharedPath)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = f.Close() })
		elig = f
	}
	n := int(perSecond) * secs
	if a, err := strconv.Atoi(os.Getenv("HERALD_DRAIN_AUDIENCE")); err == nil && a > 0 {
		n = a // a large audience: the stage runs beside the Sends for seconds
	}
	suppressSome(b, elig, n)
	d, rec, stopDispatcher := drainDispatcher(b, queue, elig)
	defer stopDispatcher()
	ctx := context.Background()
	var res drainResult
	done := make(chan struct{})
	var child *exec.Cmd
	var childOut *bufio.Scanner
	if split {
		child = exec.Command(os.Args[0], "-test.run=^TestDrainCampaignChild$")
		if wrap := strings.Fields(os.Getenv("HERALD_DRAIN_WRAP")); len(wrap) > 0 {
			// The campaign's process started through a command, as a
			// service manager would: "nice -n 10", "taskset -c 1".
			child = exec.Command(wrap[0], append(wrap[1:], os.Args[0], "-test.run=^TestDrainCampaignChild$")...)
		}
		child.Env = append(os.Environ(), "HERALD_DRAIN_CHILD="+strings.Join([]string{strconv.Itoa(n), strconv.FormatFloat(perSecond, 'f', -1, 64), sharedPath, b.TempDir()}, "|"))
		out, err := child.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			b.Fatal(err)
		}
		childOut = bufio.NewScanner(out)
		for childOut.Scan() && childOut.Text() != "draining" {
		}
		if childOut.Text() != "draining" {
			b.Fatal("the campaign's child process ended before draining")
		}
		campaigns = 0
	}
	if campaigns > 0 {
		r, key := drainCampaign(b, d, checkpoints, n, perSecond)
		go func() { _ = r.Run(ctx, key) }()
	}
	var mu sync.Mutex
	var lat []time.Duration
	stop := time.Now().Add(time.Duration(secs) * time.Second)
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				m := herald.Message{IdempotencyKey: fmt.Sprintf("tx-%d-%d", p, i), User: "u", Transactional: true,
					Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t", Notification: push.Notification{Title: "code"}}}}
				t0 := time.Now()
				if _, err := d.Send(ctx, m); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	close(done)
	if child != nil {
		_ = child.Process.Signal(os.Interrupt)
		reported := false
		for childOut.Scan() {
			if v, ok := strings.CutPrefix(childOut.Text(), "delivered "); ok {
				camp, _ := strconv.Atoi(v)
				res.rate, reported = float64(camp)/time.Since(start).Seconds(), true
			}
		}
		if err := child.Wait(); err != nil || !reported {
			b.Fatalf("the campaign's child process: %v (reported its deliveries: %v)", err, reported)
		}
	}
	if campaigns > 0 {
		camp := 0
		for _, m := range rec.Sent() {
			if m.Token != "t" {
				camp++
			}
		}
		res.rate = float64(camp) / time.Since(start).Seconds()
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return res
}

// drainStores opens BenchmarkDrain's stores: the embedded store, or with
// HERALD_DRAIN_STORE=postgres a fresh schema in HERALD_POSTGRES_URL's
// database. All close when the benchmark ends.
func drainStores(b *testing.B) (retry.Store, checkpoint.Store, eligibility.Store) {
	b.Helper()
	if os.Getenv("HERALD_DRAIN_STORE") != "postgres" {
		db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		return db.Retry(), db.Checkpoints(), db.Eligibility()
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("HERALD_POSTGRES_URL"))
	if err != nil {
		b.Fatal(err)
	}
	schema := "bench_drain_" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	b.Cleanup(func() {
		_, _ = pool.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
		pool.Close()
	})
	db, err := postgres.New(pool, &postgres.Config{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	return db.Retry(), db.Checkpoints(), db.Eligibility()
}

// suppressSome suppresses every hundredth recipient of the campaign's
// audience, so that its sends read the suppression list and find some.
func suppressSome(tb testing.TB, s eligibility.Store, n int) {
	tb.Helper()
	var ss []eligibility.Suppression
	for i := 0; i < n; i += 100 {
		tok := campaigntest.Audience{N: n}.Recipient(i).Token
		ss = append(ss, eligibility.Suppression{Key: eligibility.RecipientKey("push", tok), Channel: "push", Masked: "t…",
			Reason: "apns 410 Unregistered", Source: "provider", At: time.Now()})
	}
	for len(ss) > 0 {
		k := min(len(ss), 500)
		if err := s.Suppress(context.Background(), ss[:k]...); err != nil {
			tb.Fatal(err)
		}
		ss = ss[k:]
	}
}

// TestDrainCampaignChild is BenchmarkDrain's campaign in a process of its
// own (HERALD_DRAIN_SPLIT=process): its own file, Dispatcher and
// recorder; it prints "draining", then on SIGINT the count it delivered.
func TestDrainCampaignChild(t *testing.T) {
	spec := os.Getenv("HERALD_DRAIN_CHILD")
	if spec == "" {
		t.Skip("BenchmarkDrain's child")
	}
	// audience|rate|shared eligibility file|directory
	parts := strings.SplitN(spec, "|", 4)
	if len(parts) != 4 {
		t.Fatalf("HERALD_DRAIN_CHILD=%q", spec)
	}
	n, _ := strconv.Atoi(parts[0])
	perSecond, _ := strconv.ParseFloat(parts[1], 64)
	shared, dir := parts[2], parts[3]
	if d := os.Getenv("HERALD_DRAIN_CHILD_DIR"); d != "" {
		dir = d // another file system for the campaign's file (a tmpfs: no fsync shared with the parent)
	}
	db, err := embedded.Open(filepath.Join(dir, "campaign.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	elig, err := embedded.OpenEligibility(shared)
	if err != nil {
		t.Fatal(err)
	}
	defer elig.Close()
	d, rec, stopDispatcher := drainDispatcher(t, db.Retry(), elig)
	defer stopDispatcher()
	r, key := drainCampaign(t, d, db.Checkpoints(), n, perSecond)
	ctx := context.Background()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = r.Run(runCtx, key)
	}()
	fmt.Println("draining")
	cpu0, t0 := bench.CPUTime(), time.Now()
	<-sig
	cores := float64(bench.CPUTime()-cpu0) / float64(time.Since(t0))
	fmt.Println("delivered", len(rec.Sent()))
	ws := db.WriteStats()
	fmt.Fprintf(os.Stderr, "campaign process: %.2f cores, %d commits, %d writes, writer busy %s\n", cores, ws.Commits, ws.Writes, ws.Busy.Round(time.Millisecond))
	stop()
	<-ran
}

// drainDispatcher starts BenchmarkDrain's Dispatcher at its defaults, as
// a host runs it (8 transactional and 4 campaign workers per provider),
// checking eligibility and delivering to a recorder.
func drainDispatcher(tb testing.TB, queue retry.Store, elig eligibility.Store) (*herald.Dispatcher, *pushtest.Recorder, func()) {
	tb.Helper()
	rec := pushtest.NewRecorder(push.APNs)
	d, err := herald.New(&herald.Config{Store: queue, Eligibility: elig, Push: map[push.Provider]push.Sender{push.APNs: rec}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return d, rec, func() { _ = d.Stop(ctx) }
}

// drainCampaign creates BenchmarkDrain's campaign: n recipients at
// perSecond, to be run with the key it returns.
func drainCampaign(tb testing.TB, d *herald.Dispatcher, cps checkpoint.Store, n int, perSecond float64) (*campaign.Runner, string) {
	tb.Helper()
	r, err := campaign.New(&campaign.Config{Dispatcher: d, Store: cps, Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: n}}, PageSize: 100})
	if err != nil {
		tb.Fatal(err)
	}
	c := crashCampaign()
	c.Key, c.PerSecond = "drain", perSecond
	if _, err := r.Create(context.Background(), c); err != nil {
		tb.Fatal(err)
	}
	return r, c.Key
}
