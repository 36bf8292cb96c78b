package campaign_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/campaign/campaigntest"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(fanoutChild(dir)) // re-executed by TestAKilledFanOutResumesExactlyOnce
	}
	goleak.VerifyTestMain(m)
}

func spring(audience string) campaign.Campaign {
	return campaign.Campaign{
		Key: "spring-sale", Name: "Spring sale", Audience: audience, Category: "promotions", Labels: []string{"promo"},
		Content: campaign.Content{
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Notification: push.Notification{Title: "Hi {{.Name}}", Body: "40% off"}}},
			Email: &email.Message{From: "shop@example.com", Subject: "For {{.Name}}", Text: "Hello {{.Name}}",
				HTML: "<p>Hello {{.Name}}</p>"},
		},
		PerSecond: 1e6,
	}
}

type fixture struct {
	kit *heraldtest.Kit
	r   *campaign.Runner
	db  *embedded.DB
}

func newFixture(t *testing.T, audiences map[string]campaign.Iterator) *fixture {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	var r *campaign.Runner
	kit := heraldtest.New(t, &heraldtest.Options{Store: db.Retry(), Configure: func(c *herald.Config) {
		c.Eligible = func(ctx context.Context, m *herald.Message) (bool, string) { return r.Eligible(ctx, m) }
		c.Campaign.Concurrency = 16
	}})
	r, err = campaign.New(&campaign.Config{Dispatcher: kit.Dispatcher, Store: db.Checkpoints(), Audiences: audiences, Now: kit.Clock.Now})
	require.NoError(t, err)
	return &fixture{kit: kit, r: r, db: db}
}

// A campaign fans out to every recipient once per channel, with its
// variables substituted (HTML escaped in the HTML part), tagged with the
// campaign for caps, preferences and tracking; its status counts it.
func TestFanOutReachesEveryRecipientOnce(t *testing.T) {
	t.Parallel()
	const n = 1200
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: n}})
	ctx := context.Background()
	c := spring("all")
	c.Content.Email.HTML = "<p>Hello {{.Name}}</p>"
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	require.NoError(t, f.r.Run(ctx, c.Key))
	f.kit.Settle(t)
	st, err := f.r.Status(ctx, c.Key)
	require.NoError(t, err)
	require.Equal(t, campaign.Done, st.State)
	require.True(t, st.FanoutDone)
	require.Equal(t, n, st.Recipients)
	require.Equal(t, 2*n, st.Enqueued)
	require.Zero(t, st.Invalid)
	for name, rec := range map[string]*heraldtest.Recorder{"push": f.kit.Push[push.APNs], "email": f.kit.Email} {
		sent := rec.Sent()
		require.Len(t, sent, n, name)
		seen := map[string]bool{}
		for _, k := range sent {
			require.False(t, seen[k], "%s sent twice", k)
			seen[k] = true
		}
	}
	ev := f.kit.RequireSent(t, "spring-sale/u7/push")
	require.Equal(t, "spring-sale", ev.Campaign)
	// Running again after the end creates nothing.
	require.NoError(t, f.r.Run(ctx, c.Key))
	st, _ = f.r.Status(ctx, c.Key)
	require.Equal(t, 2*n, st.Enqueued)
}

// Variables are substituted per channel: escaped in HTML, as text
// elsewhere.
func TestVariablesAreSubstitutedSafely(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"one": oneRecipient{campaign.Recipient{User: "x", Email: "x@example.com",
		Vars: map[string]string{"Name": `<script>alert(1)</script>`}}}})
	ctx := context.Background()
	c := spring("one")
	c.Content.Push = nil
	var got *email.Message
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	require.NoError(t, f.r.Run(ctx, c.Key))
	f.kit.Settle(t)
	jobs, err := f.kit.Dispatcher.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	var m herald.Message
	require.NoError(t, jsonUnmarshal(jobs[0].Payload, &m))
	got = m.Email
	require.Equal(t, "<p>Hello &lt;script&gt;alert(1)&lt;/script&gt;</p>", got.HTML)
	require.Equal(t, "Hello <script>alert(1)</script>", got.Text)
	require.Equal(t, []string{"x@example.com"}, got.To)
}

