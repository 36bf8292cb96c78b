// Package multiproc runs the many-hosts test of the server-backed stores:
// worker processes (the test binary re-executed) share one queue, one is
// killed, and the parent checks that every job completed, counting the
// repeats. Tests of postgres and redisstore use it.
package multiproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Env names the variables a worker process reads.
const (
	EnvWorker = "HERALD_MULTIPROC_WORKER" // the ledger file; set: this process is a worker
	EnvTarget = "HERALD_MULTIPROC_TARGET" // the store's address (schema or prefix)
)

// Worker runs a worker process on store until SIGTERM or SIGKILL: it works
// "send" jobs, appending each job's ID to the ledger file as the "send".
// It returns the process's exit code.
func Worker(store retry.Store) int {
	ledger, err := os.OpenFile(os.Getenv(EnvWorker), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		return 1
	}
	q, err := retry.New(store, &retry.Config{
		Lanes:               map[string]retry.LaneConfig{retry.DefaultLane: {Concurrency: 16}},
		LeaseDuration:       leaseFromEnv(),
		MaintenanceInterval: 200 * time.Millisecond,
		PollInterval:        20 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "queue:", err)
		return 1
	}
	q.HandleFunc("send", func(_ context.Context, j *retry.Job) error {
		_, err := ledger.WriteString(strconv.FormatInt(j.ID, 10) + "\n")
		return err
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := q.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = q.Stop(sctx)
	return 0
}

// Options describe a run.
type Options struct {
	Jobs    int
	Workers int
	// KillAfter kills worker 0 once this many sends are in the ledger.
	KillAfter int
	// Target is passed to the workers in EnvTarget.
	Target string
	// InFlight counts the jobs running in the store (called right after the kill).
	InFlight func() int
	// Completed counts the completed jobs in the store.
	Completed func() int
}

// Run starts the workers, kills one, waits for every job to complete and
// checks the ledger: every job sent at least once, and repeats no more than
// the jobs in flight at the kill.
func Run(t *testing.T, ledger string, o Options) {
	t.Helper()
	var cmds []*exec.Cmd
	for range o.Workers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), EnvWorker+"="+ledger, EnvTarget+"="+o.Target)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("worker did not start: %q", line)
		}
		cmds = append(cmds, cmd)
	}
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for count(t, ledger) < o.KillAfter {
		if time.Now().After(deadline) {
			t.Fatalf("only %d sends after 3 minutes", count(t, ledger))
		}
		time.Sleep(5 * time.Millisecond) // polling the ledger file's progress
	}
	inFlight := 0
	if os.Getenv("HERALD_MULTIPROC_NOKILL") == "" {
		if err := cmds[0].Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmds[0].Wait()
		inFlight = o.InFlight()
	}
	for o.Completed() < o.Jobs {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs completed after 3 minutes", o.Completed(), o.Jobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range cmds[1:] {
		_ = c.Process.Signal(syscall.SIGTERM)
		var exit *exec.ExitError
		if err := c.Wait(); err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
	}
	cmds = nil
	sends := map[int64]int{}
	for _, id := range read(t, ledger) {
		sends[id]++
	}
	repeats := 0
	for _, n := range sends {
		repeats += n - 1
	}
	t.Logf("jobs=%d workers=%d killed=1 sent=%d repeats=%d in_flight_at_kill=%d", o.Jobs, o.Workers, len(sends), repeats, inFlight)
	if len(sends) != o.Jobs {
		t.Fatalf("%d distinct jobs sent, want %d", len(sends), o.Jobs)
	}
	if repeats > inFlight {
		t.Fatalf("%d repeats, more than the %d jobs in flight at the kill", repeats, inFlight)
	}
}

func read(t *testing.T, path string) []int64 {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []int64
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasSuffix(line, "\n") {
			continue // torn by the kill
		}
		id, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err == nil {
			out = append(out, id)
		}
	}
	return out
}

func count(t *testing.T, path string) int { return len(read(t, path)) }

// leaseFromEnv is the workers' lease: 20s unless HERALD_MULTIPROC_LEASE
// says otherwise. A lease must outlast three heartbeats' worth of store
// latency: with 2s leases, three workers and the database on two cores,
// heartbeats fell behind and 6,397 of 30,000 jobs ran twice without any
// kill; from 5s up, none did on a quiet machine. With 10s, the whole
// suite under -race beside a busy loop on one core saw PostgreSQL's
// heartbeats fall behind again (7,123 repeats against 136 in flight at
// the kill). The lease only sets how long the killed worker's jobs wait.
func leaseFromEnv() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("HERALD_MULTIPROC_LEASE")); err == nil {
		return d
	}
	return 20 * time.Second
}
