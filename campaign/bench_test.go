package campaign_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
)

// BenchmarkFanOut enqueues a campaign's audience into the embedded store
// (no workers: the fan-out alone), b.N recipients per run, one push each.
//
//	go test -run '^$' -bench FanOut -benchtime 1000000x ./campaign/
func BenchmarkFanOut(b *testing.B) {
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	d, err := fanoutDispatcher(db, pushtest.NewRecorder(push.APNs))
	if err != nil {
		b.Fatal(err)
	}
	r, err := campaign.New(&campaign.Config{Dispatcher: d, Store: db.Checkpoints(), Audiences: map[string]campaign.Iterator{"all": numbered{b.N}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := crashCampaign()
	c.Key = fmt.Sprint("bench-", b.N)
	if _, err := r.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
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
	if err := r.Run(ctx, c.Key); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	close(stop)
	b.ReportMetric(float64(b.N)/el.Seconds(), "recipients/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
}