type oneRecipient struct{ r campaign.Recipient }

func (o oneRecipient) Next(context.Context, string) ([]campaign.Recipient, string, error) {
	return []campaign.Recipient{o.r}, "", nil
}

// Bad input gets a typed error naming the field and stores nothing; the
// same key again creates nothing new; the same key with other content is
// a conflict.
func TestCreateRefusesBadInputAndIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: 10}, "list": oneRecipient{}})
	ctx := context.Background()
	for field, mod := range map[string]func(c *campaign.Campaign){
		"Audience":  func(c *campaign.Campaign) { c.Audience = "nobody" },
		"Content":   func(c *campaign.Campaign) { c.Content = campaign.Content{} },
		"PerSecond": func(c *campaign.Campaign) { c.PerSecond = 0 },
		"FinishBy":  func(c *campaign.Campaign) { c.PerSecond, c.FinishBy = 0, time.Now().Add(-time.Hour) },
		"Key":       func(c *campaign.Campaign) { c.Key = "" },
	} {
		c := spring("all")
		mod(&c)
		_, err := f.r.Create(ctx, c)
		require.ErrorIs(t, err, campaign.ErrInvalid, field)
		var ie *campaign.InvalidError
		require.ErrorAs(t, err, &ie)
		require.Equal(t, field, ie.Field)
	}
	c := spring("list")
	c.PerSecond, c.FinishBy = 0, time.Now().Add(time.Hour)
	_, err := f.r.Create(ctx, c)
	require.ErrorIs(t, err, campaign.ErrInvalid, "FinishBy needs an audience that knows its size")
	_, err = f.r.Status(ctx, "spring-sale")
	require.ErrorIs(t, err, campaign.ErrNotFound, "nothing was stored")

	first, err := f.r.Create(ctx, spring("all"))
	require.NoError(t, err)
	again, err := f.r.Create(ctx, spring("all"))
	require.NoError(t, err)
	require.Equal(t, first.Created, again.Created)
	other := spring("all")
	other.Content.Push.Notification.Body = "50% off"
	_, err = f.r.Create(ctx, other)
	require.ErrorIs(t, err, campaign.ErrConflict)
}

// Pause stops the fan-out between pages, Run resumes it; Cancel stops it
// and refuses its messages still waiting (recorded ineligible).
func TestPauseResumeCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: 1000}})
	ctx := context.Background()
	c := spring("all")
	c.Content.Email = nil
	c.PerSecond = 2000 // 0.5 s in all
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx, c.Key) }()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, f.r.Pause(ctx, c.Key))
	require.ErrorIs(t, <-done, campaign.ErrStopped)
	paused, _ := f.r.Status(ctx, c.Key)
	require.Less(t, paused.Enqueued, 1000)
	require.NoError(t, f.r.Resume(ctx, c.Key))
	require.NoError(t, f.r.Run(ctx, c.Key))
	st, _ := f.r.Status(ctx, c.Key)
	require.Equal(t, 1000, st.Recipients)
	require.Equal(t, 1000, st.Enqueued, "no recipient twice across the pause")

	later := spring("all")
	later.Key, later.Content.Email, later.StartAt = "later", nil, heraldtest.Start.Add(time.Hour)
	_, err = f.r.Create(ctx, later)
	require.NoError(t, err)
	require.NoError(t, f.r.Run(ctx, later.Key)) // all 1000 wait for StartAt
	require.NoError(t, f.r.Cancel(ctx, later.Key))
	f.kit.Clock.Advance(2 * time.Hour)
	f.kit.Settle(t)
	for _, k := range []string{"later/u1/push", "later/u999/push"} {
		f.kit.RequireNotSent(t, k)
		require.Contains(t, f.kit.Types(k), tracking.Ineligible)
	}
}

