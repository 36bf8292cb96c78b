package lazyfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/internal/lazyfs"
)

func write(t *testing.T, path, s string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte(s), 0)
	require.NoError(t, err)
	if sync {
		require.NoError(t, f.Sync())
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func cut(t *testing.T, lz *lazyfs.FS) {
	t.Helper()
	lz.Cut()
	require.NoError(t, lz.Remount())
}

// The file system behaves as a disk that loses power: unsynced writes are
// gone after a cut, synced ones stay, a partial overwrite reverts to the
// synced bytes, a truncate not synced is undone.
func TestCutTakesBackWhatWasNotSynced(t *testing.T) {
	lz := lazyfs.MountOrSkip(t)
	d := lz.Dir()
	write(t, filepath.Join(d, "synced"), "durable", true)
	write(t, filepath.Join(d, "unsynced"), "volatile", false)
	write(t, filepath.Join(d, "overwritten"), "first version", true)
	write(t, filepath.Join(d, "overwritten"), "SECOND", false)
	require.Equal(t, "SECONDversion", read(t, filepath.Join(d, "overwritten")))
	write(t, filepath.Join(d, "truncated"), "keep all of this", true)
	require.NoError(t, os.Truncate(filepath.Join(d, "truncated"), 4))
	cut(t, lz)
	require.Equal(t, "durable", read(t, filepath.Join(d, "synced")))
	require.Equal(t, "", read(t, filepath.Join(d, "unsynced")), "created (metadata is immediate) but its data is gone")
	require.Equal(t, "first version", read(t, filepath.Join(d, "overwritten")))
	require.Equal(t, "keep all of this", read(t, filepath.Join(d, "truncated")))
}

// A file written without an fsync and renamed over another is empty after
// a cut: harsher than ext4's ordered mode (which flushes such data before
// the rename commits), so software safe here is safe there.
func TestRenameWithoutFsyncIsHarsherThanExt4Ordered(t *testing.T) {
	lz := lazyfs.MountOrSkip(t)
	d := lz.Dir()
	write(t, filepath.Join(d, "config"), "old", true)
	write(t, filepath.Join(d, "config.tmp"), "new content", false)
	require.NoError(t, os.Rename(filepath.Join(d, "config.tmp"), filepath.Join(d, "config")))
	cut(t, lz)
	require.Equal(t, "", read(t, filepath.Join(d, "config")))
	// With the fsync the classic pattern holds.
	write(t, filepath.Join(d, "config.tmp"), "new content", true)
	require.NoError(t, os.Rename(filepath.Join(d, "config.tmp"), filepath.Join(d, "config")))
	cut(t, lz)
	require.Equal(t, "new content", read(t, filepath.Join(d, "config")))
}

// A failed fsync drops what it covered (never "safe later"); a full disk
// refuses writes with ENOSPC until space returns.
func TestFailedFsyncAndFullDisk(t *testing.T) {
	lz := lazyfs.MountOrSkip(t)
	d := lz.Dir()
	write(t, filepath.Join(d, "f"), "good", true)
	lz.FailFsync(true)
	f, err := os.OpenFile(filepath.Join(d, "f"), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("BAD!"), 0)
	require.NoError(t, err)
	require.ErrorIs(t, f.Sync(), syscall.EIO)
	lz.FailFsync(false)
	require.NoError(t, f.Sync(), "a retried fsync succeeds…")
	require.NoError(t, f.Close())
	require.Equal(t, "good", read(t, filepath.Join(lz.Backing(), "f")), "…but the failed one's data is gone")

	lz.SetBudget(10)
	g, err := os.Create(filepath.Join(d, "g"))
	require.NoError(t, err)
	_, err = g.Write([]byte("0123456789"))
	require.NoError(t, err)
	_, err = g.Write([]byte("x"))
	require.True(t, errors.Is(err, syscall.ENOSPC), "got %v", err)
	lz.SetBudget(-1)
	_, err = g.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, g.Close())
}
