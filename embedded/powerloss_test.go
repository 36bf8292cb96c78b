package embedded_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/internal/lazyfs"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// The power-loss loop: a child process works the embedded store on a lazy
// file system (internal/lazyfs) — enqueues with keys and workers, capping
// reservations committed, durable tracking events, Inbox items, a
// campaign's fan-out checkpoints (a page's jobs and its cursor) — and
// writes each acknowledged operation to a ledger on the real disk. The
// parent cuts the power at a random moment (every write not fsynced is
// taken back), kills the child, remounts, and checks: the store opens with
// quick_check, and every acknowledged operation is there.
const (
	powerChildEnv  = "HERALD_POWER_CHILD" // the ledger directory (not on the lazy FS)
	powerDBEnv     = "HERALD_POWER_DB"
	powerRoundEnv  = "HERALD_POWER_ROUND"
	powerNoSyncEnv = "HERALD_POWER_NOSYNC"
)

func powerChild() int {
	if os.Getenv(powerNoSyncEnv) == "1" {
		embedded.SetSynchronousOffForTest()
	}
	round := os.Getenv(powerRoundEnv)
	db, err := embedded.Open(os.Getenv(powerDBEnv), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	ledger := mustAppend(filepath.Join(os.Getenv(powerChildEnv), "acked.log"))
	ack := func(format string, args ...any) { _, _ = ledger.WriteString(fmt.Sprintf(format, args...) + "\n") }
	ctx := context.Background()
	q, err := retry.New(db.Retry(), &retry.Config{PollInterval: 5 * time.Millisecond,
		Lanes: map[string]retry.LaneConfig{retry.DefaultLane: {Concurrency: 4}}})
	if err != nil {
		return 1
	}
	q.HandleFunc("p", func(context.Context, *retry.Job) error { return nil })
	if err := q.Start(ctx); err != nil {
		return 1
	}
	for g := range 3 {
		go func() {
			for n := 0; ; n++ {
				key := fmt.Sprintf("k%s-%d-%d", round, g, n)
				if _, err := q.Enqueue(ctx, retry.EnqueueParams{Kind: "p", Payload: []byte(`{}`), IdempotencyKey: key}); err == nil {
					ack("E %s", key)
				}
			}
		}()
	}
	go func() {
		key := "power:" + round
		for n := 0; ; n++ {
			id := fmt.Sprintf("c%s-%d", round, n)
			now := time.Now()
			i, err := db.Capping().Reserve(ctx, id, []capping.Check{{Key: key, Limit: 1 << 30}}, now, now.Add(time.Hour))
			if err == nil && i == -1 && db.Capping().Commit(ctx, id) == nil {
				ack("C %s", key)
			}
		}
	}()
	go func() {
		for n := 0; ; n++ {
			id := fmt.Sprintf("t%s-%d", round, n)
			if _, err := db.Tracking().Append(ctx, []tracking.Event{{ID: id, MessageID: id, Type: tracking.Sent, At: time.Now()}}); err == nil {
				ack("T %s", id)
			}
		}
	}()
	go func() {
		// A campaign's fan-out: each page's jobs and its cursor in one write.
		key := "camp-" + round
		if _, _, err := db.Checkpoints().Create(ctx, checkpoint.Record{Key: key, Spec: []byte(`{}`), Created: time.Now()}); err != nil {
			return
		}
		for n := 1; ; n++ {
			jobs := []*retry.Job{{Kind: "p", Payload: []byte(`{}`), Lane: retry.DefaultLane, IdempotencyKey: fmt.Sprintf("%s-page%d", key, n),
				RunAt: time.Now(), MaxAttempts: 3, State: retry.StateAvailable, CreatedAt: time.Now(), UpdatedAt: time.Now()}}
			if _, err := db.Checkpoints().Checkpoint(key, strconv.Itoa(n), 1, 0, false).Enqueue(ctx, jobs, time.Now().Add(-time.Hour)); err == nil {
				ack("P %s %d", key, n)
			}
		}
	}()
	go func() {
		// A campaign staged and drained: a page (two messages) with its
		// cursor in one write, then each message's job with the page's
		// offset in one write.
		key := "stage-" + round
		if _, _, err := db.Checkpoints().Create(ctx, checkpoint.Record{Key: key, Spec: []byte(`{}`), Created: time.Now()}); err != nil {
			return
		}
		for n := 1; ; n++ {
			if db.Checkpoints().Stage(ctx, key, strconv.Itoa(n), 2, 0, false, []byte("page"), 2) != nil {
				continue
			}
			ack("S %s %d", key, n)
			rec, err := db.Checkpoints().Get(ctx, key)
			if err != nil {
				continue
			}
			for off := 1; off <= 2; off++ {
				jk := fmt.Sprintf("%s-%d-%d", key, rec.Pages, off)
				jobs := []*retry.Job{{Kind: "p", Payload: []byte(`{}`), Lane: retry.DefaultLane, IdempotencyKey: jk,
					RunAt: time.Now(), MaxAttempts: 3, State: retry.StateAvailable, CreatedAt: time.Now(), UpdatedAt: time.Now()}}
				if _, err := db.Checkpoints().Drain(key, rec.Pages, off, 0).Enqueue(ctx, jobs, time.Now().Add(-time.Hour)); err == nil {
					ack("D %s %d %s", key, rec.Pages, jk)
				}
			}
		}
	}()
	go func() {
		user := "u" + round
		for n := 0; ; n++ {
			it := inbox.Item{ID: fmt.Sprintf("i%d", n), User: user, Title: "hello", Created: time.Now()}
			if _, err := db.Inbox().Enqueuer(db.Retry(), []inbox.Item{it}).Enqueue(ctx, nil, time.Now()); err == nil {
				ack("I %s %s", user, it.ID)
			}
		}
	}()
	fmt.Println("ready")
	select {}
}

// powerRound runs one child and cuts the power under it.
func powerRound(t *testing.T, lz *lazyfs.FS, ledger string, round int, noSync bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), powerChildEnv+"="+ledger, powerDBEnv+"="+filepath.Join(lz.Dir(), "herald.db"),
		powerRoundEnv+"="+strconv.Itoa(round))
	if noSync {
		cmd.Env = append(cmd.Env, powerNoSyncEnv+"=1")
	}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		require.True(t, ok, "round %d: the child did not start: %s", round, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("round %d: the child did not start in 60 s: %s", round, stderr.String())
	}
	time.Sleep(time.Duration(30+rand.IntN(250)) * time.Millisecond)
	lz.Cut()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	require.NoError(t, lz.Remount())
}

