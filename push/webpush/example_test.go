package webpush_test

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
)

// The real Web Push client pointed at the fake push service with UseFake
// (which trusts its certificate and allows its loopback address, for a
// fake only).
func ExampleConfig_UseFake() {
	t := &exampletb.TB{}
	defer t.Done()
	pub, priv, _ := webpush.GenerateVAPIDKeys()
	srv := pushtest.NewWebPush(t)
	c, _ := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(srv))
	defer c.CloseIdleConnections()
	_, err := c.Send(context.Background(), &push.Message{Token: srv.NewSubscription(t, pub), Notification: push.Notification{Title: "Hi"}})
	fmt.Println(err, string(srv.Delivered()[0].Plaintext))
	// Output:
	// <nil> {"title":"Hi"}
}
