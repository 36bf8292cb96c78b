package herald_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
)

// A host sends a push through a Dispatcher: Send returns once the message
// is durable; a retried call with the same key sends nothing more; a bad
// token is refused at the door.
func ExampleDispatcher() {
	tb := &exampletb.TB{}
	defer tb.Done()
	ctx := context.Background()
	fake := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{topic}})
	client, _ := apns.New((&apns.Config{Topic: topic}).UseFake(fake))
	defer client.CloseIdleConnections()

	d, _ := herald.New(&herald.Config{
		Store: retry.NewMemoryStore(), // embedded.Open(path).Retry() in production
		Push:  map[push.Provider]push.Sender{push.APNs: client},
	})
	_ = d.Start(ctx)
	defer d.Stop(ctx)

	m := herald.Message{IdempotencyKey: "order-42-shipped", User: "u1", Transactional: true, TTL: time.Hour,
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
			Token: pushtest.DeviceToken("phone"), Notification: push.Notification{Title: "Shipped", Body: "Order 42 is on its way"}}}}
	first, _ := d.Send(ctx, m)
	again, _ := d.Send(ctx, m) // the caller timed out and retried
	fmt.Println(first.ID == again.ID, again.Duplicate)

	m.IdempotencyKey, m.Push.Token = "order-43-shipped", "not-a-token"
	_, err := d.Send(ctx, m)
	fmt.Println(errors.Is(err, herald.ErrInvalid), errors.Is(err, push.ErrInvalidToken))

	for len(fake.Delivered()) == 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println(fake.Delivered()[0].Payload["aps"].(map[string]any)["alert"].(map[string]any)["title"])
	// Output:
	// true true
	// true true
	// Shipped
}
