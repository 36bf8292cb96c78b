package capping_test

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/capping"
)

// A limiter with a daily cap and quiet hours: reserve a slot before
// sending, commit it when the provider took the message, release it when
// the provider refused.
func ExampleLimiter() {
	ctx := context.Background()
	l, _ := capping.New(capping.NewMemoryStore(), &capping.Config{
		Rules:      []capping.Rule{{Name: "two-a-day", Kind: capping.Global, Limit: 2, Window: capping.Calendar(capping.Day)}},
		QuietHours: &capping.QuietHours{Start: "22:00", End: "08:00"},
	})
	ada := capping.Subject{User: "ada", TimeZone: "Europe/Paris", Channel: "push"}
	noon := time.Date(2030, 6, 3, 12, 0, 0, 0, time.UTC) // 14:00 in Paris

	first, _ := l.Reserve(ctx, ada, noon)
	_ = l.Commit(ctx, first.Reservation) // APNs took it
	second, _ := l.Reserve(ctx, ada, noon.Add(time.Minute))
	_ = l.Release(ctx, second.Reservation, noon.Add(time.Minute)) // APNs refused it: the slot is free again
	third, _ := l.Reserve(ctx, ada, noon.Add(2*time.Minute))
	_ = l.Commit(ctx, third.Reservation)
	fourth, _ := l.Reserve(ctx, ada, noon.Add(3*time.Minute))
	fmt.Println(first.Allowed, second.Allowed, third.Allowed, fourth.Allowed, fourth.CappedBy)

	night := time.Date(2030, 6, 4, 21, 30, 0, 0, time.UTC) // 23:30 in Paris, the next day
	late, _ := l.Reserve(ctx, ada, night)
	fmt.Println(late.Allowed, late.CappedBy, late.DeferUntil.In(time.UTC).Format(time.Kitchen))

	usage, _ := l.Usage(ctx, ada, noon.Add(4*time.Minute))
	fmt.Println(usage[0].Rule, usage[0].Count, "of", usage[0].Limit)
	// Output:
	// true true true false two-a-day
	// false quiet hours 6:00AM
	// two-a-day 2 of 2
}
