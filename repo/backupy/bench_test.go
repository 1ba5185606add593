package backupy

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/backupfs/backupfs/cache"
)

var benchData = sync.OnceValues(func() ([]byte, []byte) {
	t := &testing.T{}
	dump := pgDump(48 << 20)
	key := make([]byte, 32)
	return dump, agentEncrypt(t, agentZstd(t, dump, true), key)
})

// BenchmarkDecode measures decoded MB/s of a multi-frame encrypted object:
// a first sequential read (the streaming path), a first full pass into the
// disk cache (what ls -l or a random read triggers), reads of the finished
// cache, and the frame-by-frame .zst view.
func BenchmarkDecode(b *testing.B) {
	dump, blob := benchData()
	dir := b.TempDir()
	const name = "run_bench.enc"
	if err := os.WriteFile(filepath.Join(dir, name), blob, 0o600); err != nil {
		b.Fatal(err)
	}
	kr := NewKeyring()
	kr.AddToken(mustToken(b, tokenFor(make([]byte, 32), "bench", "")), "bench")
	ctx := context.Background()
	open := func(b *testing.B, cacheDir string) (*Store, *File, *File) {
		s, err := OpenStore(ctx, dir, Options{Keys: kr, CacheDir: cacheDir, Views: AllViews, Chunks: cache.New(8 << 20)})
		if err != nil {
			b.Fatal(err)
		}
		files, err := s.Files(ctx, s.Blob(name))
		if err != nil {
			b.Fatal(err)
		}
		return s, files[0], files[1]
	}
	readSeq := func(b *testing.B, f *File, want int) {
		got := 0
		h, err := f.Open(ctx)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 128<<10)
		for off := int64(0); ; {
			n, err := h.ReadAt(ctx, buf, off)
			got += n
			off += int64(n)
			if err != nil {
				break
			}
		}
		h.Close()
		if got != want {
			b.Fatalf("read %d bytes, want %d", got, want)
		}
	}

	b.Run("stream-first-read", func(b *testing.B) {
		b.SetBytes(int64(len(dump)))
		b.ReportAllocs()
		for b.Loop() {
			s, main, _ := open(b, b.TempDir())
			readSeq(b, main, len(dump))
			s.Close()
		}
	})
	b.Run("materialise-first-pass", func(b *testing.B) {
		b.SetBytes(int64(len(dump)))
		b.ReportAllocs()
		for b.Loop() {
			s, main, _ := open(b, b.TempDir())
			if n, err := main.Size(ctx); err != nil || n != int64(len(dump)) {
				b.Fatal(n, err)
			}
			s.Close()
		}
	})
	b.Run("cached", func(b *testing.B) {
		s, main, _ := open(b, b.TempDir())
		defer s.Close()
		if _, err := main.Size(ctx); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(dump)))
		b.ReportAllocs()
		for b.Loop() {
			readSeq(b, main, len(dump))
		}
	})
	b.Run("zst-view-decrypt", func(b *testing.B) {
		s, _, zst := open(b, b.TempDir())
		defer s.Close()
		n, _ := zst.SizeKnown()
		b.SetBytes(n)
		b.ReportAllocs()
		for b.Loop() {
			// A fresh chunk cache each time, so every frame is decrypted.
			s.chunks = cache.New(8 << 20)
			readSeq(b, zst, int(n))
		}
	})
}