// The door still decides: a recipient with a malformed address is left
// out and counted; the others go.
func TestAMalformedRecipientIsLeftOut(t *testing.T) {
	t.Parallel()
	bad := campaign.Recipient{User: "bad", Email: "not an address"}
	f := newFixture(t, map[string]campaign.Iterator{"mixed": mixed{bad}})
	ctx := context.Background()
	c := spring("mixed")
	c.Content.Push = nil
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	require.NoError(t, f.r.Run(ctx, c.Key))
	st, _ := f.r.Status(ctx, c.Key)
	require.Equal(t, 1, st.Invalid)
	require.Equal(t, 2, st.Enqueued)
}

type mixed struct{ bad campaign.Recipient }

func (m mixed) Next(context.Context, string) ([]campaign.Recipient, string, error) {
	return []campaign.Recipient{{User: "a", Email: "a@example.com"}, m.bad, {User: "b", Email: "b@example.com"}}, "", nil
}

// Local time delivery: each recipient's message is due at the same time
// of day in the recipient's own zone.
func TestLocalTimeDelivery(t *testing.T) {
	t.Parallel()
	paris := campaign.Recipient{User: "paris", TimeZone: "Europe/Paris", Token: "tok-paris"}
	tokyo := campaign.Recipient{User: "tokyo", TimeZone: "Asia/Tokyo", Token: "tok-tokyo"}
	f := newFixture(t, map[string]campaign.Iterator{"two": twoRecipients{paris, tokyo}})
	ctx := context.Background()
	c := spring("two")
	c.Content.Email, c.LocalTime, c.TTL = nil, "09:00", 2*time.Hour
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	require.NoError(t, f.r.Run(ctx, c.Key))
	jobs, err := f.kit.Dispatcher.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, 2)
	for _, j := range jobs {
		var m herald.Message
		require.NoError(t, jsonUnmarshal(j.Payload, &m))
		loc, _ := time.LoadLocation(m.TimeZone)
		local := m.SendAt.In(loc)
		require.Equal(t, 9, local.Hour(), "%s: %s", m.User, local)
		require.Zero(t, local.Minute())
		require.True(t, !m.SendAt.Before(heraldtest.Start), "not in the past")
		require.True(t, m.SendAt.Before(heraldtest.Start.Add(25*time.Hour)), "within a day")
	}
}

type twoRecipients [2]campaign.Recipient

func (r twoRecipients) Next(context.Context, string) ([]campaign.Recipient, string, error) {
	return r[:], "", nil
}

// A stored audience: uploads retried with the same ID add nothing, members
// removed are not messaged, and the campaign reaches the rest once.
func TestStoredAudience(t *testing.T) {
	t.Parallel()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	auds := db.Audiences()
	ctx := context.Background()
	batch := func(from, to int) []audience.Member {
		var ms []audience.Member
		for i := from; i < to; i++ {
			ms = append(ms, audience.Member{User: fmt.Sprintf("vip-%04d", i), Token: fmt.Sprintf("tok-%04d", i)})
		}
		return ms
	}
	for _, up := range []struct {
		id       string
		from, to int
	}{{"upload-1", 0, 700}, {"upload-1", 0, 700}, {"upload-2", 700, 1200}, {"upload-2", 700, 1300}} {
		_, err := auds.Upload(ctx, "vips", up.id, batch(up.from, up.to))
		require.NoError(t, err)
	}
	require.NoError(t, auds.Remove(ctx, "vips", []string{"vip-0003", "vip-0800"}))
	kit := heraldtest.New(t, &heraldtest.Options{Store: db.Retry(), Configure: func(c *herald.Config) { c.Campaign.Concurrency = 16 }})
	r, err := campaign.New(&campaign.Config{Dispatcher: kit.Dispatcher, Store: db.Checkpoints(), Now: kit.Clock.Now,
		Audiences: map[string]campaign.Iterator{"vips": campaign.Stored(auds, "vips")}})
	require.NoError(t, err)
	c := spring("vips")
	c.Content.Email = nil
	_, err = r.Create(ctx, c)
	require.NoError(t, err)
	require.NoError(t, r.Run(ctx, c.Key))
	kit.Settle(t)
	st, _ := r.Status(ctx, c.Key)
	require.Equal(t, 1198, st.Recipients, "1,200 uploaded once each, two removed")
	require.Len(t, kit.Push[push.APNs].Sent(), 1198)
	kit.RequireNotSent(t, "spring-sale/vip-0003/push")
}

