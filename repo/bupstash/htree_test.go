package bupstash

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashwrite"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
	"lukechampine.com/blake3"
)

// forgedTree is a repository in memory for hand-made hash trees: leaves
// sealed under the fixture key, and nodes with whatever counts a test
// wants, which no writer would produce.
type forgedTree struct {
	tb     testing.TB
	store  memStore
	key    *Key
	sealer *box.Sealer
	part2  [32]byte
}

func newForgedTree(tb testing.TB) *forgedTree {
	tb.Helper()
	key, err := loadKey(testdata + "/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		tb.Fatal(err)
	}
	sealer, err := box.NewSealer(key.k.DataPK.V, key.k.DataPSK.V)
	if err != nil {
		tb.Fatal(err)
	}
	return &forgedTree{tb: tb, store: memStore{}, key: key, sealer: sealer, part2: [32]byte{9}}
}

func (f *forgedTree) leaf(plain []byte) Address {
	hk := hashKey(f.key.k.DataHashKeyPart1.V, f.part2)
	var a Address
	h := blake3.New(32, hk[:])
	h.Write(plain)
	h.Sum(a[:0])
	f.store[a] = f.sealer.Seal(nil, bupstashwrite.Compress(plain, byte(CompressionNone)))
	return a
}

type entry struct {
	count uint64
	addr  Address
}

func (f *forgedTree) node(entries ...entry) Address {
	var b []byte
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.count)
		b = append(b, e.addr[:]...)
	}
	a := Address(blake3.Sum256(b))
	f.store[a] = append(b, footerNone)
	return a
}

// open returns the repository and a raw item with the given data tree,
// bypassing decodeItem's checks, as if they had let the item through.
func (f *forgedTree) open(meta HTreeMeta, dataSize uint64) (*Repository, *Item) {
	r := &Repository{
		key: f.key, log: quietLog, cache: cache.New(16 << 20), src: f.store,
		nodeSpace: cache.NewSpace(), spaces: map[[32]byte]uint64{},
		dataOpener: f.key.dataOpener(),
	}
	return r, &Item{ID: Xid{7}, DataHTree: meta, DataSize: dataSize, secret: &itemSecret{dataHashPart2: f.part2}}
}

// The audit's crash: a root node [(1, n1), (2^45, n1)] passes the count
// checks on the way to leaf 0, and recording leaf 0's length used to
// allocate a table for all 2^45+1 leaves, panicking with "makeslice: len
// out of range" inside section.locate, whose mid-function unlock then made
// it an unrecoverable "sync: unlock of unlocked mutex".
func TestHugeLeafCountDoesNotCrash(t *testing.T) {
	f := newForgedTree(t)
	l0 := f.leaf([]byte("leaf zero"))
	n1 := f.node(entry{1, l0})
	root := f.node(entry{1, n1}, entry{1 << 45, n1})
	r, it := f.open(HTreeMeta{Height: 2, DataChunkCount: 1<<45 + 1, Address: root}, 1<<46)
	file, err := r.OpenItem(it).Data()
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	buf := make([]byte, 9)
	rd := file.NewReader()
	if n, err := rd.ReadAt(buf, 0); n != 9 || string(buf) != "leaf zero" {
		t.Fatalf("leaf 0: %q, %v", buf[:n], err)
	}
	// Leaf 1 lies under an entry whose count its node contradicts.
	_, err = rd.ReadAt(buf, 9)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read past leaf 0: err = %v, want ErrCorrupt", err)
	}
	// Far offsets need the lengths of leaves never seen: each one probed
	// fails the same way, and nothing is allocated for the rest.
	if _, err := rd.ReadAt(buf, 1<<40); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read far away: err = %v, want ErrCorrupt", err)
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 32<<20 {
		t.Errorf("reading two leaves of a tree claiming 2^45 allocated %d MiB", grown>>20)
	}
}

