package twilio_test

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
)

// The real Twilio client pointed at the fake Twilio with UseFake; the
// cost guard refuses a premium-rate number before any request.
func ExampleConfig_UseFake() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := smstest.NewServer(t)
	c, _ := twilio.New((&twilio.Config{}).UseFake(srv))
	_, err := c.Send(context.Background(), &sms.Message{To: "+14155552671", From: "+15005550006", Body: "Your code is 123456"})
	fmt.Println(err, srv.Accepted()[0].Body)
	_, err = c.Send(context.Background(), &sms.Message{To: "+19005550123", From: "+15005550006", Body: "Your code is 123456"})
	fmt.Println(err)
	// Output:
	// <nil> Your code is 123456
	// sms: invalid number: a premium_rate number: refused by the cost guard (SMS-pumping fraud bills the sender; allow it with Options.AllowTypes) [to +19*******23]
}
