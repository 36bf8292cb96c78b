//go:build linux

package embedded_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkSync measures what a commit's sync costs on the disk under the
// test's temporary directory: a 48 KB overwrite (about a group's WAL
// pages) followed by fsync, as modernc's SQLite calls it on Linux, or by
// fdatasync, which skips the inode's timestamps.
//
//	go test -run '^$' -bench Sync -benchtime 2000x -count 3 ./embedded/
func BenchmarkSync(b *testing.B) {
	for _, m := range []struct {
		name string
		sync func(fd int) error
	}{{"fsync", syscall.Fsync}, {"fdatasync", syscall.Fdatasync}} {
		b.Run(m.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "wal"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			const size = 4 << 20
			if _, err := f.WriteAt(make([]byte, size), 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 48<<10)
			var off int64
			b.ResetTimer()
			for range b.N {
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if err := m.sync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % (size - int64(len(buf)))
			}
		})
	}
}
