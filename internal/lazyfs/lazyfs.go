// Package lazyfs is a FUSE file system for power-loss tests (LazyFS's
// model, on go-fuse): it passes through to a directory, but every write
// not yet fsynced can be taken back. Cut is a power cut: the file system
// stops answering, and at Remount every file is as it was at its last
// successful fsync. It can also fail fsync with EIO (dropping what the
// fsync covered, as Linux drops dirty pages after a failed writeback:
// "fsyncgate"), fail writes with ENOSPC past a byte budget, and make
// fsync slow.
//
// Writes go through to the backing file at once, each with an undo
// record (the bytes it replaced, the size before the first unsynced
// write); an fsync forgets the file's undo records, a cut applies them in
// reverse. Metadata (create, rename, unlink) passes straight through and
// is durable at once; file contents are not: a file renamed over another
// without an fsync of its data is empty after a cut — harsher than ext4's
// ordered mode, which flushes such data before the rename commits.
// Directory fsyncs are not modelled.
//
// Files other than SQLite's -shm are opened with direct I/O, so no page
// cache serves data a cut took back; the -shm is mmapped and never
// fsynced, and SQLite rebuilds it at open.
package lazyfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted lazy file system.
type FS struct {
	backing, mnt string

	mu         sync.Mutex
	server     *fuse.Server
	files      map[uint64]*state // by backing inode
	cut        bool
	budget     int64 // bytes writes may still add; -1: unlimited
	failFsync  bool
	fsyncDelay time.Duration
	// Counters, for tests.
	fsyncs, failedFsyncs, refusedWrites int
}

// state is a file's unsynced past.
type state struct {
	f     *os.File // the backing file, for undo
	size0 int64    // its size at its last fsync
	dirty bool
	undo  []undo
}

type undo struct {
	off int64
	old []byte
}

// Mount mounts a lazy view of backing at mnt (both directories exist).
func Mount(backing, mnt string) (*FS, error) {
	lz := &FS{backing: backing, mnt: mnt, files: map[uint64]*state{}, budget: -1}
	return lz, lz.mount()
}

// MountOrSkip mounts a lazy file system over a new temporary directory and
// unmounts it at the end of the test. Where FUSE cannot mount (no
// /dev/fuse, not root) it skips the test, except under CI=true, where it
// fails it: CI runs as root with FUSE, so a skip there would hide a broken
// test.
//
// The test process serves the mount itself: it must not mmap files on it
// (SQLite's -shm, so no SQLite through the mount in the serving process)
// — a page fault there while the Go runtime stops the world deadlocks.
// Open stores through the mount in child processes; read results from
// Backing after Remount.
func MountOrSkip(tb testing.TB) *FS {
	tb.Helper()
	backing, mnt := tb.TempDir(), tb.TempDir()
	lz, err := Mount(backing, mnt)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("lazyfs: cannot mount FUSE under CI (root and /dev/fuse are expected): %v", err)
		}
		tb.Skipf("lazyfs: FUSE cannot mount here (needs /dev/fuse and root): %v", err)
	}
	tb.Cleanup(func() { _ = lz.Unmount() })
	return lz
}

// Dir is the mounted directory.
func (lz *FS) Dir() string { return lz.mnt }

// Backing is the directory underneath (reading it bypasses the model).
func (lz *FS) Backing() string { return lz.backing }

func (lz *FS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(lz.backing, &st); err != nil {
		return err
	}
	rootData := &fs.LoopbackRoot{Path: lz.backing, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &fs.LoopbackNode{RootData: rootData}, lz: lz}
	rootData.RootNode = root
	zero := time.Duration(0)
	srv, err := fs.Mount(lz.mnt, root, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "lazyfs", Name: "lazyfs", DisableXAttrs: true,
			MaxBackground: 64},
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
	})
	if err != nil {
		return err
	}
	lz.mu.Lock()
	lz.server = srv
	lz.mu.Unlock()
	return nil
}

// Cut is a power cut: from now on writes and fsyncs fail with EIO. Kill
// the processes using the file system, then Remount.
func (lz *FS) Cut() {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	lz.cut = true
}

// Remount unmounts, takes back every write not fsynced, and mounts again:
// what a machine finds when power returns.
func (lz *FS) Remount() error {
	if err := lz.unmount(); err != nil {
		return err
	}
	lz.mu.Lock()
	for ino, s := range lz.files {
		lz.revert(s)
		_ = s.f.Close()
		delete(lz.files, ino)
	}
	lz.cut, lz.failFsync, lz.budget, lz.fsyncDelay = false, false, -1, 0
	lz.mu.Unlock()
	return lz.mount()
}

// Unmount unmounts without taking anything back.
func (lz *FS) Unmount() error {
	err := lz.unmount()
	lz.mu.Lock()
	defer lz.mu.Unlock()
	for ino, s := range lz.files {
		_ = s.f.Close()
		delete(lz.files, ino)
	}
	return err
}

func (lz *FS) unmount() error {
	lz.mu.Lock()
	srv := lz.server
	lz.server = nil
	lz.mu.Unlock()
	if srv == nil {
		return nil
	}
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			srv.Wait()
			return nil
		}
		time.Sleep(100 * time.Millisecond) // EBUSY: a process still closing its files
	}
	// Never leave a mount whose server is gone: detach it, so nothing
	// that walks the directory later waits on it forever.
	_ = syscall.Unmount(lz.mnt, syscall.MNT_DETACH)
	return fmt.Errorf("lazyfs: unmount %s: %w", lz.mnt, err)
}

