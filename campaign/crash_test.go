package campaign_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/campaign/campaigntest"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

const childEnv = "HERALD_CAMPAIGN_CHILD" // the shared directory

// crashAudience is the size of the crash test's audience.
func crashAudience() int {
	if n, err := strconv.Atoi(os.Getenv("HERALD_CAMPAIGN_RECIPIENTS")); err == nil && n > 0 {
		return n
	}
	if raceEnabled {
		return 10_000
	}
	return 200_000
}

// fanoutDispatcher is a Dispatcher on db that only validates and enqueues
// (the child never starts workers: the fan-out is what is killed).
func fanoutDispatcher(db *embedded.DB, sender push.Sender) (*herald.Dispatcher, error) {
	return herald.New(&herald.Config{Store: db.Retry(), Push: map[push.Provider]push.Sender{push.APNs: sender}, Campaign: retry.LaneConfig{Concurrency: 32},
		Queue: retry.Config{PollInterval: 5 * time.Millisecond}})
}

func crashCampaign() campaign.Campaign {
	c := spring("all")
	c.Key, c.Content.Email = "crash", nil
	return c
}

// fanoutChild creates (idempotently) and runs the campaign until killed.
func fanoutChild(dir string) int {
	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	d, err := fanoutDispatcher(db, pushtest.NewRecorder(push.APNs))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 1
	}
	r, err := campaign.New(&campaign.Config{Dispatcher: d, Store: db.Checkpoints(), Audiences: map[string]campaign.Iterator{"all": campaigntest.Audience{N: crashAudience()}}})
	if err != nil {
		return 1
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, crashCampaign()); err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		return 1
	}
	fmt.Println("ready")
	if err := r.Run(ctx, "crash"); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// A child fans a 200,000-recipient host-iterated audience out on the
// embedded store and is SIGKILLed at random moments, at least 10 times;
// the last run finishes. Every recipient's message is in the queue exactly
// once (none skipped, none twice), and the campaign's counts equal what
// the queue holds; then the parent delivers them all and the fake
// provider's records hold each recipient once.
func TestAKilledFanOutResumesExactlyOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	dir := t.TempDir()
	n := crashAudience()
	kills := 0
	for round := 0; ; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(out)
		require.True(t, sc.Scan(), "the child did not start")
		require.Equal(t, "ready", sc.Text())
		if kills < 10 {
			time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			kills++
			continue
		}
		finished := sc.Scan() && sc.Text() == "done"
		require.NoError(t, cmd.Wait())
		require.True(t, finished, "the last run must finish the fan-out")
		break
	}

	db, err := embedded.Open(filepath.Join(dir, "herald.db"), nil)
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	rec, err := db.Checkpoints().Get(ctx, "crash")
	require.NoError(t, err)
	require.True(t, rec.Done)
	require.Equal(t, n, rec.Recipients, "every recipient read once")
	require.Equal(t, n, rec.Enqueued, "the campaign's count equals the messages it created")
	require.Equal(t, n, rec.Staged, "every recipient's message staged once")
	require.Equal(t, n, rec.Drained, "and drained once")
	pages, err := db.Checkpoints().Pages(ctx, "crash", 0, 10)
	require.NoError(t, err)
	require.Empty(t, pages, "no staged page left")
	jobs, err := db.Retry().List(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, n, "one message per recipient in the queue: none skipped, none twice")
	seen := make(map[string]bool, n)
	for _, j := range jobs {
		require.False(t, seen[j.IdempotencyKey], "%s enqueued twice", j.IdempotencyKey)
		seen[j.IdempotencyKey] = true
	}
	for i := 0; i < n; i += n / 7 {
		require.True(t, seen[fmt.Sprintf("crash/u%d/push", i)], "recipient %d skipped", i)
	}

	// Deliver what the children enqueued, here, to a recording provider.
	fake := pushtest.NewRecorder(push.APNs)
	d, err := fanoutDispatcher(db, fake)
	require.NoError(t, err)
	require.NoError(t, d.Start(ctx))
	require.Eventually(t, func() bool { return len(fake.Sent()) >= n }, 5*time.Minute, 50*time.Millisecond)
	require.NoError(t, d.Stop(ctx))
	tokens := make(map[string]int, n)
	for _, m := range fake.Sent() {
		tokens[m.Token]++
	}
	require.Len(t, tokens, n, "every recipient received the message")
	for tok, c := range tokens {
		require.Equal(t, 1, c, "%s received it %d times", tok, c)
	}
	t.Logf("kills=%d recipients=%d enqueued=%d delivered=%d", kills, rec.Recipients, rec.Enqueued, len(fake.Sent()))
}
