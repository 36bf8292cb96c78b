package smtp_test

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/internal/exampletb"
)

// The real SMTP sender pointed at the test server with UseFake (STARTTLS
// and AUTH, as a real relay wants them).
func ExampleConfig_UseFake() {
	t := &exampletb.TB{}
	defer t.Done()
	srv := emailtest.NewServer(t, nil)
	s, _ := smtp.New((&smtp.Config{}).UseFake(srv))
	defer s.Close()
	_, err := s.Send(context.Background(), &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Shipped", Text: "On its way"})
	fmt.Println(err, srv.Messages()[0].Subject)
	// Output:
	// <nil> Shipped
}
