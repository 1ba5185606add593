package sealed

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/backupfs/backupfs/cache"
)

func addr(i int) [32]byte { return sha256.Sum256([]byte(fmt.Sprint(i))) }

func chunk(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	return b
}

func open(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	c, err := Open(Options{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Close() // the initial count is done
	return c
}

// What goes in comes out exactly, survives reopening, stays in its
// space, and the directory is private.
func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	c := open(t, dir, 1<<20)
	s := c.Space("ssh://a/repo")
	other := c.Space("ssh://b/repo")
	pool := new(cache.BufferPool)
	if _, ok := s.Get(addr(1), pool); ok {
		t.Fatal("hit in an empty cache")
	}
	want := chunk(1, 50000)
	s.Put(addr(1), want)
	got, ok := s.Get(addr(1), pool)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("Get = %d bytes, %v", len(got), ok)
	}
	if _, ok := other.Get(addr(1), pool); ok {
		t.Fatal("one repository's chunk offered to another")
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode: %v %v", fi.Mode(), err)
	}

	c2 := open(t, dir, 1<<20)
	got, ok = c2.Space("ssh://a/repo").Get(addr(1), nil)
	if !ok || !bytes.Equal(got, want) {
		t.Fatal("chunk lost across reopening")
	}
	if st := c2.Stats(); st.Counted != int64(len(want)) {
		t.Fatalf("reopened cache counts %d bytes, want %d", st.Counted, len(want))
	}

	s.Remove(addr(1))
	if _, ok := c2.Space("ssh://a/repo").Get(addr(1), nil); ok {
		t.Fatal("removed chunk still offered")
	}
}

// A directory made too open is made private again.
func TestPrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	open(t, dir, 1<<20)
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(Options{Dir: file, MaxBytes: 1}); err == nil {
		t.Fatal("a file accepted as the cache directory")
	}
}

// Damaged entries (empty, too large, not regular files) are misses.
func TestDamagedEntries(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, MaxChunk: 1000})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s := c.Space("r")
	for i, damage := range []func(p string){
		func(p string) { os.WriteFile(p, nil, 0o600) },
		func(p string) { os.WriteFile(p, make([]byte, 2000), 0o600) },
		func(p string) { os.Mkdir(p, 0o700) },
	} {
		p := s.path(addr(i))
		os.MkdirAll(filepath.Dir(p), 0o700)
		damage(p)
		if _, ok := s.Get(addr(i), nil); ok {
			t.Errorf("damaged entry %d served", i)
		}
	}
	s.Put(addr(9), make([]byte, 2000)) // over MaxChunk: not stored
	if s.Contains(addr(9)) {
		t.Fatal("oversized chunk stored")
	}
}

// Past the bound the least recently used chunks go, and a hit makes a
// chunk recent.
func TestEviction(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 100_000)
	s := c.Space("r")
	old := time.Now().Add(-time.Hour)
	for i := range 9 {
		s.Put(addr(i), chunk(i, 10_000))
		// Older files first; chunk 0 is then read, which makes it recent.
		os.Chtimes(s.path(addr(i)), old.Add(time.Duration(i)*time.Minute), old.Add(time.Duration(i)*time.Minute))
	}
	if _, ok := s.Get(addr(0), nil); !ok {
		t.Fatal("miss")
	}
	for i := 9; i < 13; i++ {
		s.Put(addr(i), chunk(i, 10_000))
	}
	c.Close() // waits for the eviction
	var total int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Base(p) != "lock" {
			total += fi.Size()
		}
		return nil
	})
	if total > 100_000 {
		t.Fatalf("%d bytes on disk over a bound of 100000", total)
	}
	if !s.Contains(addr(0)) {
		t.Error("the chunk just read was evicted")
	}
	if s.Contains(addr(1)) {
		t.Error("the least recently used chunk was kept")
	}
	if !s.Contains(addr(12)) {
		t.Error("the newest chunk was evicted")
	}
	if st := c.Stats(); st.Evicted == 0 || st.Counted > 100_000 {
		t.Fatalf("stats %+v", st)
	}
}

// Two caches on one directory (two processes) see each other's chunks,
// and together stay near the bound while writing concurrently.
func TestShared(t *testing.T) {
	dir := t.TempDir()
	a, b := open(t, dir, 200_000), open(t, dir, 200_000)
	a.Space("r").Put(addr(1), chunk(1, 1000))
	if got, ok := b.Space("r").Get(addr(1), nil); !ok || !bytes.Equal(got, chunk(1, 1000)) {
		t.Fatal("a chunk written by one process is not seen by the other")
	}
	var wg sync.WaitGroup
	for w, c := range []*Cache{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.Space("r")
			for i := range 100 {
				n := 1000*(w+1) + i
				s.Put(addr(n), chunk(n, 5000))
				s.Get(addr(1000*(2-w)+i), new(cache.BufferPool))
			}
		}()
	}
	wg.Wait()
	a.Close()
	b.Close()
	// One more scan settles what both wrote.
	c := open(t, dir, 200_000)
	if st := c.Stats(); st.Counted > 260_000 {
		t.Fatalf("%d bytes on disk, bound 200000", st.Counted)
	}
}
