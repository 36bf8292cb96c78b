package fcm_test

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
)

// The real FCM client pointed at the fake FCM with UseFake; in production
// the Config names the project and a service-account key instead.
func ExampleConfig_UseFake() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := pushtest.NewFCM(t, nil)
	c, _ := fcm.New(context.Background(), (&fcm.Config{}).UseFake(srv))
	_, err := c.Send(context.Background(), &push.Message{Token: pushtest.RegistrationToken("pixel"), Notification: push.Notification{Title: "Hi"}})
	fmt.Println(err, len(srv.Delivered()))
	// Output:
	// <nil> 1
}
