package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/delivery"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/sms"
)

// Every channel's sentinels wrap the shared classes, so one table
// classifies them all; a channel's own errors.Is keeps working.
func TestEveryChannelSharesTheClasses(t *testing.T) {
	cases := []struct {
		err   error
		class *delivery.Class
	}{
		{&push.Error{Provider: push.APNs, Kind: push.ErrUnregistered, Status: 410}, delivery.ErrGone},
		{&email.Error{Kind: email.ErrRecipientGone, Code: 550}, delivery.ErrGone},
		{&sms.Error{Kind: sms.ErrRecipientGone, Status: 400, Code: 21610}, delivery.ErrGone},
		{&push.Error{Provider: push.FCM, Kind: push.ErrRateLimited, Status: 429}, delivery.ErrRateLimited},
		{&email.Error{Kind: email.ErrAuth, Code: 535}, delivery.ErrAuth},
		{&sms.Error{Kind: sms.ErrInvalidNumber}, delivery.ErrInvalidRecipient},
		{&push.Error{Provider: push.WebPush, Kind: push.ErrForbiddenEndpoint}, delivery.ErrForbidden},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), delivery.ErrTimeout},
		{errors.New("connection reset"), delivery.ErrOther},
	}
	for _, tc := range cases {
		if got := delivery.Of(tc.err); got != tc.class {
			t.Errorf("Of(%v) = %v, want %v", tc.err, got, tc.class)
		}
		if !errors.Is(tc.err, tc.class) && tc.class != delivery.ErrTimeout && tc.class != delivery.ErrOther {
			t.Errorf("errors.Is(%v, %v) is false", tc.err, tc.class)
		}
	}
	if !errors.Is(&push.Error{Kind: push.ErrUnregistered}, push.ErrUnregistered) {
		t.Error("the channel's own sentinel no longer matches")
	}
	if errors.Is(&push.Error{Kind: push.ErrUnregistered}, email.ErrRecipientGone) {
		t.Error("one channel's sentinel matched another's")
	}
}

func TestTraits(t *testing.T) {
	down := &push.Error{Provider: push.APNs, Kind: push.ErrUnavailable, Status: 503}
	recipients := &email.Error{Kind: email.ErrUnavailable, Code: 452, EnhancedCode: "4.2.2", Recipient: true}
	local := &push.Error{Provider: push.APNs, Kind: push.ErrInvalidMessage}
	broken := &sms.Error{Kind: sms.ErrUnavailable, Err: errors.New("reset")}
	switch {
	case !delivery.ProviderDown(down), delivery.AboutMessage(down):
		t.Error("a 503 is the provider's")
	case delivery.ProviderDown(recipients), !delivery.AboutMessage(recipients), !delivery.Retryable(recipients):
		t.Error("a refused RCPT is the message's, retryable")
	case !delivery.NotSent(local), delivery.Answered(local):
		t.Error("a local refusal sent nothing and is no answer")
	case delivery.NotSent(broken), !delivery.Retryable(broken):
		t.Error("a broken connection's outcome is unknowable, and retryable")
	case !delivery.Answered(down):
		t.Error("a 503 is an answer")
	}
	for _, c := range delivery.Classes() {
		if c.Name() == "" {
			t.Error("a class without a name")
		}
	}
}
