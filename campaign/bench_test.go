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
	"github.com/heraldhq/herald/embedded"
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
// file, Dispatcher and recorder of its own (TestDrainCampaignChild).
func BenchmarkDrain(b *testing.B) {
	secs := 20
	if s, err := strconv.Atoi(os.Getenv("HERALD_DRAIN_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	const perSecond = 1000
	for range b.N {
		base := sendLatencies(b, 0, secs, perSecond)
		with := sendLatencies(b, 1, secs, perSecond)
		b.ReportMetric(with.rate/perSecond, "delivered/set")
		b.ReportMetric(float64(base.p99.Microseconds())/1000, "send-p99-ms-alone")
		b.ReportMetric(float64(with.p99.Microseconds())/1000, "send-p99-ms-with-campaign")
		b.ReportMetric(float64(with.p50.Microseconds())/1000, "send-p50-ms-with-campaign")
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
	queue, checkpoints := drainStores(b)
	d, rec, stopDispatcher := drainDispatcher(b, queue)
	defer stopDispatcher()
	ctx := context.Background()
	var res drainResult
	done := make(chan struct{})
	n := int(perSecond) * secs
	if a, err := strconv.Atoi(os.Getenv("HERALD_DRAIN_AUDIENCE")); err == nil && a > 0 {
		n = a // a large audience: the stage runs beside the Sends for seconds
	}
	var child *exec.Cmd
	var childOut *bufio.Scanner
	if campaigns > 0 && os.Getenv("HERALD_DRAIN_SPLIT") == "process" {
		child = exec.Command(os.Args[0], "-test.run=^TestDrainCampaignChild$")
		child.Env = append(os.Environ(), "HERALD_DRAIN_CHILD="+strconv.Itoa(n)+"/"+strconv.FormatFloat(perSecond, 'f', -1, 64)+"/"+b.TempDir())
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
// database. Both close when the benchmark ends.
func drainStores(b *testing.B) (retry.Store, checkpoint.Store) {
	b.Helper()
	if os.Getenv("HERALD_DRAIN_STORE") != "postgres" {
		db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		return db.Retry(), db.Checkpoints()
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
	return db.Retry(), db.Checkpoints()
}

// TestDrainCampaignChild is BenchmarkDrain's campaign in a process of its
// own (HERALD_DRAIN_SPLIT=process): its own file, Dispatcher and
// recorder; it prints "draining", then on SIGINT the count it delivered.
func TestDrainCampaignChild(t *testing.T) {
	spec := os.Getenv("HERALD_DRAIN_CHILD")
	if spec == "" {
		t.Skip("BenchmarkDrain's child")
	}
	parts := strings.SplitN(spec, "/", 3)
	n, _ := strconv.Atoi(parts[0])
	perSecond, _ := strconv.ParseFloat(parts[1], 64)
	db, err := embedded.Open(filepath.Join("/"+parts[2], "campaign.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, rec, stopDispatcher := drainDispatcher(t, db.Retry())
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
	<-sig
	fmt.Println("delivered", len(rec.Sent()))
	stop()
	<-ran
}

// drainDispatcher starts BenchmarkDrain's Dispatcher at its defaults, as
// a host runs it (8 transactional and 4 campaign workers per provider),
// delivering to a recorder.
func drainDispatcher(tb testing.TB, queue retry.Store) (*herald.Dispatcher, *pushtest.Recorder, func()) {
	tb.Helper()
	rec := pushtest.NewRecorder(push.APNs)
	d, err := herald.New(&herald.Config{Store: queue, Push: map[push.Provider]push.Sender{push.APNs: rec}})
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
