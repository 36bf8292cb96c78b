package smstest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
)

// sendCode is host-app code under test: it only knows an sms.Sender.
func sendCode(ctx context.Context, s sms.Sender, to, code string) error {
	_, err := s.Send(ctx, &sms.Message{To: to, From: "Herald", Body: "Your code is " + code})
	return err
}

// A host app tests its SMS code with the real twilio-go client pointed at
// a fake Twilio, then scripts an opted-out recipient.
func ExampleNewServer() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := smstest.NewServer(t)
	client, _ := twilio.New((&twilio.Config{}).UseFake(srv))

	_ = sendCode(context.Background(), client, "+14155552671", "123456")
	fmt.Println(srv.Accepted()[0].Body)

	srv.FailTo("+14155552672", smstest.Fault{Status: 400, Code: 21610, Message: "Attempt to send to unsubscribed recipient"})
	err := sendCode(context.Background(), client, "+14155552672", "654321")
	fmt.Println(errors.Is(err, sms.ErrRecipientGone))
	// Output:
	// Your code is 123456
	// true
}
