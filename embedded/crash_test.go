package embedded_test

import (
	"context"
	"errors"
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

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/retry"
)

// The crash test re-executes the test binary as a child that enqueues and
// works jobs on the embedded store, and kills it with SIGKILL at random
// moments. Files in the shared directory are the ledger:
//
//	acked.log      "<key> <id>" once Enqueue returned success
//	delivered.log  "<id>" each time a handler ran the job (the "send")
const (
	crashChildEnv = "HERALD_CRASH_CHILD" // the shared directory
	crashRoundEnv = "HERALD_CRASH_ROUND"
	crashModeEnv  = "HERALD_CRASH_MODE" // "work", "track" or "lockprobe"
)

func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	path := filepath.Join(dir, "herald.db")
	if os.Getenv(crashModeEnv) == "lockprobe" {
		db, err := embedded.Open(path, nil)
		if errors.Is(err, embedded.ErrLocked) {
			return 3
		}
		if err == nil {
			_ = db.Close()
		}
		return 0
	}
	if os.Getenv(crashModeEnv) == "track" {
		return trackChild(dir)
	}
	round := os.Getenv(crashRoundEnv)
	db, err := embedded.Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	acked := mustAppend(filepath.Join(dir, "acked.log"))
	delivered := mustAppend(filepath.Join(dir, "delivered.log"))
	q, err := retry.New(db.Retry(), &retry.Config{
		Lanes:        map[string]retry.LaneConfig{retry.DefaultLane: {Concurrency: 8}},
		PollInterval: 5 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "queue:", err)
		return 1
	}
	q.HandleFunc("send", deliverTo(delivered))
	if err := q.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	fmt.Println("ready")
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				key := fmt.Sprintf("r%s-p%d-%d", round, p, n)
				res, err := q.Enqueue(context.Background(), retry.EnqueueParams{Kind: "send", IdempotencyKey: key, Payload: []byte(key)})
				if err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					os.Exit(1)
				}
				if _, err := fmt.Fprintf(acked, "%s %d\n", key, res.ID); err != nil {
					os.Exit(1)
				}
				time.Sleep(2 * time.Millisecond) // pace: ~2,000 enqueues/s in all
			}
		}()
	}
	wg.Wait() // until killed
	return 0
}

func mustAppend(path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		panic(err)
	}
	return f
}

// deliverTo records a delivery with one write, so a kill never splits a line
// from its neighbours (a torn last line is ignored by the parent).
func deliverTo(f *os.File) retry.HandlerFunc {
	return func(_ context.Context, j *retry.Job) error {
		_, err := f.WriteString(strconv.FormatInt(j.ID, 10) + "\n")
		return err
	}
}

func TestCrashLosesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	rounds := 25
	if v, err := strconv.Atoi(os.Getenv("HERALD_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.db")
	inFlight, kills := 0, 0
	for round := range rounds {
		multiproc.KillAtRandom(t, []string{crashChildEnv + "=" + dir, crashRoundEnv + "=" + strconv.Itoa(round), crashModeEnv + "=work"},
			50*time.Millisecond, 950*time.Millisecond)
		kills++

		// Reopen with a full integrity check; count what was in flight.
		db, err := embedded.Open(path, &embedded.Config{VerifyOnOpen: true})
		require.NoError(t, err, "reopen after kill %d", kills)
		inFlight += db.Recovered()
		require.NoError(t, db.Close())
	}

	// Drain what is left, recording deliveries the same way.
	db, err := embedded.Open(path, &embedded.Config{VerifyOnOpen: true})
	require.NoError(t, err)
	defer db.Close()
	inFlight += db.Recovered()
	delivered := mustAppend(filepath.Join(dir, "delivered.log"))
	defer delivered.Close()
	q, err := retry.New(db.Retry(), &retry.Config{Lanes: map[string]retry.LaneConfig{retry.DefaultLane: {Concurrency: 16}}, PollInterval: 5 * time.Millisecond})
	require.NoError(t, err)
	q.HandleFunc("send", deliverTo(delivered))
	require.NoError(t, q.Start(context.Background()))
	require.Eventually(t, func() bool {
		st, err := q.Stats(context.Background())
		require.NoError(t, err)
		left := 0
		for _, ls := range st {
			left += ls.Ready + ls.Scheduled + ls.Running
		}
		return left == 0
	}, 2*time.Minute, 50*time.Millisecond)
	require.NoError(t, q.Stop(context.Background()))

	ackedIDs := readLedger(t, filepath.Join(dir, "acked.log"), 2)
	deliveries := map[int64]int{}
	for _, f := range readLedger(t, filepath.Join(dir, "delivered.log"), 1) {
		deliveries[f[0]]++
	}
	lost, duplicates := 0, 0
	for _, f := range ackedIDs {
		if deliveries[f[1]] == 0 {
			lost++
		}
	}
	for id, n := range deliveries {
		duplicates += n - 1
		if _, err := db.Retry().Get(context.Background(), id); err != nil {
			t.Errorf("unexpected delivery of job %d, unknown to the store: %v", id, err)
		}
	}
	t.Logf("kills=%d acknowledged=%d delivered=%d lost=%d duplicates=%d in_flight_at_kills=%d",
		kills, len(ackedIDs), len(deliveries), lost, duplicates, inFlight)
	require.Zero(t, lost, "every acknowledged enqueue must be delivered")
	require.LessOrEqual(t, duplicates, inFlight, "repeats are bounded by the jobs in flight at the kills")
	require.Greater(t, len(ackedIDs), 100*kills/10, "the child did too little work to mean anything")
}

// readLedger parses lines of n integers (the key, if any, dropped); a torn
// last line is skipped.
func readLedger(t *testing.T, path string, n int) [][]int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out [][]int64
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasSuffix(line, "\n") {
			continue // torn by a kill
		}
		fields := strings.Fields(line)
		if len(fields) != n {
			continue
		}
		row := make([]int64, n)
		for i, f := range fields {
			if i == 0 && n == 2 {
				continue // the key
			}
			v, err := strconv.ParseInt(f, 10, 64)
			require.NoError(t, err, "ledger line %q", line)
			row[i] = v
		}
		out = append(out, row)
	}
	return out
}

func TestOpenLockedByAnotherProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "herald.db"))
	probe := func() int {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashModeEnv+"=lockprobe")
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		require.NoError(t, err)
		return 0
	}
	require.Equal(t, 3, probe(), "another process must get ErrLocked")
	require.NoError(t, db.Close())
	require.Equal(t, 0, probe(), "after Close the file opens")
}