// checkLedger opens the store (with quick_check) and returns the
// acknowledged operations it lacks. It opens the backing file, which after
// Remount is what the disk holds: this process serves the FUSE mount, and
// a page fault on SQLite's mmapped -shm through the mount, taken while the
// Go runtime stops the world, would wait forever for a server that cannot
// run (go-fuse's in-process mmap deadlock).
func checkLedger(t *testing.T, path, ledger string) (acked int, lost []string) {
	t.Helper()
	db, err := embedded.Open(path, &embedded.Config{VerifyOnOpen: true})
	require.NoError(t, err, "the store must open after a power cut (no ErrCorrupt)")
	defer db.Close()
	b, err := os.ReadFile(filepath.Join(ledger, "acked.log"))
	require.NoError(t, err)
	ctx := context.Background()
	kf := db.Retry().(retry.KeyFinder)
	commits := map[string]int{}
	cursors, staged := map[string]int{}, map[string]int{}
	drained := map[string][]int64{}
	items := map[string]map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if need := map[string]int{"P": 3, "I": 3, "S": 3, "D": 4}[f0(f)]; len(f) < max(need, 2) {
			continue // a torn last line
		}
		acked++
		switch f[0] {
		case "E":
			if _, err := kf.JobIDByKey(ctx, f[1]); errors.Is(err, retry.ErrNotFound) {
				lost = append(lost, line)
			} else {
				require.NoError(t, err)
			}
		case "C":
			commits[f[1]]++
		case "P":
			n, _ := strconv.Atoi(f[2])
			cursors[f[1]] = max(cursors[f[1]], n)
		case "S":
			n, _ := strconv.Atoi(f[2])
			staged[f[1]] = max(staged[f[1]], n)
		case "D":
			if _, err := kf.JobIDByKey(ctx, f[3]); err != nil {
				lost = append(lost, line+": "+err.Error())
			}
			seq, _ := strconv.ParseInt(f[2], 10, 64)
			drained[f[1]] = append(drained[f[1]], seq)
		case "T":
			ok, err := db.Tracking().Has(ctx, f[1], tracking.Sent)
			require.NoError(t, err)
			if !ok {
				lost = append(lost, line)
			}
		case "I":
			if items[f[1]] == nil {
				items[f[1]] = feedIDs(t, db.Inbox(), f[1])
			}
			if !items[f[1]][f[2]] {
				lost = append(lost, line)
			}
		}
	}
	record := func(key string) checkpoint.Record { // a record lost (a store that does not sync) reads as empty
		r, err := db.Checkpoints().Get(ctx, key)
		if !errors.Is(err, checkpoint.ErrNotFound) {
			require.NoError(t, err)
		}
		return r
	}
	for key, n := range staged {
		r := record(key)
		if c, _ := strconv.Atoi(r.Cursor); c < n || r.Staged < 2*n {
			lost = append(lost, fmt.Sprintf("S %s: cursor %q and %d staged, acknowledged %d pages", key, r.Cursor, r.Staged, n))
		}
	}
	for key, seqs := range drained {
		r := record(key)
		if r.Drained < len(seqs) {
			lost = append(lost, fmt.Sprintf("D %s: %d drained, %d acknowledged", key, r.Drained, len(seqs)))
		}
	}
	for key, n := range cursors {
		r := record(key)
		if c, _ := strconv.Atoi(r.Cursor); c < n {
			lost = append(lost, fmt.Sprintf("P %s: cursor %q, acknowledged %d", key, r.Cursor, n))
		}
		if _, err := kf.JobIDByKey(ctx, fmt.Sprintf("%s-page%d", key, n)); err != nil {
			lost = append(lost, fmt.Sprintf("P %s: page %d's job: %v", key, n, err))
		}
	}
	for key, n := range commits {
		slots, err := db.Capping().Slots(ctx, key, time.Time{})
		require.NoError(t, err)
		if len(slots) < n {
			lost = append(lost, fmt.Sprintf("C %s: %d committed, %d slots", key, n, len(slots)))
		}
	}
	return acked, lost
}