// The audience is staged ahead of the rate (read, checked and stored as
// pages), and drained at it; a cancel drops what is staged and not yet
// drained, counted, and nothing of it reaches the queue after.
func TestStagedAheadOfTheRateAndCancelDropsTheRest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: 2000}})
	ctx := context.Background()
	c := spring("all")
	c.Content.Email = nil
	c.PerSecond = 500 // four seconds to drain (cancelled long before)
	_, err := f.r.Create(ctx, c)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx, c.Key) }()
	require.Eventually(t, func() bool { st, _ := f.r.Status(ctx, c.Key); return st.FanoutDone }, 5*time.Second, time.Millisecond)
	st, _ := f.r.Status(ctx, c.Key)
	require.Equal(t, 2000, st.Staged, "the whole audience staged")
	require.Less(t, st.Drained, 1500, "while the rate still holds most of it back")
	require.NoError(t, f.r.Cancel(ctx, c.Key))
	require.ErrorIs(t, <-done, campaign.ErrStopped)
	st, _ = f.r.Status(ctx, c.Key)
	require.Positive(t, st.Cancelled)
	require.Equal(t, st.Staged, st.Drained+st.Cancelled, "every staged message drained or cancelled: %+v", st)
	pages, err := f.db.Checkpoints().Pages(ctx, c.Key, 0, 100)
	require.NoError(t, err)
	require.Empty(t, pages)
	jobs, err := f.db.Retry().List(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, st.Enqueued, "the queue holds what was drained, nothing after the cancel")
	require.ErrorIs(t, f.r.Run(ctx, c.Key), campaign.ErrStopped)
}

// One runner at a time runs a campaign: a second runner (another
// process, another owner) is refused while the first holds the lease,
// and takes the campaign once the first gives it up; a runner whose
// lease is taken stops.
func TestOneRunnerAtATime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: 400}})
	other, err := campaign.New(&campaign.Config{Dispatcher: f.kit.Dispatcher, Store: f.db.Checkpoints(), Owner: "other",
		Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: 400}}, Lease: 300 * time.Millisecond})
	require.NoError(t, err)
	c := spring("all")
	c.Content.Email, c.PerSecond = nil, 50 // eight seconds (stopped long before)
	_, err = f.r.Create(context.Background(), c)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx, c.Key) }()
	require.Eventually(t, func() bool { st, _ := f.r.Status(ctx, c.Key); return st.Enqueued > 0 }, 5*time.Second, time.Millisecond)
	require.ErrorIs(t, other.Run(context.Background(), c.Key), campaign.ErrElsewhere)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	// The first runner gave the lease up: the other takes the campaign.
	// Its own lease is short; taken behind its back (by "thief"), it stops.
	ran := make(chan error, 1)
	go func() { ran <- other.Run(context.Background(), c.Key) }()
	require.Eventually(t, func() bool {
		ok, err := f.db.Checkpoints().Claim(context.Background(), c.Key, "thief", time.Now().Add(time.Hour), time.Now().Add(2*time.Hour))
		return err == nil && ok
	}, 5*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, <-ran, campaign.ErrElsewhere)
	st, err := f.r.Status(context.Background(), c.Key)
	require.NoError(t, err)
	require.Equal(t, campaign.Running, st.State)
	require.Less(t, st.Enqueued, 400)
}

