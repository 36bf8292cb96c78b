package herald_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/tracking"
)

// The Dispatcher crash test re-executes the test binary as a child that
// sends pushes through a Dispatcher on the embedded store to a fake APNs
// living in the parent, and kills it with SIGKILL at random moments.
// acked.log in the shared directory has one key per Send that returned
// success.
const (
	dispatchChildEnv = "HERALD_DISPATCH_CHILD" // the shared directory
	dispatchRoundEnv = "HERALD_DISPATCH_ROUND"
	dispatchAPNsEnv  = "HERALD_DISPATCH_APNS" // "url keyID teamID"
)

// dispatcherFor builds the Dispatcher of a crash-test process: apnsAt is
// "url keyID teamID" of the fake, whose certificate and key are in dir.
func dispatcherFor(dir, apnsAt string, db *embedded.DB) (*herald.Dispatcher, error) {
	c, err := crashAPNs(dir, apnsAt)
	if err != nil {
		return nil, err
	}
	return herald.New(&herald.Config{
		Store:         db.Retry(),
		Inbox:         db.Inbox(),
		Push:          map[push.Provider]push.Sender{push.APNs: c},
		Transactional: retry.LaneConfig{Concurrency: 8},
		Queue:         retry.Config{PollInterval: 5 * time.Millisecond},
	})
}

// crashAPNs is the APNs client of a crash-test process: apnsAt is "url
// keyID teamID" of the fake, whose certificate and key are in dir.
func crashAPNs(dir, apnsAt string) (*apns.Client, error) {
	cert, err := os.ReadFile(filepath.Join(dir, "apns.pem"))
	if err != nil {
		return nil, err
	}
	p8, err := secret.FromFile(filepath.Join(dir, "key.p8"))
	if err != nil {
		return nil, err
	}
	f := strings.Fields(apnsAt)
	if len(f) != 3 {
		return nil, fmt.Errorf("bad fake APNs address %q", apnsAt)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cert)
	return apns.New(&apns.Config{Topic: topic, Host: f[0], KeyID: f[1], TeamID: f[2], AuthKey: p8, TLSConfig: &tls.Config{RootCAs: pool}})
}

func dispatchChild(dir string) int {
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	d, err := dispatcherFor(dir, os.Getenv(dispatchAPNsEnv), db)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 1
	}
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	acked, err := os.OpenFile(filepath.Join(dir, "acked.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1
	}
	fmt.Println("ready")
	round := os.Getenv(dispatchRoundEnv)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				key := fmt.Sprintf("r%s-p%d-%d", round, p, n)
				_, err := d.Send(ctx, crashMessage(key))
				if err != nil {
					fmt.Fprintln(os.Stderr, "send:", err)
					os.Exit(1)
				}
				_, _ = acked.WriteString(key + "\n") // one write: a kill never splits a line from its neighbours
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait() // until killed
	return 0
}

func crashMessage(key string) herald.Message {
	return herald.Message{IdempotencyKey: key, User: "u-" + key, Transactional: true, TTL: time.Hour,
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{
			Token: pushtest.DeviceToken(key), Notification: push.Notification{Title: "Order", Data: map[string]string{"k": key}}}},
		Inbox: &herald.InboxItem{Title: "Order", Body: key}}
}

