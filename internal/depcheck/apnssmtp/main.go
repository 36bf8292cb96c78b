// Command apnssmtp is the smallest host of herald that sends pushes
// through APNs and email over SMTP, and nothing else: internal/depcheck
// lists what it compiles, so a dependency one channel drags into another
// fails a test.
package main

import (
	"fmt"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
)

func main() {
	db, err := embedded.Open("herald.db", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ac, err := apns.New(&apns.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	es, err := smtp.New(&smtp.Config{Host: "localhost"})
	if err != nil {
		fmt.Println(err)
		return
	}
	var _ email.Sender = es
	_, err = herald.New(&herald.Config{Store: db.Retry(), Push: map[push.Provider]push.Sender{push.APNs: ac}, Email: es})
	fmt.Println(err)
}
