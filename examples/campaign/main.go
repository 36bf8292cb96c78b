// Command campaign sends one campaign to a 100,000-recipient audience on
// the embedded store, through herald's real APNs and SMTP clients to
// in-process fakes, with a live progress bar and a final table: the fan-out
// checkpoints its cursor with each page's messages, caps and eligibility
// are decided when each message goes out (some recipients bounced earlier
// and are suppressed, some opted out of promotions, the host's predicate
// drops the users it no longer targets), and the table is read back from
// the tracking journal.
//
//	go run ./examples/campaign            # 100,000 recipients
//	go run ./examples/campaign -n 20000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

func main() {
	n := flag.Int("n", 100_000, "recipients")
	rate := flag.Float64("rate", 20_000, "messages per second")
	flag.Parse()
	if err := run(*n, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "campaign:", err)
		os.Exit(1)
	}
}

// audience is the host's user table, iterated by ID: recipient i has a
// phone (push) and, one in two, an email address.
type audience struct{ n int }

func (a audience) Next(_ context.Context, cursor string) ([]campaign.Recipient, string, error) {
	from, _ := strconv.Atoi(cursor)
	to := min(from+500, a.n)
	rs := make([]campaign.Recipient, 0, to-from)
	for i := from; i < to; i++ {
		r := campaign.Recipient{User: fmt.Sprint("user-", i), Token: pushtest.DeviceToken(fmt.Sprint("phone-", i)),
			TimeZone: "Europe/Paris", Vars: map[string]string{"Name": fmt.Sprint("Customer ", i)}}
		if i%2 == 0 {
			r.Email = fmt.Sprintf("user%d@example.com", i)
		}
		rs = append(rs, r)
	}
	if to == a.n {
		return rs, "", nil
	}
	return rs, strconv.Itoa(to), nil
}

func (a audience) Size(context.Context) (int, error) { return a.n, nil }