// FailFsync makes every fsync fail with EIO (dropping what it covered)
// until called with false.
func (lz *FS) FailFsync(on bool) {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	lz.failFsync = on
}

// SetBudget lets writes add at most n more bytes, then fails them with
// ENOSPC; n < 0 is unlimited (space returned).
func (lz *FS) SetBudget(n int64) {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	lz.budget = n
}

// SetFsyncDelay makes every fsync take d longer.
func (lz *FS) SetFsyncDelay(d time.Duration) {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	lz.fsyncDelay = d
}

// Stats are counts since Mount.
func (lz *FS) Stats() (fsyncs, failedFsyncs, refusedWrites int) {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	return lz.fsyncs, lz.failedFsyncs, lz.refusedWrites
}

// state returns the file's state, opening its backing file on first use.
// lz.mu is held.
func (lz *FS) state(ino uint64, path string) (*state, syscall.Errno) {
	if s := lz.files[ino]; s != nil {
		return s, 0
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	s := &state{f: f}
	lz.files[ino] = s
	return s, 0
}

// touch records the size before the first unsynced change. lz.mu is held.
func (s *state) touch() {
	if !s.dirty {
		if fi, err := s.f.Stat(); err == nil {
			s.size0 = fi.Size()
		}
		s.dirty = true
	}
}

// revert takes back a file's unsynced writes. lz.mu is held.
func (lz *FS) revert(s *state) {
	if !s.dirty {
		return
	}
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := s.undo[i]
		_, _ = s.f.WriteAt(u.old, u.off)
	}
	_ = s.f.Truncate(s.size0)
	s.undo, s.dirty = nil, false
}

// node is a loopback node whose files are lazy.
type node struct {
	*fs.LoopbackNode
	lz *FS
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
)

func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), lz: n.lz}
}

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.EmbeddedInode().Path(nil))
}

func (n *node) wrap(fh fs.FileHandle, path string) (fs.FileHandle, uint32, syscall.Errno) {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		return fh, 0, 0
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	flags := uint32(fuse.FOPEN_DIRECT_IO)
	if strings.HasSuffix(path, "-shm") {
		flags = 0 // mmapped: keep the page cache
	}
	return &file{LoopbackFile: lf, lz: n.lz, ino: st.Ino, path: path}, flags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, _, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh, n.backingPath())
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, fl, errno := n.wrap(fh, filepath.Join(n.backingPath(), name))
	return in, h, fl, errno
}

// Setattr on a path (truncate(2) without a file handle) is lazy too.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if lf, ok := f.(*file); ok {
		return lf.Setattr(ctx, in, out)
	}
	if sz, ok := in.GetSize(); ok {
		var st syscall.Stat_t
		path := n.backingPath()
		if err := syscall.Stat(path, &st); err != nil {
			return fs.ToErrno(err)
		}
		if errno := n.lz.truncating(st.Ino, path, int64(sz)); errno != 0 {
			return errno
		}
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// file is a lazy file handle.
type file struct {
	*fs.LoopbackFile
	lz   *FS
	ino  uint64
	path string
}

// PassthroughFd refuses kernel passthrough: every write must come here.
func (f *file) PassthroughFd() (int, bool) { return 0, false }

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	lz := f.lz
	lz.mu.Lock()
	switch {
	case lz.cut:
		lz.mu.Unlock()
		return 0, syscall.EIO
	case lz.budget >= 0 && int64(len(data)) > lz.budget:
		lz.refusedWrites++
		lz.mu.Unlock()
		return 0, syscall.ENOSPC
	case lz.budget >= 0:
		lz.budget -= int64(len(data))
	}
	s, errno := lz.state(f.ino, f.path)
	if errno != 0 {
		lz.mu.Unlock()
		return 0, errno
	}
	s.touch()
	old := make([]byte, len(data))
	n, _ := s.f.ReadAt(old, off)
	s.undo = append(s.undo, undo{off, old[:n]})
	w, errno := f.LoopbackFile.Write(ctx, data, off)
	lz.mu.Unlock()
	return w, errno
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	lz := f.lz
	lz.mu.Lock()
	delay := lz.fsyncDelay
	lz.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	lz.mu.Lock()
	defer lz.mu.Unlock()
	if lz.cut {
		return syscall.EIO
	}
	lz.fsyncs++
	s := lz.files[f.ino]
	if lz.failFsync {
		lz.failedFsyncs++
		if s != nil {
			lz.revert(s) // the data this fsync covered is gone, not "safe later"
		}
		return syscall.EIO
	}
	if s != nil {
		s.undo, s.dirty = nil, false // durable: nothing to take back
	}
	return 0
}

// truncating records the tail a truncate cuts off. lz.mu is not held.
func (lz *FS) truncating(ino uint64, path string, size int64) syscall.Errno {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	if lz.cut {
		return syscall.EIO
	}
	s, errno := lz.state(ino, path)
	if errno != 0 {
		return errno
	}
	s.touch()
	if fi, err := s.f.Stat(); err == nil && size < fi.Size() {
		tail := make([]byte, fi.Size()-size)
		n, _ := s.f.ReadAt(tail, size)
		s.undo = append(s.undo, undo{size, tail[:n]})
	}
	return 0
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if errno := f.lz.truncating(f.ino, f.path, int64(sz)); errno != 0 {
			return errno
		}
	}
	return f.LoopbackFile.Setattr(ctx, in, out)
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if errno := f.lz.truncating(f.ino, f.path, int64(off+size)); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}
