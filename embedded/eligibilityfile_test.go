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

	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/embedded"
)

// eligibilityChildEnv re-executes the test binary as one of the processes
// sharing an eligibility file: "path|name".
const eligibilityChildEnv = "HERALD_ELIGIBILITY_CHILD"

func openEligibility(t *testing.T, path string) *embedded.EligibilityFile {
	t.Helper()
	f, err := embedded.OpenEligibility(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// sharedWrites is what each process sharing the file writes: suppressions
// of its own and, for one user and topic, choices whose times interleave
// with the other processes' (the latest, wherever it was written, wins).
const sharedWrites = 200

func writeShared(ctx context.Context, s eligibility.Store, name string, offset int) error {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range sharedWrites {
		if err := s.Suppress(ctx, eligibility.Suppression{Key: eligibility.RecipientKey("push", fmt.Sprintf("%s-%d", name, i)),
			Channel: "push", Masked: "t…", Reason: "apns 410", Source: "provider", At: base}); err != nil {
			return fmt.Errorf("%s: suppress %d: %w", name, i, err)
		}
		at := i*3 + offset
		if err := s.SetPreference(ctx, eligibility.Preference{User: "ada", Topic: "category:news", OptedOut: at%2 == 0,
			At: base.Add(time.Duration(at) * time.Second)}); err != nil {
			return fmt.Errorf("%s: preference %d: %w", name, i, err)
		}
	}
	return nil
}

// eligibilityChild is one of the other processes: it writes its share
// and checks it sees the parent's first suppression.
func eligibilityChild() int {
	path, name, _ := strings.Cut(os.Getenv(eligibilityChildEnv), "|")
	f, err := embedded.OpenEligibility(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	ctx := context.Background()
	offset, _ := strconv.Atoi(name[len(name)-1:])
	if err := writeShared(ctx, f, name, offset); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, ok, err := f.Suppressed(ctx, eligibility.RecipientKey("push", "parent-0")); !ok || err != nil {
		fmt.Fprintln(os.Stderr, "the parent's suppression is not seen:", ok, err)
		return 1
	}
	return 0
}

// Three processes write to one eligibility file at once: none fails on
// the others' locks, each sees what the others wrote, and the latest
// preference wins whichever process wrote it.
func TestEligibilityFileSharedByProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "eligibility.db")
	f := openEligibility(t, path)
	require.NoError(t, f.Suppress(ctx, eligibility.Suppression{Key: eligibility.RecipientKey("push", "parent-0"), Channel: "push",
		Masked: "t…", Reason: "host", Source: "host", At: time.Now()}))
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for c := 1; c <= 2; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), eligibilityChildEnv+"="+path+"|child"+strconv.Itoa(c))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[c] = fmt.Errorf("child %d: %v: %s", c, err, out)
			}
		}()
	}
	errs[0] = writeShared(ctx, f, "parent", 0)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	for _, name := range []string{"parent", "child1", "child2"} {
		for i := range sharedWrites {
			_, ok, err := f.Suppressed(ctx, eligibility.RecipientKey("push", fmt.Sprintf("%s-%d", name, i)))
			require.NoError(t, err)
			require.True(t, ok, "%s-%d", name, i)
		}
	}
	// The latest choice is at (sharedWrites-1)*3+2, written by child2: odd, so opted in.
	_, out, err := f.OptedOut(ctx, "ada", []string{"category:news"})
	require.NoError(t, err)
	require.False(t, out, "the latest choice (opted back in, by another process) must win")
}

// Neither kind of herald file opens as the other.
func TestEligibilityFileIsNotAStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "herald.db"))
	require.NoError(t, db.Close())
	_, err := embedded.OpenEligibility(filepath.Join(dir, "herald.db"))
	require.ErrorIs(t, err, embedded.ErrCorrupt)
	require.ErrorContains(t, err, "not an eligibility file")

	f := openEligibility(t, filepath.Join(dir, "eligibility.db"))
	require.NoError(t, f.Close())
	_, err = embedded.Open(filepath.Join(dir, "eligibility.db"), nil)
	require.ErrorIs(t, err, embedded.ErrCorrupt)

	require.NoError(t, f.Close(), "a second Close")
	err = f.Suppress(context.Background(), eligibility.Suppression{Key: "k"})
	require.ErrorIs(t, err, eligibility.ErrClosed)
}
