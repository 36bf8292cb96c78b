package herald_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
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
	c, err := apns.New(&apns.Config{Topic: topic, Host: f[0], KeyID: f[1], TeamID: f[2], AuthKey: p8, TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		return nil, err
	}
	return herald.New(&herald.Config{
		Store:         db.Retry(),
		Push:          map[push.Provider]push.Sender{push.APNs: c},
		Transactional: retry.LaneConfig{Concurrency: 8},
		Queue:         retry.Config{PollInterval: 5 * time.Millisecond},
	})
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
			Token: pushtest.DeviceToken(key), Notification: push.Notification{Title: "Order", Data: map[string]string{"k": key}}}}}
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

	const rounds = 8
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
	t.Logf("kills=%d accepted=%d delivered=%d lost=%d repeats=%d in_flight_at_kills=%d",
		rounds, acked, len(deliveries), lost, repeats, inFlight)
	require.Zero(t, lost)
	require.LessOrEqual(t, repeats, inFlight, "repeats are bounded by the messages in flight at the kills")
	require.Greater(t, acked, 10*rounds, "the children did too little work to mean anything")
}