// Accepted means durable, through the whole Dispatcher: after SIGKILLs at
// random moments, every message whose Send returned reaches APNs, and the
// repeats stay within the messages in flight at the kills.
func TestDispatcherCrashLosesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	fake := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	dir := t.TempDir()
	p8, keyID, teamID := fake.AuthKey()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "apns.pem"), fake.CertificatePEM(), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.p8"), p8.Bytes(), 0o600))
	apnsAt := fake.URL() + " " + keyID + " " + teamID

	const rounds = 10
	inFlight := 0
	for round := range rounds {
		multiproc.KillAtRandom(t, []string{dispatchChildEnv + "=" + dir, dispatchRoundEnv + "=" + strconv.Itoa(round),
			dispatchAPNsEnv + "=" + apnsAt}, 200*time.Millisecond, 600*time.Millisecond)
		db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
		require.NoError(t, err)
		inFlight += db.Recovered()
		require.NoError(t, db.Close())
	}

	// Drain what the children left, here.
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	require.NoError(t, err)
	defer db.Close()
	inFlight += db.Recovered()
	d, err := dispatcherFor(dir, apnsAt, db)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, d.Start(ctx))
	require.Eventually(t, func() bool {
		st, err := d.Queue().Stats(ctx)
		require.NoError(t, err)
		for _, ls := range st {
			if ls.Ready+ls.Scheduled+ls.Running > 0 {
				return false
			}
		}
		return true
	}, time.Minute, 20*time.Millisecond)
	require.NoError(t, d.Stop(ctx))

	b, err := os.ReadFile(filepath.Join(dir, "acked.log"))
	require.NoError(t, err)
	deliveries := map[string]int{}
	for _, r := range fake.Delivered() {
		k, _ := r.Payload["k"].(string)
		deliveries[k]++
	}
	acked, lost, repeats := 0, 0, 0
	for _, line := range strings.SplitAfter(string(b), "\n") {
		key := strings.TrimSpace(line)
		if !strings.HasSuffix(line, "\n") || key == "" {
			continue // torn by a kill
		}
		acked++
		if deliveries[key] == 0 {
			lost++
			if lost <= 5 {
				t.Errorf("message %s was accepted and never sent", key)
			}
		}
	}
	for _, n := range deliveries {
		repeats += n - 1
	}
	// Every accepted message is in its user's Inbox, exactly once.
	inboxed := 0
	for _, line := range strings.SplitAfter(string(b), "\n") {
		key := strings.TrimSpace(line)
		if !strings.HasSuffix(line, "\n") || key == "" {
			continue
		}
		feed, _, err := db.Inbox().Feed(ctx, "u-"+key, inbox.Query{Now: time.Now()})
		require.NoError(t, err)
		require.Len(t, feed, 1, "the Inbox of %s", key)
		require.Equal(t, key, feed[0].ID)
		inboxed++
	}
	t.Logf("kills=%d accepted=%d delivered=%d lost=%d repeats=%d in_flight_at_kills=%d inbox=%d",
		rounds, acked, len(deliveries), lost, repeats, inFlight, inboxed)
	require.Zero(t, lost)
	require.LessOrEqual(t, repeats, inFlight, "repeats are bounded by the messages in flight at the kills")
	require.Greater(t, acked, 10*rounds, "the children did too little work to mean anything")
}

// The sent-then-killed crash test: a child sends one capped message per
// round and is SIGKILLed after APNs took it and the capping slot was
// committed, before the job was completed (its tracker holds the "sent"
// event until the kill). The retry after the restart must find the
// message already counted, send it again (the same collapse ID), and
// record it sent, never "capped" by its own slot.
const (
	capChildEnv = "HERALD_CAP_CHILD" // the shared directory
	capKeyEnv   = "HERALD_CAP_KEY"
)

// holdSent is a tracker that, for the round's own message, says "sent"
// on stdout and then never returns: the process is killed there, between
// the provider's answer and the job's completion. (The messages earlier
// rounds left running are retried and completed normally.)
type holdSent struct{ key string }

func (h holdSent) Track(_ context.Context, evs ...tracking.Event) error {
	for _, e := range evs {
		if e.Type == tracking.Sent && e.MessageID == h.key {
			fmt.Println("sent " + e.MessageID)
			select {} // until killed
		}
	}
	return nil
}

func cappedDispatcher(dir, apnsAt string, db *embedded.DB, tracker tracking.Tracker) (*herald.Dispatcher, error) {
	limiter, err := capping.New(db.Capping(), &capping.Config{
		Rules: []capping.Rule{{Name: "one-a-day", Kind: capping.Global, Limit: 1, Window: capping.Calendar(capping.Day)}},
	})
	if err != nil {
		return nil, err
	}
	c, err := crashAPNs(dir, apnsAt)
	if err != nil {
		return nil, err
	}
	return herald.New(&herald.Config{
		Store:   db.Retry(),
		Inbox:   db.Inbox(),
		Push:    map[push.Provider]push.Sender{push.APNs: c},
		Limiter: limiter,
		Tracker: tracker,
		Queue:   retry.Config{PollInterval: 5 * time.Millisecond, LeaseDuration: time.Second},
	})
}

