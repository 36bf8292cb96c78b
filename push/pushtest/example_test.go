package pushtest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
)

// notifyShipped is host-app code under test: it only knows a push.Sender.
func notifyShipped(ctx context.Context, s push.Sender, token, order string) error {
	_, err := s.Send(ctx, &push.Message{
		Token:          token,
		IdempotencyKey: "shipped/" + order,
		Notification:   push.Notification{Title: "Shipped", Body: "Order " + order + " is on its way"},
	})
	return err
}

// A host app tests its notification code against a fake APNs that the real
// apns client talks to over HTTP/2, then scripts APNs to say the device is gone.
func ExampleNewAPNs() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := pushtest.NewAPNs(t, nil)
	client, _ := apns.New((&apns.Config{Topic: "com.example.shop"}).UseFake(srv))
	defer client.CloseIdleConnections()

	token := pushtest.DeviceToken("ada's phone")
	_ = notifyShipped(context.Background(), client, token, "42")
	got := srv.Delivered()[0]
	fmt.Println(got.Topic, got.Payload["aps"].(map[string]any)["alert"].(map[string]any)["body"])

	srv.FailToken(token, pushtest.Fault{Status: 410, Reason: "Unregistered"})
	err := notifyShipped(context.Background(), client, token, "43")
	fmt.Println(errors.Is(err, push.ErrUnregistered))
	// Output:
	// com.example.shop Order 42 is on its way
	// true
}

// The Web Push fake decrypts what the real client encrypted, so a test sees
// exactly what the browser's service worker would receive.
func ExampleNewWebPush() {
	t := &exampletb.TB{}
	defer t.Done()
	pub, priv, _ := webpush.GenerateVAPIDKeys()
	srv := pushtest.NewWebPush(t)
	client, _ := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(srv))
	defer client.CloseIdleConnections()

	subscription := srv.NewSubscription(t, pub) // what the browser would post to the host app
	_ = notifyShipped(context.Background(), client, subscription, "42")
	fmt.Println(string(srv.Delivered()[0].Plaintext))
	// Output:
	// {"title":"Shipped","body":"Order 42 is on its way"}
}

// Recorder needs no network at all.
func ExampleRecorder() {
	rec := pushtest.NewRecorder(push.FCM)
	_ = notifyShipped(context.Background(), rec, "fcm-token", "42")
	rec.FailNext(1, &push.Error{Provider: push.FCM, Kind: push.ErrUnavailable})
	err := notifyShipped(context.Background(), rec, "fcm-token", "43")
	fmt.Println(len(rec.Sent()), rec.Sent()[0].Notification.Body, push.IsRetryable(err))
	// Output:
	// 1 Order 42 is on its way true
}
