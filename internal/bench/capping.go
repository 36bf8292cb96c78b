package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/capping"
)

// ReserveCommit benchmarks reserve + commit with three matching rules
// (global, label, automation) for 10,000 users, on a clock that advances
// 100 µs per reservation, with 1 and 16 goroutines.
func ReserveCommit(b *testing.B, open func(b *testing.B) capping.Store) {
	rules := []capping.Rule{
		{Name: "global", Kind: capping.Global, Limit: 1 << 30, Window: capping.Rolling(time.Minute)},
		{Name: "label", Kind: capping.Label, Limit: 1 << 30, Window: capping.Rolling(time.Minute)},
		{Name: "auto", Kind: capping.Automation, Limit: 1 << 30, Window: capping.Rolling(time.Minute)},
	}
	users := make([]string, 10_000)
	for i := range users {
		users[i] = fmt.Sprint("user-", i)
	}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("goroutines=%d", par), func(b *testing.B) {
			l, err := capping.New(open(b), &capping.Config{Rules: rules})
			if err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			labels := []string{"promo"}
			one := func() {
				n := seq.Add(1)
				now := base.Add(time.Duration(n) * 100 * time.Microsecond)
				d, err := l.Reserve(ctx, capping.Subject{User: users[n%int64(len(users))], Labels: labels, Automation: "welcome"}, now)
				if err != nil || !d.Allowed {
					b.Fatalf("reserve: %v %+v", err, d)
				}
				if err := l.Commit(ctx, d.Reservation); err != nil {
					b.Fatal(err)
				}
			}
			start := time.Now()
			b.ResetTimer()
			if par == 1 {
				for range b.N {
					one()
				}
			} else {
				b.SetParallelism(par / 2) // GOMAXPROCS (2) × 8 = 16 goroutines
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reservations/s")
		})
	}
}
