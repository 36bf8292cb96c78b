package embedded_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
)

// BenchmarkInbox reads and marks a full Inbox: 1,000,000 items across
// 10,000 users (HERALD_INBOX_ITEMS changes the size; 100 items a user).
//
//	go test -run '^$' -bench Inbox -benchtime 3s ./embedded/
//
// feed reports the first page (50 items, newest first) of a random user:
// p50 and p99 latency. mark-read marks one unread item read per op
// (durable, like every write of the store), with 1 and 16 callers.
func BenchmarkInbox(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("HERALD_INBOX_ITEMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	users := max(n/100, 1)
	db, err := embedded.Open(filepath.Join(b.TempDir(), "herald.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	st := db.Inbox()
	ctx := context.Background()
	start := time.Now()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const batch = 10_000
	for lo := 0; lo < n; lo += batch {
		items := make([]inbox.Item, 0, batch)
		for k := lo; k < min(n, lo+batch); k++ {
			u, i := k%users, k/users
			items = append(items, inbox.Item{ID: fmt.Sprintf("m%d", i), User: fmt.Sprintf("u%d", u),
				Title: "Your order shipped", Body: "It is on its way and should arrive on Thursday.",
				Data: map[string]string{"order": strconv.Itoa(k)}, Created: t0.Add(time.Duration(k) * time.Second)})
		}
		if _, err := st.Enqueuer(db.Retry(), items).Enqueue(ctx, nil, t0); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("filled %d items for %d users in %s", n, users, time.Since(start).Round(time.Millisecond))
	now := t0.Add(time.Duration(n) * time.Second)

	b.Run("feed", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			u := "u" + strconv.Itoa(rand.IntN(users))
			t := time.Now()
			items, _, err := st.Feed(ctx, u, inbox.Query{Now: now, Limit: 50})
			lat = append(lat, time.Since(t))
			if err != nil || len(items) != min(50, n/users) {
				b.Fatalf("feed of %s: %d items, %v", u, len(items), err)
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	})
	var next atomic.Int64 // items marked so far: each op marks a new one
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("mark-read/callers=%d", callers), func(b *testing.B) {
			var wg sync.WaitGroup
			per := b.N/callers + 1
			b.ResetTimer()
			t := time.Now()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						k := int(next.Add(1)-1) % n
						ch, err := st.Mark(ctx, fmt.Sprintf("u%d", k%users), []string{fmt.Sprintf("m%d", k/users)}, inbox.Read, now)
						if err != nil || (ch != 1 && int(next.Load()) <= n) {
							b.Errorf("mark: %d changed, %v", ch, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*callers)/time.Since(t).Seconds(), "marks/s")
		})
	}
}