// A slow campaign trickles: a tenth of a second's worth at a time, not a
// page at once after a page's worth of waiting.
func TestASlowCampaignTrickles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]campaign.Iterator{"all": campaigntest.Audience{N: 40}})
	c := spring("all")
	c.Content.Email, c.PerSecond = nil, 10
	_, err := f.r.Create(context.Background(), c)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx, c.Key) }()
	time.Sleep(1500 * time.Millisecond)
	st, err := f.r.Status(ctx, c.Key)
	require.NoError(t, err)
	cancel()
	<-done
	t.Logf("after 1.5 s at 10/s: %d enqueued", st.Enqueued)
	require.GreaterOrEqual(t, st.Enqueued, 2, "it runs at all (a loaded machine may start it late)")
	require.LessOrEqual(t, st.Enqueued, 25)
}

// A workspace-wide marketing limit is shared FIFO: the older campaign
// drains first, the younger waits behind it.
func TestTheMarketingLimitIsSharedFIFO(t *testing.T) {
	t.Parallel()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	kit := heraldtest.New(t, &heraldtest.Options{Store: db.Retry()})
	r, err := campaign.New(&campaign.Config{Dispatcher: kit.Dispatcher, Store: db.Checkpoints(), Now: kit.Clock.Now, PageSize: 100,
		MarketingPerSecond: 4000, Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: 1000}}})
	require.NoError(t, err)
	ctx := context.Background()
	older, younger := spring("all"), spring("all")
	older.Key, younger.Key = "older", "younger"
	older.Content.Email, younger.Content.Email = nil, nil
	_, err = r.Create(ctx, older)
	require.NoError(t, err)
	kit.Clock.Advance(time.Second)
	_, err = r.Create(ctx, younger)
	require.NoError(t, err)
	olderDone := make(chan error, 1)
	go func() { olderDone <- r.Run(ctx, "older") }()
	require.Eventually(t, func() bool { st, _ := r.Status(ctx, "older"); return st.Enqueued > 0 }, 5*time.Second, time.Millisecond)
	youngerDone := make(chan error, 1)
	go func() { youngerDone <- r.Run(ctx, "younger") }() // arrives while the older drains
	require.NoError(t, <-olderDone)
	st, _ := r.Status(ctx, "younger")
	t.Logf("when the older campaign finished, the younger had enqueued %d of 1000", st.Enqueued)
	require.Less(t, st.Enqueued, 500, "the younger campaign waited behind the older one")
	require.NoError(t, <-youngerDone)
}

// What an older campaign leaves of the marketing limit (it paces itself
// below it) goes to younger ones.
func TestTheMarketingLimitLeavesTheRestToYoungerCampaigns(t *testing.T) {
	t.Parallel()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	kit := heraldtest.New(t, &heraldtest.Options{Store: db.Retry()})
	r, err := campaign.New(&campaign.Config{Dispatcher: kit.Dispatcher, Store: db.Checkpoints(), Now: kit.Clock.Now, PageSize: 100,
		MarketingPerSecond: 4000, Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: 1000}, "few": campaigntest.Audience{N: 500}}})
	require.NoError(t, err)
	ctx := context.Background()
	slow, fast := spring("all"), spring("few")
	slow.Key, fast.Key = "slow", "fast"
	slow.Content.Email, fast.Content.Email = nil, nil
	slow.PerSecond = 25 // forty seconds in all, far below the shared 4,000/s; paused once the younger is done
	_, err = r.Create(ctx, slow)
	require.NoError(t, err)
	kit.Clock.Advance(time.Second)
	_, err = r.Create(ctx, fast)
	require.NoError(t, err)
	slowDone := make(chan error, 1)
	go func() { slowDone <- r.Run(ctx, "slow") }()
	require.NoError(t, r.Run(ctx, "fast"))
	st, _ := r.Status(ctx, "slow")
	require.Less(t, st.Enqueued, 1000, "the younger campaign finished while the older one was still pacing itself")
	require.NoError(t, r.Pause(ctx, "slow"))
	require.ErrorIs(t, <-slowDone, campaign.ErrStopped)
}