func cappedMessage(key string) herald.Message {
	m := crashMessage(key)
	m.Transactional = false // capped: one a day for its user
	return m
}

func capChild(dir string) int {
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	d, err := cappedDispatcher(dir, os.Getenv(dispatchAPNsEnv), db, holdSent{key: os.Getenv(capKeyEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 1
	}
	ctx := context.Background()
	if _, err := d.Send(ctx, cappedMessage(os.Getenv(capKeyEnv))); err != nil {
		fmt.Fprintln(os.Stderr, "send:", err)
		return 1
	}
	if err := d.Start(ctx); err != nil {
		return 1
	}
	select {} // until killed
}

func TestASentMessageKilledBeforeCompletionIsNotCappedByItself(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	fake := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
	dir := t.TempDir()
	p8, keyID, teamID := fake.AuthKey()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "apns.pem"), fake.CertificatePEM(), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.p8"), p8.Bytes(), 0o600))
	apnsAt := fake.URL() + " " + keyID + " " + teamID
	const kills = 10
	for round := range kills {
		key := fmt.Sprint("capped-", round)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), capChildEnv+"="+dir, capKeyEnv+"="+key, dispatchAPNsEnv+"="+apnsAt)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			if sc.Text() == "sent "+key {
				seen = true
				break
			}
		}
		require.NoError(t, cmd.Process.Kill()) // SIGKILL: after the answer and the commit, before completion
		_ = cmd.Wait()
		require.True(t, seen, "round %d: the child never sent", round)
	}
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	require.NoError(t, err)
	defer db.Close()
	left := db.Recovered()
	require.GreaterOrEqual(t, left, 1, "the last round's message was left running by its kill")
	events := tracking.NewMemoryStore()
	outbox, err := tracking.NewOutbox(events, &tracking.OutboxConfig{})
	require.NoError(t, err)
	defer outbox.Close(context.Background())
	d, err := cappedDispatcher(dir, apnsAt, db, outbox)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, d.Start(ctx))
	require.Eventually(t, func() bool {
		jobs, err := d.Queue().Jobs(ctx, retry.Filter{})
		require.NoError(t, err)
		for _, j := range jobs {
			if !j.State.Finished() {
				return false
			}
		}
		return len(jobs) == kills
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, d.Stop(ctx))
	jobs, err := d.Queue().Jobs(ctx, retry.Filter{})
	require.NoError(t, err)
	deliveries := map[string]int{}
	for _, r := range fake.Delivered() {
		k, _ := r.Payload["k"].(string)
		deliveries[k]++
	}
	for _, j := range jobs {
		reason, skipped := retry.Skipped(j)
		require.False(t, skipped, "%s was delivered, then recorded %q", j.IdempotencyKey, reason)
		require.Equal(t, retry.StateCompleted, j.State, j.IdempotencyKey)
		require.GreaterOrEqual(t, deliveries[j.IdempotencyKey], 2, "%s: once before the kill, again on the retry", j.IdempotencyKey)
	}
	require.NoError(t, outbox.Flush(ctx))
	recs, err := events.Read(ctx, 0, 1000)
	require.NoError(t, err)
	sent := 0
	for _, r := range recs {
		require.NotEqual(t, tracking.Capped, r.Event.Type, r.Event.MessageID)
		if r.Event.Type == tracking.Sent {
			sent++
		}
	}
	require.Equal(t, left, sent, "the messages left running, retried here, recorded sent")
	t.Logf("kills=%d messages=%d left running at the end=%d deliveries=%d", kills, len(jobs), left, len(fake.Delivered()))
}
