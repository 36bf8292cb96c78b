package herald_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/tracking"
)

// Quiet hours defer a marketing push to the morning, within its TTL; a
// transactional one goes out at once; a marketing push whose TTL ends in
// the night expires unsent. (On the heraldtest kit: manual clock.)
func TestQuietHoursDeferWithinTheTTL(t *testing.T) {
	t.Parallel()
	kit := heraldtest.New(t, &heraldtest.Options{QuietHours: &capping.QuietHours{Start: "22:00", End: "08:00"}})
	night := time.Date(2030, 1, 2, 23, 0, 0, 0, time.UTC)
	kit.Clock.Set(night)
	note := func(key string, transactional bool, ttl time.Duration) herald.Message {
		return herald.Message{IdempotencyKey: key, User: "ada", Transactional: transactional, TTL: ttl,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t", Notification: push.Notification{Title: key}}}}
	}
	kit.Send(t, note("promo", false, 12*time.Hour))
	kit.Send(t, note("flash", false, time.Hour))
	kit.Send(t, note("code", true, time.Hour))
	kit.Settle(t)
	kit.RequireSent(t, "code")
	kit.RequireNotSent(t, "promo")
	// (accepted is tracked when Send returns, which may be after the
	// worker deferred it: the two come in either order)
	if got := kit.Types("promo"); !contains(got, tracking.Deferred) || !contains(got, tracking.Accepted) {
		t.Fatalf("promo's events %v, want accepted and deferred", got)
	}
	kit.Clock.Set(time.Date(2030, 1, 3, 8, 1, 0, 0, time.UTC))
	kit.Settle(t)
	kit.RequireSent(t, "promo")
	deadline := time.Now().Add(3 * time.Second)
	for !contains(kit.Types("flash"), tracking.Expired) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	kit.RequireExpired(t, "flash")
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
