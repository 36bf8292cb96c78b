package heraldtest_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func shipped(order string) []herald.Message {
	return []herald.Message{
		{IdempotencyKey: order + "/push", User: "ada", Transactional: true,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "device-of-ada", Notification: push.Notification{Title: "Shipped"}}}},
		{IdempotencyKey: order + "/email", User: "ada", Transactional: true,
			Email: &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Shipped", Text: "On its way"}},
		{IdempotencyKey: order + "/promo", User: "ada", Campaign: "cross-sell",
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "device-of-ada", Notification: push.Notification{Title: "You may also like"}}}},
	}
}

var oneMarketingPushADay = []capping.Rule{{Name: "daily", Kind: capping.Global, Limit: 1, Window: capping.Calendar(capping.Day)}}

// A host's unit test: "order shipped → push and email, the cross-sell
// push capped".
func Example() {
	t := &exampletb.TB{}
	defer t.Done()
	kit := heraldtest.New(t, &heraldtest.Options{Rules: oneMarketingPushADay})
	// Today's marketing push went out this morning...
	kit.Send(t, herald.Message{IdempotencyKey: "newsletter", User: "ada",
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "device-of-ada", Notification: push.Notification{Title: "News"}}}})
	kit.Settle(t)
	// ...then the order ships.
	for _, m := range shipped("order-42") {
		kit.Send(t, m)
	}
	kit.Settle(t)
	kit.RequireSent(t, "order-42/push")
	kit.RequireSent(t, "order-42/email")
	kit.RequireCapped(t, "order-42/promo")
	fmt.Println("APNs:", kit.Push[push.APNs].Sent())
	fmt.Println("email:", kit.Email.Sent())
	// Output:
	// APNs: [newsletter order-42/push]
	// email: [order-42/email]
}

func TestFailuresRetriesAndExpiry(t *testing.T) {
	kit := heraldtest.New(t, nil)
	kit.Push[push.APNs].Fail("flaky", &push.Error{Provider: push.APNs, Kind: push.ErrUnavailable, Status: 503})
	kit.Send(t, herald.Message{IdempotencyKey: "flaky", User: "u", Transactional: true, TTL: 10 * time.Second,
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t"}}})
	kit.Settle(t)
	if got := kit.Types("flaky"); !contains(got, "failed") || !contains(got, "accepted") {
		t.Fatalf("events %v, want accepted and failed", got)
	}
	kit.RequireNotSent(t, "flaky")
	// Healed, the retry goes out once the backoff has passed on the clock.
	kit.Push[push.APNs].Fail("flaky", nil)
	kit.Clock.Advance(2 * time.Second)
	kit.Settle(t)
	kit.RequireSent(t, "flaky")

	kit.Send(t, herald.Message{IdempotencyKey: "stale", User: "u", Transactional: true, TTL: 5 * time.Second,
		SendAt: heraldtest.Start.Add(time.Minute), Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t"}}})
	kit.Clock.Advance(10 * time.Minute)
	kit.Settle(t)
	waitFor(t, func() bool { return contains(kit.Types("stale"), "expired") })
	kit.RequireExpired(t, "stale")
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for range 500 {
		if ok() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not met in 2.5s")
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
