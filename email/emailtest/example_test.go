package emailtest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/internal/exampletb"
)

// sendReceipt is host-app code under test: it only knows an email.Sender.
func sendReceipt(ctx context.Context, s email.Sender, to, order string) error {
	_, err := s.Send(ctx, &email.Message{
		From: "Shop <shop@example.com>", To: []string{to},
		Subject: "Receipt for order " + order, Text: "Thanks for order " + order + ".",
		IdempotencyKey: "receipt/" + order,
	})
	return err
}

// A host app tests its email code against a real SMTP server on loopback
// (STARTTLS and AUTH included), then scripts a bounce.
func ExampleNewServer() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := emailtest.NewServer(t, nil)
	sender, _ := smtp.New((&smtp.Config{}).UseFake(srv))
	defer sender.Close()

	_ = sendReceipt(context.Background(), sender, "ada@example.com", "42")
	got := srv.Messages()[0]
	fmt.Println(got.Recipients, got.Subject)

	srv.FailRecipient("gone@example.com", emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "No such user"})
	err := sendReceipt(context.Background(), sender, "gone@example.com", "43")
	fmt.Println(errors.Is(err, email.ErrRecipientGone), email.IsRetryable(err))
	// Output:
	// [ada@example.com] Receipt for order 42
	// true false
}
