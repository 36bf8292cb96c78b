package herald_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/lazyfs"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// diskChildEnv re-executes the test binary as a Dispatcher on the
// embedded store on a lazy file system: it reads "send <prefix> <n>" on
// stdin, sends, and answers "ok <key>" or "refused <key> <kind>" for each,
// then "done". The parent makes the disk full or fsync fail meanwhile.
// (A child, because the process serving a FUSE mount must not mmap files
// on it: SQLite's -shm is mmapped.)
const diskChildEnv = "HERALD_DISK_CHILD"

func diskChild(path string) int {
	db, err := embedded.Open(path, nil)
	if err != nil {
		fmt.Println("open failed:", err)
		return 1
	}
	outbox, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{PollInterval: 10 * time.Millisecond})
	if err != nil {
		return 1
	}
	d, err := herald.New(&herald.Config{Store: db.Retry(), Tracker: outbox,
		Push:  map[push.Provider]push.Sender{push.APNs: pushtest.NewRecorder(push.APNs)},
		Queue: retry.Config{PollInterval: 5 * time.Millisecond}})
	if err != nil {
		return 1
	}
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		return 1
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var prefix string
		var n int
		if _, err := fmt.Sscanf(in.Text(), "send %s %d", &prefix, &n); err != nil {
			return 0
		}
		for i := range n {
			key := fmt.Sprintf("%s-%d", prefix, i)
			_, err := d.Send(ctx, herald.Message{IdempotencyKey: key, User: "ada", Transactional: true,
				Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: pushtest.DeviceToken(key),
					Notification: push.Notification{Title: key}}}})
			switch {
			case err == nil:
				fmt.Println("ok", key)
			case errors.Is(err, herald.ErrNotAccepted):
				fmt.Println("refused", key, "not-accepted")
			default:
				fmt.Println("refused", key, "other:", strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}
		fmt.Println("done")
	}
	return 0
}

type diskRig struct {
	t   *testing.T
	in  io.Writer
	out *bufio.Scanner
	ok  []string
}

// send asks the child to send n messages and returns how many it accepted
// and refused (and how: every refusal must be ErrNotAccepted).
func (r *diskRig) send(prefix string, n int) (ok, refused int) {
	r.t.Helper()
	_, err := fmt.Fprintf(r.in, "send %s %d\n", prefix, n)
	require.NoError(r.t, err)
	for r.out.Scan() {
		f := strings.Fields(r.out.Text())
		switch {
		case len(f) == 0:
		case f[0] == "done":
			return ok, refused
		case f[0] == "ok":
			ok++
			r.ok = append(r.ok, f[1])
		case f[0] == "refused":
			refused++
			require.Equal(r.t, "not-accepted", f[2], "a refusal must be ErrNotAccepted (retryable): %s", r.out.Text())
		}
	}
	r.t.Fatalf("the child stopped: %v", r.out.Err())
	return
}

// A full disk and failing fsyncs under a running Dispatcher: Send refuses
// with ErrNotAccepted (never a false success), accepts again by itself
// when space returns or fsync works again, and after a power cut every
// message it accepted is there, in a file that passes quick_check.
func TestFullDiskAndFailedFsyncNeverLie(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child on a FUSE file system")
	}
	lz := lazyfs.MountOrSkip(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), diskChildEnv+"="+filepath.Join(lz.Dir(), "herald.db"))
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := &diskRig{t: t, in: in, out: bufio.NewScanner(out)}
	require.True(t, r.out.Scan() && r.out.Text() == "ready", r.out.Text())

	ok, _ := r.send("before", 30)
	require.Equal(t, 30, ok)
	lz.SetBudget(0) // the disk is full
	ok, refused := r.send("full", 20)
	require.Equal(t, 0, ok, "nothing accepted on a full disk")
	require.Equal(t, 20, refused)
	lz.SetBudget(-1) // space returns
	ok, refused = r.send("after-full", 20)
	require.Equal(t, 20, ok, "accepting again by itself (%d refused)", refused)

	lz.FailFsync(true)
	ok, refused = r.send("eio", 20)
	require.Equal(t, 0, ok, "nothing accepted while fsync fails")
	require.Equal(t, 20, refused)
	lz.FailFsync(false)
	ok, refused = r.send("after-eio", 20)
	require.Equal(t, 20, ok, "accepting again by itself (%d refused)", refused)
	_, failed, full := lz.Stats()
	require.Positive(t, failed)
	require.Positive(t, full)

	// Power cut: every accepted message is on the disk.
	lz.Cut()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	require.NoError(t, lz.Remount())
	db, err := embedded.Open(filepath.Join(lz.Backing(), "herald.db"), &embedded.Config{VerifyOnOpen: true})
	require.NoError(t, err)
	defer db.Close()
	kf := db.Retry().(retry.KeyFinder)
	for _, key := range r.ok {
		_, err := kf.JobIDByKey(context.Background(), key)
		require.NoError(t, err, "%s was accepted and is gone: a false success", key)
	}
	t.Logf("accepted %d, refused while full or failing: 40, false successes 0; failed fsyncs %d, refused writes %d", len(r.ok), failed, full)
}
