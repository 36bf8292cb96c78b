// Command outage replays, in a few seconds, the night in the seed log: a
// push provider fails for a while, the analytics pipeline is down, a
// flash sale goes stale, and marketing keeps sending. Everything runs in
// this process on the embedded store (one SQLite file in a temporary
// directory) with herald's real clients talking to local fakes of APNs,
// an SMTP server and Twilio.
//
//	go run ./examples/outage
//
// It prints the ledger and exits non-zero if a promise broke: every
// accepted message is sent, capped or expired (none lost, none late), no
// user got more marketing than the cap, and the analytics sink, once
// back, received every event it missed.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
	"github.com/heraldhq/herald/tracking"
	"github.com/heraldhq/herald/tracking/trackingtest"
)

const (
	users     = 50
	marketing = 4 // marketing messages per user; the cap lets 2 through
	dailyCap  = 2
	topic     = "com.example.shop"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "outage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	tb := &exampletb.TB{}
	defer tb.Done()
	dir, err := os.MkdirTemp("", "herald-outage-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	if err != nil {
		return err
	}
	defer db.Close()

	// The providers: real clients, local fakes.
	apnsFake := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{topic}})
	ac, err := apns.New((&apns.Config{Topic: topic}).UseFake(apnsFake))
	if err != nil {
		return err
	}
	defer ac.CloseIdleConnections()
	smtpFake := emailtest.NewServer(tb, nil)
	es, err := smtp.New((&smtp.Config{}).UseFake(smtpFake))
	if err != nil {
		return err
	}
	defer es.Close()
	twilioFake := smstest.NewServer(tb)
	ss, err := twilio.New((&twilio.Config{}).UseFake(twilioFake))
	if err != nil {
		return err
	}

	// Analytics: the journal is the embedded file; the pipeline behind it
	// (a sink) goes down with the provider.
	pipeline := trackingtest.NewRecorder("analytics")
	outbox, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{
		Sinks: []tracking.Sink{pipeline}, PollInterval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	limiter, err := capping.New(db.Capping(), &capping.Config{Rules: []capping.Rule{
		{Name: "marketing-daily", Kind: capping.Global, Limit: dailyCap, Window: capping.Calendar(capping.Day)},
	}})
	if err != nil {
		return err
	}
	d, err := herald.New(&herald.Config{
		Store:  db.Retry(),
		MinTTL: 100 * time.Millisecond, // the night replayed in seconds: a flash sale lasts 500 ms
		Queue: retry.Config{
			Lanes: map[string]retry.LaneConfig{
				herald.Lane(false, "apns"): {Concurrency: 4, Rate: 400, Burst: 20}, // the backlog drains at a pace APNs accepts
			},
			PollInterval: 10 * time.Millisecond,
			Backoff:      func(attempt int, _ error) time.Duration { return 100 * time.Millisecond * time.Duration(attempt) },
		},
		Push:    map[push.Provider]push.Sender{push.APNs: ac},
		Email:   es,
		SMS:     ss,
		Limiter: limiter,
		Tracker: outbox,
		// Time is compressed here: production keeps the defaults (2 s, 2 min).
		Breaker: herald.BreakerConfig{Cooldown: 150 * time.Millisecond, MaxCooldown: 600 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}

	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("%6s  %s\n", time.Since(start).Round(10*time.Millisecond), fmt.Sprintf(format, args...))
	}
	accepted, refusedTwice := 0, 0
	send := func(m herald.Message) error {
		res, err := d.Send(ctx, m)
		if err != nil {
			return err
		}
		if res.Duplicate {
			refusedTwice++
		} else {
			accepted++
		}
		return nil
	}
	promo := func(u, i int, ttl time.Duration) herald.Message {
		return herald.Message{
			IdempotencyKey: fmt.Sprintf("promo-%d-user-%d", i, u), User: fmt.Sprint("user-", u), Campaign: fmt.Sprint("promo-", i), TTL: ttl,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
				Token: pushtest.DeviceToken(fmt.Sprint("phone-", u)), Notification: push.Notification{Title: "Sale", Body: fmt.Sprintf("Offer %d", i)},
			}},
		}
	}

	// 1. A normal evening: receipts by email, codes by SMS, a first promo.
	for u := range users {
		if err := send(herald.Message{IdempotencyKey: fmt.Sprint("receipt-", u), User: fmt.Sprint("user-", u), Transactional: true,
			Email: &email.Message{From: "Shop <shop@example.com>", To: []string{fmt.Sprintf("user%d@example.com", u)}, Subject: "Your receipt", Text: "Thanks!"}}); err != nil {
			return err
		}
		if err := send(herald.Message{IdempotencyKey: fmt.Sprint("code-", u), User: fmt.Sprint("user-", u), Transactional: true,
			SMS: &sms.Message{To: fmt.Sprintf("+1415555%04d", 1000+u), From: "Shop", Body: "Your code is 123456"}}); err != nil {
			return err
		}
		if err := send(promo(u, 0, time.Hour)); err != nil {
			return err
		}
	}
	say("normal traffic: %d messages accepted", accepted)
	time.Sleep(300 * time.Millisecond)

	// 2. The outage: APNs answers 503, the analytics pipeline is down.
	apnsFake.Down(pushtest.Fault{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})
	pipeline.Fail(errors.New("analytics pipeline down"))
	say("APNs down (503) and the analytics pipeline down")
	for u := range users {
		// A flash sale that is worthless after 500 ms...
		if err := send(promo(u, 1, 500*time.Millisecond)); err != nil {
			return err
		}
		// ...and more marketing than the cap allows, accepted all the same.
		for i := 2; i < marketing; i++ {
			if err := send(promo(u, i, time.Hour)); err != nil {
				return err
			}
		}
		// A client that timed out retries with the same key: sent once.
		if err := send(promo(u, 2, time.Hour)); err != nil {
			return err
		}
	}
	say("during the outage: %d accepted in all, %d retried calls recognised by key", accepted, refusedTwice)
	time.Sleep(1200 * time.Millisecond)

	// 3. Recovery.
	apnsFake.Up()
	say("APNs back; the backlog drains at 400/s")
	if err := waitSettled(ctx, d); err != nil {
		return err
	}
	if err := d.Stop(ctx); err != nil { // no more events after this
		return err
	}
	pipeline.Fail(nil)
	say("analytics pipeline back; the outbox replays what it missed")
	if err := outbox.Flush(ctx); err != nil {
		return err
	}
	head, err := db.Tracking().Head(ctx)
	if err != nil {
		return err
	}
	if !pipeline.WaitFor(int(head), 10*time.Second) {
		return fmt.Errorf("the analytics pipeline received %d of %d events", len(pipeline.Unique()), head)
	}
	if err := outbox.Close(ctx); err != nil {
		return err
	}

	// The ledger.
	count := map[tracking.Type]int{}
	perUser := map[string]int{}
	final := map[string]tracking.Type{}
	for _, e := range pipeline.Unique() {
		count[e.Type]++
		switch e.Type {
		case tracking.Sent, tracking.Capped, tracking.Expired, tracking.Dead:
			final[e.MessageID] = e.Type
			if e.Type == tracking.Sent && e.Campaign != "" {
				perUser[e.User]++
			}
		}
	}
	fmt.Println()
	fmt.Printf("accepted %d: sent %d, capped %d, expired unsent %d, dead %d; %d failed attempts recorded\n",
		count[tracking.Accepted], count[tracking.Sent], count[tracking.Capped], count[tracking.Expired], count[tracking.Dead], count[tracking.Failed])
	refused := len(apnsFake.Requests()) - len(apnsFake.Delivered())
	fmt.Printf("providers received: APNs %d (and %d requests during the outage: the circuit breaker kept the backlog off it), SMTP %d, Twilio %d\n",
		len(apnsFake.Delivered()), refused, len(smtpFake.Messages()), len(twilioFake.Accepted()))
	maxMarketing := 0
	for _, n := range perUser {
		maxMarketing = max(maxMarketing, n)
	}
	fmt.Printf("marketing per user: at most %d (cap %d); analytics events delivered after the outage: %d of %d\n",
		maxMarketing, dailyCap, len(pipeline.Unique()), head)

	// The promises, checked.
	var broken []error
	if len(final) != accepted || count[tracking.Accepted] != accepted {
		broken = append(broken, fmt.Errorf("accepted %d, but %d reached an outcome (%d accepted events)", accepted, len(final), count[tracking.Accepted]))
	}
	if maxMarketing > dailyCap {
		broken = append(broken, fmt.Errorf("a user got %d marketing messages, over the cap of %d", maxMarketing, dailyCap))
	}
	for u := range users {
		if final[fmt.Sprintf("promo-1-user-%d", u)] == tracking.Sent {
			broken = append(broken, fmt.Errorf("user-%d's flash sale was delivered after its deadline", u))
		}
	}
	if got := len(apnsFake.Delivered()); got != count[tracking.Sent]-2*users {
		broken = append(broken, fmt.Errorf("APNs received %d, tracking says %d pushes sent", got, count[tracking.Sent]-2*users))
	}
	if err := errors.Join(broken...); err != nil {
		return fmt.Errorf("a promise broke: %w", err)
	}
	fmt.Println("every promise held: nothing lost, no flash sale late, caps held, analytics complete")
	return nil
}

func waitSettled(ctx context.Context, d *herald.Dispatcher) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := d.Queue().Stats(ctx)
		if err != nil {
			return err
		}
		left := 0
		for _, ls := range st {
			left += ls.Ready + ls.Scheduled + ls.Running
		}
		if left == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("the queue did not drain in 30s")
}