// A count in the gigabyte range (2^30 leaves would be an 8 GiB table) only
// costs the pages of leaves actually learned.
func TestLeafLengthsAreSparse(t *testing.T) {
	for _, count := range []uint64{8, 1 << 30, 1 << 33, 1<<45 + 1, maxLeafCount} {
		l := leafLengths{count: count}
		for _, i := range []uint64{0, 1, count / 2, count - 1} {
			if err := l.set(i, int64(i%1000)+1); err != nil {
				t.Fatal(err)
			}
			if n, ok := l.get(i); !ok || n != int64(i%1000)+1 {
				t.Fatalf("count %d: leaf %d = %d, %v", count, i, n, ok)
			}
		}
		if len(l.pages) > 3 {
			t.Errorf("count %d: %d pages for 4 leaves", count, len(l.pages))
		}
		if _, ok := l.get(count/2 + 1); ok {
			t.Errorf("count %d: unknown leaf reads as known", count)
		}
		if err := l.set(0, 12345); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a second, different length for leaf 0: err = %v", err)
		}
		if err := l.set(count, 5); err != nil { // past the end: ignored
			t.Errorf("past the end: %v", err)
		}
	}
	// Length 0 (an empty stream's leaf) is a known length, not "unknown".
	var l leafLengths
	l.count = 1
	l.set(0, 0)
	if n, ok := l.get(0); !ok || n != 0 {
		t.Errorf("empty leaf: %d, %v", n, ok)
	}
}

// panicStore panics on every read, standing for any bug below a probe.
type panicStore struct{ memStore }

func (panicStore) ReadChunk(context.Context, ChunkRef, *cache.BufferPool) ([]byte, error) {
	panic("store exploded")
}

