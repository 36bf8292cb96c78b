package embedded_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/audience/audiencetest"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/checkpoint/checkpointtest"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/eligibility/eligibilitytest"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/inbox/inboxtest"
	"github.com/heraldhq/herald/internal/storereg"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
	"github.com/heraldhq/herald/tracking"
	trackingstoretest "github.com/heraldhq/herald/tracking/storetest"
)

func openDB(t *testing.T, path string) *embedded.DB {
	t.Helper()
	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestRetryConformance(t *testing.T) {
	t.Parallel()
	paths := storereg.New[retry.Store]()
	storetest.Run(t, func(t *testing.T) retry.Store {
		path := filepath.Join(t.TempDir(), "herald.db")
		s := openDB(t, path).Retry()
		paths.Put(s, path)
		return s
	}, &storetest.Options{
		Reopen: func(t *testing.T, s retry.Store) retry.Store {
			path := paths.Get(s)
			require.NoError(t, s.Close())
			return openDB(t, path).Retry()
		},
	})
}

func TestOpenRefusesASecondOpener(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "herald.db")
	openDB(t, path)
	_, err := embedded.Open(path, nil)
	require.ErrorIs(t, err, embedded.ErrLocked)
}

func TestOpenRefusesCorruptFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not a database, it is a text file that is long enough to have a header"), 0o600))
	_, err := embedded.Open(garbage, nil)
	require.ErrorIs(t, err, embedded.ErrCorrupt)
	b, err := os.ReadFile(garbage)
	require.NoError(t, err)
	require.Contains(t, string(b), "not a database", "the file must be left as it was, never reset")

	// A store whose pages were damaged after it was written.
	damaged := filepath.Join(dir, "damaged.db")
	db, err := embedded.Open(damaged, nil)
	require.NoError(t, err)
	q, err := retry.New(db.Retry(), nil)
	require.NoError(t, err)
	batch := make([]retry.EnqueueParams, 2000)
	for i := range batch {
		batch[i] = retry.EnqueueParams{Kind: "k", Payload: make([]byte, 200)}
	}
	_, err = q.EnqueueBatch(context.Background(), batch)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Remove(damaged + suffix)
	}
	f, err := os.OpenFile(damaged, os.O_RDWR, 0)
	require.NoError(t, err)
	st, err := f.Stat()
	require.NoError(t, err)
	junk := make([]byte, 4096*8)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	_, err = f.WriteAt(junk, st.Size()/2)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = embedded.Open(damaged, &embedded.Config{VerifyOnOpen: true})
	require.ErrorIs(t, err, embedded.ErrCorrupt)
}

func TestOpenRefusesAnotherApplicationsFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	// A valid SQLite file made by something else: the smallest one is a
	// header with an empty schema; make it through the embedded store's
	// own driver to avoid a second SQLite binding.
	db, err := embedded.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.NoError(t, embedded.SetApplicationIDForTest(path, 0x1234))
	_, err = embedded.Open(path, nil)
	require.ErrorIs(t, err, embedded.ErrCorrupt)
	require.ErrorContains(t, err, "another application")
}

func TestConcurrentEnqueuesShareCommits(t *testing.T) {
	t.Parallel()
	db := openDB(t, filepath.Join(t.TempDir(), "herald.db"))
	q, err := retry.New(db.Retry(), nil)
	require.NoError(t, err)
	const producers = 64
	start := make(chan struct{})
	t0 := time.Now()
	errs := make(chan error, producers)
	for range producers {
		go func() {
			<-start
			for range 10 {
				if _, err := q.Enqueue(context.Background(), retry.EnqueueParams{Kind: "k"}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	close(start)
	for range producers {
		require.NoError(t, <-errs)
	}
	st := db.WriteStats()
	require.Equal(t, uint64(producers*10), st.Writes)
	// Without group commit every enqueue is its own commit (and fsync).
	require.Less(t, st.Commits, st.Writes/2, "group commit must share commits between producers: %+v", st)
	// The writer's busy time is counted: more than nothing, less than the
	// wall time since Open.
	require.Positive(t, st.Busy)
	require.Less(t, st.Busy, time.Since(t0)+time.Second)
	t.Logf("%d enqueues in %d commits", st.Writes, st.Commits)
}

func TestCappingConformance(t *testing.T) {
	t.Parallel()
	paths := storereg.New[capping.Store]()
	cappingtest.Run(t, func(t *testing.T) capping.Store {
		path := filepath.Join(t.TempDir(), "herald.db")
		s := openDB(t, path).Capping()
		paths.Put(s, path)
		return s
	}, &cappingtest.Options{
		Reopen: func(t *testing.T, s capping.Store) capping.Store {
			path := paths.Get(s)
			require.NoError(t, s.Close())
			return openDB(t, path).Capping()
		},
	})
}

func TestTrackingConformance(t *testing.T) {
	t.Parallel()
	paths := storereg.New[tracking.Store]()
	trackingstoretest.Run(t, func(t *testing.T) tracking.Store {
		path := filepath.Join(t.TempDir(), "herald.db")
		s := openDB(t, path).Tracking()
		paths.Put(s, path)
		return s
	}, &trackingstoretest.Options{
		Reopen: func(t *testing.T, s tracking.Store) tracking.Store {
			path := paths.Get(s)
			require.NoError(t, s.Close())
			return openDB(t, path).Tracking()
		},
	})
}

// The eligibility store in a DB's file and in a file of its own
// (EligibilityFile, shared by processes) pass the same suite.
func TestEligibilityConformance(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T, path string) eligibility.Store{
		"DB":   func(t *testing.T, path string) eligibility.Store { return openDB(t, path).Eligibility() },
		"File": func(t *testing.T, path string) eligibility.Store { return openEligibility(t, path) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			paths := storereg.New[eligibility.Store]()
			eligibilitytest.Run(t, func(t *testing.T) eligibility.Store {
				path := filepath.Join(t.TempDir(), "herald.db")
				s := open(t, path)
				paths.Put(s, path)
				return s
			}, &eligibilitytest.Options{
				Reopen: func(t *testing.T, s eligibility.Store) eligibility.Store {
					path := paths.Get(s)
					require.NoError(t, s.Close())
					return open(t, path)
				},
			})
		})
	}
}

func TestCheckpointConformance(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) (checkpoint.Store, retry.Store) {
		db := openDB(t, filepath.Join(t.TempDir(), "herald.db"))
		return db.Checkpoints(), db.Retry()
	})
}

func TestAudienceConformance(t *testing.T) {
	t.Parallel()
	paths := storereg.New[audience.Store]()
	audiencetest.Run(t, func(t *testing.T) audience.Store {
		path := filepath.Join(t.TempDir(), "herald.db")
		s := openDB(t, path).Audiences()
		paths.Put(s, path)
		return s
	}, &audiencetest.Options{
		Reopen: func(t *testing.T, s audience.Store) audience.Store {
			path := paths.Get(s)
			require.NoError(t, s.Close())
			return openDB(t, path).Audiences()
		},
	})
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	inboxtest.Run(t, func(t *testing.T) (inbox.Store, retry.Store) {
		db := openDB(t, filepath.Join(t.TempDir(), "herald.db"))
		return db.Inbox(), db.Retry()
	})
}
