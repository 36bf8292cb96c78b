package pushtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
)

// exampleTB stands in for the *testing.T a real test passes.
type exampleTB struct {
	testing.TB
	cleanups []func()
}

func (*exampleTB) Helper()                      {}
func (tb *exampleTB) Cleanup(f func())          { tb.cleanups = append(tb.cleanups, f) }
func (*exampleTB) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (tb *exampleTB) done() {
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
}

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
	t := &exampleTB{}
	defer t.done()
	srv := pushtest.NewAPNs(t, nil)
	client, _ := apns.New(srv.Configure(&apns.Config{Topic: "com.example.shop"}))
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
	t := &exampleTB{}
	defer t.done()
	pub, priv, _ := webpush.GenerateVAPIDKeys()
	srv := pushtest.NewWebPush(t)
	client, _ := webpush.New(srv.Configure(&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}))
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