// A panic while locating an offset must stay an ordinary, recoverable
// panic that leaves the section usable: the section's mutex was unlocked
// around the probe and unlocked again by a deferred call, so any panic in
// the probe became a fatal "unlock of unlocked mutex".
func TestLocatePanicLeavesSectionUsable(t *testing.T) {
	f := newForgedTree(t)
	leaves := [][]byte{[]byte("first leaf "), []byte("second leaf")}
	var entries []entry
	for _, l := range leaves {
		entries = append(entries, entry{1, f.leaf(l)})
	}
	root := f.node(entries...)
	r, it := f.open(HTreeMeta{Height: 1, DataChunkCount: 2, Address: root}, 22)
	o := r.OpenItem(it)
	file, _ := o.Data()
	// Learn the root node and nothing else, then break the store.
	if _, err := o.data.leafAddress(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	good := r.src
	r.src = panicStore{}
	func() {
		defer func() {
			if p := recover(); p == nil {
				t.Fatal("no panic")
			}
		}()
		file.NewReader().ReadAt(make([]byte, 4), 13)
	}()
	r.src = good
	done := make(chan error, 1)
	buf := make([]byte, 4)
	go func() {
		_, err := file.NewReader().ReadAt(buf, 13)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || string(buf) != "cond" {
			t.Fatalf("after the panic: %q, %v", buf, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("section still locked after a panic")
	}
}

// Counts that a tree's own nodes contradict are found on every path, not
// only the first: leaves under a lying entry fail, the others still read.
func TestNodeCountsCheckedOnEveryPath(t *testing.T) {
	f := newForgedTree(t)
	a, b := f.leaf([]byte("aaaa")), f.leaf([]byte("bbbb"))
	good := f.node(entry{1, a}, entry{1, b})
	short := f.node(entry{1, a})
	root := f.node(entry{2, good}, entry{2, short}) // the second child holds 1 leaf, not 2
	r, it := f.open(HTreeMeta{Height: 2, DataChunkCount: 4, Address: root}, 16)
	o := r.OpenItem(it)
	for n, wantErr := range []bool{false, false, true, true} {
		_, err := o.data.leafAddress(context.Background(), uint64(n))
		if (err != nil) != wantErr || (err != nil && !errors.Is(err, ErrCorrupt)) {
			t.Errorf("leaf %d: err = %v", n, err)
		}
	}
	data, _ := o.Data()
	got, err := io.ReadAll(data.NewReader())
	if !errors.Is(err, ErrCorrupt) || !bytes.Equal(got, []byte("aaaabbbb")) {
		t.Fatalf("read %q, err %v", got, err)
	}
}

// FuzzLeafAddress walks trees whose node counts are fuzzed while every child
// address is fixed to a real node, so that the descent reaches the count
// checks at every level (FuzzParseNode, which derives the address from its
// input, stops at parsing). The walk must agree with a direct reading of
// docs/bupstash-format.md §7.3 and §7.4: it finds leaf n exactly when every
// node on the path has non-zero counts (all 1 at height 1) summing to what
// its parent promised.
func FuzzLeafAddress(f *testing.F) {
	u64s := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	f.Add(uint64(3), uint64(0), []byte(nil), []byte(nil), u64s(1, 1, 1))
	f.Add(uint64(6), uint64(4), []byte(nil), u64s(3, 3), u64s(1, 1, 1))
	f.Add(uint64(1<<45+1), uint64(1), []byte(nil), u64s(1, 1<<45), u64s(1))
	f.Add(uint64(12), uint64(11), u64s(6, 6), u64s(3, 3), u64s(1, 1, 1))
	f.Add(uint64(0), uint64(0), []byte(nil), []byte(nil), u64s(0))
	f.Add(uint64(1<<64-1), uint64(7), []byte(nil), u64s(1<<63, 1<<63-1), u64s(1))
	ft := newForgedTree(f)
	leaf := Address{0xaa} // never read: only its address is returned
	f.Fuzz(func(t *testing.T, total, n uint64, top, mid, bottom []byte) {
		levels := [][]uint64{nil, counts(bottom), counts(mid), counts(top)}
		ft.store = memStore{} // only this tree's nodes
		if len(levels[1]) == 0 || len(levels[1]) > 64 || len(levels[2]) > 64 || len(levels[3]) > 64 {
			return
		}
		height := 1
		switch {
		case len(levels[3]) > 0:
			height = 3
		case len(levels[2]) > 0:
			height = 2
		}
		addr := leaf
		for h := 1; h <= height; h++ {
			var es []entry
			for _, c := range levels[h] {
				es = append(es, entry{c, addr})
			}
			addr = ft.node(es...)
		}
		r, it := ft.open(HTreeMeta{Height: uint64(height), DataChunkCount: total, Address: addr}, total)
		tree := r.OpenItem(it).data
		for _, k := range []uint64{n, n + 1} { // the second may use the cached height-1 node
			got, err := tree.leafAddress(context.Background(), k)
			want := walkModel(levels, height, total, k)
			if (err == nil) != want {
				t.Fatalf("height %d, total %d, counts %v: leaf %d: err = %v, model says valid=%v", height, total, levels[1:height+1], k, err, want)
			}
			if err == nil && got != leaf {
				t.Fatalf("leaf %d: address %s", k, got)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("leaf %d: err = %v, want ErrCorrupt", k, err)
			}
		}
	})
}

func counts(b []byte) []uint64 {
	var out []uint64
	for len(b) >= 8 {
		out = append(out, binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	return out
}

// walkModel is docs/bupstash-format.md §7.3 with every check of §7.4, over
// a tree whose nodes at one level are all the same node.
func walkModel(levels [][]uint64, height int, total, n uint64) bool {
	if n >= total {
		return false
	}
	count := total
	for h := height; h >= 1; h-- {
		var sum uint64
		next := uint64(0)
		found := false
		for _, c := range levels[h] {
			if c == 0 || (h == 1 && c != 1) || sum+c < sum {
				return false
			}
			if !found && n < sum+c {
				found, next, n = true, c, n-sum
			}
			sum += c
		}
		if sum != count || !found {
			return false
		}
		count = next
	}
	return true
}

// countingStore counts the reads of each chunk.
type countingStore struct {
	memStore
	mu    sync.Mutex
	reads map[Address]int
}

func (s *countingStore) ReadChunk(ctx context.Context, ref ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	s.mu.Lock()
	s.reads[ref.Addr]++
	s.mu.Unlock()
	return s.memStore.ReadChunk(ctx, ref, pool)
}

// Readers starting at once at distinct offsets far into a file all need
// the lengths of the leaves before their offsets: each leaf is probed
// once for all of them, not once per reader (which made N readers of a
// large item read every envelope N times).
func TestConcurrentReadersShareLeafProbes(t *testing.T) {
	f := newForgedTree(t)
	const leaves, leafLen, readers = 64, 1000, 16
	var entries []entry
	var want []byte
	for i := range leaves {
		l := bytes.Repeat([]byte{byte('a' + i%26)}, leafLen)
		l[0] = byte(i)
		want = append(want, l...)
		entries = append(entries, entry{1, f.leaf(l)})
	}
	root := f.node(entries...)
	r, it := f.open(HTreeMeta{Height: 1, DataChunkCount: leaves, Address: root}, uint64(len(want)))
	counting := &countingStore{memStore: f.store, reads: map[Address]int{}}
	r.src = counting
	file, err := r.OpenItem(it).Data()
	if err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			off := int64(leaves-readers+i) * leafLen
			buf := make([]byte, 10)
			if _, err := file.NewReader().ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+10]) {
				t.Errorf("reader %d: %q, %v", i, buf, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, e := range entries {
		// A probe, and for the readers' own leaves a decode.
		if n := counting.reads[e.addr]; n > 2 {
			t.Errorf("leaf %d read %d times by %d readers", i, n, readers)
		}
	}
}