func run(n int, rate float64) error {
	ctx := context.Background()
	tb := &exampletb.TB{}
	defer tb.Done()
	dir, err := os.MkdirTemp("", "herald-campaign")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	if err != nil {
		return err
	}
	defer db.Close()

	apnsFake := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{"com.example.shop"}})
	ac, err := apns.New((&apns.Config{Topic: "com.example.shop", Connections: 2}).UseFake(apnsFake))
	if err != nil {
		return err
	}
	defer ac.CloseIdleConnections()
	smtpFake := emailtest.NewServer(tb, nil)
	es, err := smtp.New((&smtp.Config{PoolSize: 8}).UseFake(smtpFake))
	if err != nil {
		return err
	}
	defer es.Close()

	// Before the campaign: some addresses bounced, some users opted out.
	list := db.Eligibility()
	for i := 0; i < n; i += 97 {
		addr := fmt.Sprintf("user%d@example.com", i)
		if err := list.Suppress(ctx, eligibility.Suppression{Key: eligibility.RecipientKey("email", addr), Channel: "email",
			Masked: email.MaskAddress(addr), Reason: "smtp 550 5.1.1", Source: "provider", At: time.Now()}); err != nil {
			return err
		}
	}
	for i := 1; i < n; i += 101 {
		if err := list.SetPreference(ctx, eligibility.Preference{User: fmt.Sprint("user-", i), Topic: eligibility.CategoryTopic("promotions"),
			OptedOut: true, At: time.Now()}); err != nil {
			return err
		}
	}
	outbox, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{})
	if err != nil {
		return err
	}
	defer outbox.Close(ctx)
	// A marketing cap of one push a day: the users who got this morning's
	// flash sale are capped.
	limiter, err := capping.New(db.Capping(), &capping.Config{Rules: []capping.Rule{
		{Name: "one-push-a-day", Kind: capping.Global, Limit: 1, Window: capping.Calendar(capping.Day), Channels: []string{"push"}}}})
	if err != nil {
		return err
	}
	for i := 0; i < n; i += 53 {
		d, err := limiter.Reserve(ctx, capping.Subject{User: fmt.Sprint("user-", i), TimeZone: "Europe/Paris", Channel: "push"}, time.Now())
		if err != nil {
			return err
		}
		if d.Allowed && d.Reservation != "" {
			_ = limiter.Commit(ctx, d.Reservation)
		}
	}
	var runner *campaign.Runner
	d, err := herald.New(&herald.Config{
		Store: db.Retry(), Push: map[push.Provider]push.Sender{push.APNs: ac}, Email: es,
		Limiter: limiter, Tracker: outbox, Eligibility: list,
		Campaign: retry.LaneConfig{Concurrency: 32},
		Eligible: func(ctx context.Context, m *herald.Message) (bool, string) {
			if strings.HasSuffix(m.User, "13") { // the host's segment moved on meanwhile
				return false, "no longer in the spring segment"
			}
			return runner.Eligible(ctx, m)
		},
	})
	if err != nil {
		return err
	}
	runner, err = campaign.New(&campaign.Config{Dispatcher: d, Store: db.Checkpoints(), Audiences: map[string]campaign.Iterator{"customers": audience{n}}})
	if err != nil {
		return err
	}
	c := campaign.Campaign{
		Key: "spring-sale", Name: "Spring sale", Audience: "customers", Category: "promotions", TTL: time.Hour, PerSecond: rate,
		Content: campaign.Content{
			Push:  &herald.PushMessage{Provider: push.APNs, Message: push.Message{Notification: push.Notification{Title: "{{.Name}}, spring is here", Body: "40% off today"}}},
			Email: &email.Message{From: "Shop <shop@example.com>", Subject: "{{.Name}}, spring is here", Text: "40% off today", HTML: "<p>Hello {{.Name}}, 40% off today</p>"},
		},
	}
	if _, err := runner.Create(ctx, c); err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	start := time.Now()
	fanout := make(chan error, 1)
	go func() { fanout <- runner.Run(ctx, c.Key) }()
	expected := n + n/2 // a push each, an email for one in two
	var runErr error
	for done := false; !done; {
		select {
		case runErr = <-fanout:
			fanout = nil
		case <-time.After(200 * time.Millisecond):
		}
		p, err := runner.Progress(ctx, c.Key, outbox)
		if err != nil {
			return err
		}
		settled := 0
		for _, t := range []tracking.Type{tracking.Sent, tracking.Capped, tracking.Suppressed, tracking.OptedOut, tracking.Ineligible, tracking.Expired, tracking.Dead} {
			settled += p.Counts[t]
		}
		bar(p, settled, expected, time.Since(start))
		done = fanout == nil && settled >= p.Enqueued && p.FanoutDone
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("not settled after 5 minutes: %d of %d", settled, p.Enqueued)
		}
	}
	if runErr != nil {
		return runErr
	}
	if err := d.Stop(ctx); err != nil {
		return err
	}
	p, err := runner.Progress(ctx, c.Key, outbox)
	if err != nil {
		return err
	}
	fmt.Printf("\n\ncampaign %q: %d recipients read, %d messages enqueued (%d refused at the door) in %s\n",
		c.Key, p.Recipients, p.Enqueued, p.Invalid, time.Since(start).Round(time.Millisecond))
	fmt.Println("outcome          messages")
	types := []tracking.Type{tracking.Sent, tracking.Capped, tracking.Suppressed, tracking.OptedOut, tracking.Ineligible, tracking.Expired, tracking.Dead}
	for _, t := range types {
		fmt.Printf("%-16s %8d\n", t, p.Counts[t])
	}
	fmt.Printf("providers received: APNs %d, SMTP %d; journal complete: %v\n", len(apnsFake.Delivered()), len(smtpFake.Messages()), p.Complete)
	if got := len(apnsFake.Delivered()) + len(smtpFake.Messages()); got != p.Counts[tracking.Sent] {
		return fmt.Errorf("the providers received %d messages, the journal says %d were sent", got, p.Counts[tracking.Sent])
	}
	if !p.FanoutDone || p.Recipients != n {
		return fmt.Errorf("fan-out read %d of %d recipients", p.Recipients, n)
	}
	return nil
}

func bar(p campaign.Progress, settled, expected int, el time.Duration) {
	const width = 40
	frac := float64(settled) / float64(max(expected, 1))
	filled := min(int(frac*width), width)
	fmt.Printf("\r[%s%s] %5.1f%%  read %d/%d  staged %d  enqueued %d  sent %d  capped %d  suppressed %d  opted out %d  ineligible %d  %s ",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*frac, p.Recipients, p.Size, p.Staged, p.Enqueued,
		p.Counts[tracking.Sent], p.Counts[tracking.Capped], p.Counts[tracking.Suppressed], p.Counts[tracking.OptedOut],
		p.Counts[tracking.Ineligible], el.Round(time.Second))
}
