package testrepo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"lukechampine.com/blake3"
)

func collect(t *testing.T, src EntrySource) []Entry {
	t.Helper()
	var es []Entry
	for {
		e, err := src.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, *e)
	}
}

// TestShape generates a small shape with every feature, checks what it
// promises, and reads it back.
func TestShape(t *testing.T) {
	t.Parallel()
	s := Shape{
		Seed: 42, Files: 400, FilesPerDir: 10, Depth: 5, Huge: 300 << 10,
		SparseFiles: 3, SparseSize: 256 << 10, Hardlinks: 6, XattrEvery: 7, Special: true,
		Sizes: Uniform{0, 3000},
	}
	es := collect(t, s.Source())
	if again := collect(t, s.Source()); len(again) != len(es) {
		t.Fatal("a shape is not deterministic")
	} else {
		for i := range es {
			a, b := es[i], again[i]
			if a.Path != b.Path || a.Ino != b.Ino || a.Mode != b.Mode || !a.Mtime.Equal(b.Mtime) ||
				!bytes.Equal(readAll(t, a.Open()), readAll(t, b.Open())) {
				t.Fatalf("entry %d differs between runs: %q, %q", i, a.Path, b.Path)
			}
		}
	}
	count := map[uint32]int{}
	var depth, nonUTF8, xattrs, sparse, old int
	links := map[uint64][]string{}
	for _, e := range es {
		count[e.Type()]++
		if e.Path != "." {
			depth = max(depth, strings.Count(e.Path, "/")+1)
		}
		if !utf8.ValidString(e.Path) {
			nonUTF8++
		}
		if len(e.Xattrs) > 0 {
			xattrs++
		}
		if e.IsSparse() {
			sparse++
		}
		if e.MtimeOrDefault().Unix() < 0 {
			old++
		}
		if e.Nlink > 1 && e.IsRegular() {
			links[e.Ino] = append(links[e.Ino], e.Path)
		}
	}
	// Files: the 400, their 6 second names, the huge file, the 3 sparse ones.
	if count[TypeRegular] != 400+6+1+3 || len(links) != 6 || sparse != 3 {
		t.Errorf("%d regular files, %d hard-link groups, %d sparse", count[TypeRegular], len(links), sparse)
	}
	for ino, names := range links {
		if len(names) != 2 {
			t.Errorf("inode %d has names %q", ino, names)
		}
	}
	if depth != s.Depth+1 || count[TypeDir] != 1+40 {
		t.Errorf("depth %d, %d directories", depth, count[TypeDir])
	}
	if count[TypeSymlink] == 0 || count[TypeFIFO] == 0 || count[TypeCharDev] == 0 || count[TypeBlockDev] == 0 || xattrs == 0 {
		t.Errorf("special entries: %v, %d with xattrs", count, xattrs)
	}
	t.Logf("%d entries: %v, %d non-UTF-8 names, %d pre-1970", len(es), count, nonUTF8, old)

	r := newRepo(t, smallOptions())
	info, err := r.AddSnapshot(context.Background(), s.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	verifySnapshot(t, r, info, es)
}

// TestShapeSpecialNames makes sure the special names and times do appear
// in a larger shape (they are drawn at random).
func TestShapeSpecialNames(t *testing.T) {
	t.Parallel()
	var nonUTF8, old, setuid int
	for _, e := range collect(t, Shape{Seed: 1, Files: 3000, Special: true, Sizes: Fixed(0)}.Source()) {
		if !utf8.ValidString(e.Path) {
			nonUTF8++
		}
		if e.MtimeOrDefault().Unix() < 0 {
			old++
		}
		if e.Mode&0o4000 != 0 {
			setuid++
		}
	}
	if nonUTF8 == 0 || old == 0 || setuid == 0 {
		t.Errorf("%d non-UTF-8 names, %d pre-1970 times, %d setuid", nonUTF8, old, setuid)
	}
}

func TestParseSizes(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]int64{"0": 0, "4096": 4096, "4K": 4096, "4k": 4096, "1.5M": 3 << 19, "1G": 1 << 30, "2GiB": 2 << 30, "8MB": 8 << 20} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "x", "-1", "1Q"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for s, check := range map[string]func(int64) bool{
		"fixed:4K":        func(n int64) bool { return n == 4096 },
		"uniform:1K-2K":   func(n int64) bool { return n >= 1024 && n <= 2048 },
		"lognormal:1K":    func(n int64) bool { return n >= 0 },
		"lognormal:1K:0":  func(n int64) bool { return n == 1024 },
		"lognormal:1M:10": func(n int64) bool { return n <= 64<<20 },
	} {
		d, err := ParseSizeDist(s)
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			if n := d.Sample(rng); !check(n) {
				t.Fatalf("%s drew %d", s, n)
			}
		}
		if d2, err := ParseSizeDist(d.String()); err != nil || d2.String() != d.String() {
			t.Errorf("%s does not round-trip: %v %v", s, d2, err)
		}
	}
	for _, s := range []string{"fixed", "uniform:2K-1K", "lognormal:1K:x", "pareto:1"} {
		if _, err := ParseSizeDist(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestBoundedMemory writes a raw item and a single-file snapshot 64 times
// larger than the leaf size while sampling the live heap: it must stay far
// below the items' size, since contents are streamed. (Not parallel: it
// measures the whole process.)
func TestBoundedMemory(t *testing.T) {
	const size = 24 << 20
	r := newRepo(t, &Options{MinChunkSize: 64 << 10, MaxChunkSize: 384 << 10, SplitBits: 17})
	// Warm up: the zstd encoders' fixed state (about 12 MiB) is not the
	// item's.
	if _, err := r.AddRaw(context.Background(), Text(1<<20, 1).Open(), ItemMeta{}); err != nil {
		t.Fatal(err)
	}
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.GC() // measure what is live, not garbage awaiting collection
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
		}
	}()
	h := blake3.New(32, nil)
	content := Zeros(size)
	info, err := r.AddRaw(context.Background(), io.TeeReader(content.Open(), h), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	sinfo, err := r.AddSnapshot(context.Background(), NewTree().MustAdd(File("big", Text(size, 1))).Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	grew := int64(peak.Load()) - int64(base)
	t.Logf("live heap grew by at most %d KiB writing %d MiB twice", grew>>10, size>>20)
	if grew > 8<<20 {
		t.Errorf("heap grew by %d MiB while writing %d MiB items with 384 KiB leaves", grew>>20, size>>20)
	}
	if info.DataSize != size || sinfo.DataSize != size || sinfo.DataHTree.DataChunkCount < 64 {
		t.Errorf("sizes %d, %d; %d leaves", info.DataSize, sinfo.DataSize, sinfo.DataHTree.DataChunkCount)
	}
}