func f0(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func feedIDs(t *testing.T, st inbox.Store, user string) map[string]bool {
	ids := map[string]bool{}
	after := ""
	for {
		page, next, err := st.Feed(context.Background(), user, inbox.Query{After: after, Limit: 200})
		require.NoError(t, err)
		for _, it := range page {
			ids[it.ID] = true
		}
		if next == "" {
			return ids
		}
		after = next
	}
}

// 100 power cuts (15 under -race; HERALD_POWER_CUTS for more): every one leaves a
// store that opens, passes quick_check and holds every acknowledged
// enqueue, reservation, tracking event and Inbox item.
func TestPowerLossLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("the power-loss loop")
	}
	cuts := 100
	if raceEnabled {
		cuts = 15
	}
	if s := os.Getenv("HERALD_POWER_CUTS"); s != "" {
		cuts, _ = strconv.Atoi(s)
	}
	lz := lazyfs.MountOrSkip(t)
	ledger := t.TempDir()
	path := filepath.Join(lz.Backing(), "herald.db") // see checkLedger
	var acked int
	for round := range cuts {
		powerRound(t, lz, ledger, round, false)
		var lost []string
		acked, lost = checkLedger(t, path, ledger)
		require.Empty(t, lost, "round %d: acknowledged writes lost after a power cut", round)
	}
	fsyncs, _, _ := lz.Stats()
	t.Logf("power cuts=%d acknowledged=%d lost=0 corrupt opens=0 fsyncs=%d", cuts, acked, fsyncs)
}

// The loop catches a store that does not sync: with synchronous=OFF,
// acknowledged writes are gone after a cut.
func TestPowerLossCatchesAStoreThatDoesNotSync(t *testing.T) {
	if testing.Short() {
		t.Skip("the power-loss loop")
	}
	lz := lazyfs.MountOrSkip(t)
	ledger := t.TempDir()
	path := filepath.Join(lz.Backing(), "herald.db") // see checkLedger
	for round := range 10 {
		powerRound(t, lz, ledger, round, true)
		db, err := embedded.Open(path, nil)
		if err != nil {
			t.Logf("round %d: synchronous=OFF left a store that does not open: %v", round, err)
			return // caught, as corruption
		}
		_ = db.Close()
		acked, lost := checkLedger(t, path, ledger)
		if len(lost) > 0 {
			t.Logf("round %d: synchronous=OFF lost %d of %d acknowledged writes, e.g. %s", round, len(lost), acked, lost[0])
			return
		}
	}
	t.Fatal("10 power cuts of a store with synchronous=OFF lost nothing: the loop cannot see a missing fsync")
}
