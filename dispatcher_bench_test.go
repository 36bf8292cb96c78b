package herald_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
)

// The Dispatcher on the embedded store, pushes to a fake APNs over HTTP/2:
//
//	go test -run '^$' -bench Dispatcher -benchtime 1x -count 3 .
//
// send: 16 producers, each Send durable before it returns; end-to-end:
// 20,000 accepted messages drained through the real APNs client.
func BenchmarkDispatcher(b *testing.B) {
	const n = 20_000
	var done atomic.Int64
	setup := func(b *testing.B) (*herald.Dispatcher, *pushtest.APNsServer) {
		done.Store(0)
		db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		fake := pushtest.NewAPNs(b, &pushtest.APNsOptions{Topics: []string{topic}})
		c, err := apns.New((&apns.Config{Topic: topic}).UseFake(fake))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.CloseIdleConnections)
		d, err := herald.New(&herald.Config{
			Store:         db.Retry(),
			Push:          map[push.Provider]push.Sender{push.APNs: c},
			Transactional: retry.LaneConfig{Concurrency: 16},
			Queue: retry.Config{Observer: func(e retry.Event) {
				if e.Type == retry.EventSucceeded {
					done.Add(1)
				}
			}},
		})
		if err != nil {
			b.Fatal(err)
		}
		return d, fake
	}
	msg := func(i int) herald.Message {
		return herald.Message{IdempotencyKey: fmt.Sprint("m-", i), User: fmt.Sprint("u", i%1000), Transactional: true,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
				Token: pushtest.DeviceToken(fmt.Sprint("d", i%1000)), Notification: push.Notification{Title: "Order shipped", Body: "On its way"}}}}
	}
	b.Run("send/producers=16", func(b *testing.B) {
		d, _ := setup(b)
		ctx := context.Background()
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
					if _, err := d.Send(ctx, msg(i)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(n/time.Since(start).Seconds(), "messages/s")
	})
	b.Run("end-to-end/concurrency=16", func(b *testing.B) {
		d, fake := setup(b)
		ctx := context.Background()
		batch := make([]herald.Message, 0, 500)
		for i := range n {
			batch = append(batch, msg(i))
			if len(batch) == cap(batch) {
				if _, err := d.SendBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		start := time.Now()
		if err := d.Start(ctx); err != nil {
			b.Fatal(err)
		}
		for done.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		if got := len(fake.Delivered()); got != n {
			b.Fatalf("APNs received %d of %d", got, n)
		}
		if err := d.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(n/elapsed.Seconds(), "messages/s")
	})
}
