package apns_test

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
)

// The real APNs client pointed at the fake APNs with UseFake; in
// production the Config holds the .p8 key (secret.FromFile), its key and
// team IDs, and Production.
func ExampleConfig_UseFake() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := pushtest.NewAPNs(t, nil)
	c, _ := apns.New((&apns.Config{Topic: "com.example.shop"}).UseFake(srv))
	defer c.CloseIdleConnections()
	_, err := c.Send(context.Background(), &push.Message{Token: pushtest.DeviceToken("ada"), Notification: push.Notification{Title: "Hi"}})
	fmt.Println(err, srv.Delivered()[0].Topic)
	// Output:
	// <nil> com.example.shop
}
