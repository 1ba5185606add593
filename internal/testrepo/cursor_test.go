package testrepo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// fixedLeaves cuts every leaf at exactly 4 KiB (no content-defined cuts),
// so that expected cursors can be worked out by hand.
func fixedLeaves() *Options {
	return &Options{MinChunkSize: 4096, MaxChunkSize: 4096, SplitBits: 31}
}

// readIndex returns the reader's decoded index entries of an item.
func readIndex(t *testing.T, r *Repo, info *ItemInfo) []*bupstash.IndexEntry {
	t.Helper()
	rd := openReader(t, r, nil)
	o := rd.OpenItem(findItem(t, rd, info.ID))
	idx, err := o.Index()
	if err != nil {
		t.Fatal(err)
	}
	var es []*bupstash.IndexEntry
	for {
		e, err := idx.Next(context.Background())
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
}

// TestCursorsByHand checks cursors worked out by hand from
// docs/bupstash-format.md §10.5: files ending exactly at a leaf end (end 0,
// delta 1), files spanning leaves, empty files and directories inside a
// batch, a size-0 last entry carrying the batch's forced split, and batches
// without data.
func TestCursorsByHand(t *testing.T) {
	t.Parallel()
	r := newRepo(t, fixedLeaves())
	tr := NewTree().MustAdd(
		Dir("a"),
		File("b.bin", Random(4096, 1)),
		File("c.bin", Random(10, 2)),
		Dir("d"),
		File("e.bin", Random(2*4096+5, 3)),
		File("empty", nil),
		Symlink("z", "b.bin"),
		File("a/1", Random(5000, 4)),
		Dir("d/x"),
	)
	info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path                     string
		first, delta, start, end uint64
	}{
		{".", 0, 0, 0, 0},       // a batch of its own, without data
		{"a", 0, 0, 0, 0},       // root batch starts
		{"b.bin", 0, 1, 0, 0},   // fills leaf 0 exactly
		{"c.bin", 1, 0, 0, 10},  // starts leaf 1
		{"d", 1, 0, 10, 10},     // no data, inside the batch
		{"e.bin", 1, 2, 10, 15}, // rest of leaf 1, all of leaf 2, 15 bytes of leaf 3
		{"empty", 3, 0, 15, 15}, // empty file
		{"z", 3, 1, 15, 0},      // last of the batch: carries the forced split of leaf 3
		{"a/1", 4, 2, 0, 0},     // leaf 4 whole, leaf 5 (904 bytes, forced split) whole
		{"d/x", 6, 0, 0, 0},     // a batch without data after the last leaf
	}
	got := readIndex(t, r, info)
	if len(got) != len(want) {
		t.Fatalf("%d entries", len(got))
	}
	for i, w := range want {
		g := got[i]
		if string(g.Path) != w.path || g.FirstChunk != w.first || g.ChunkDelta != w.delta || g.StartOffset != w.start || g.EndOffset != w.end {
			t.Errorf("%q: cursor leaf %d delta %d %d..%d, want %q leaf %d delta %d %d..%d",
				g.Path, g.FirstChunk, g.ChunkDelta, g.StartOffset, g.EndOffset, w.path, w.first, w.delta, w.start, w.end)
		}
	}
	if info.DataHTree.DataChunkCount != 6 {
		t.Errorf("%d leaves, want 6", info.DataHTree.DataChunkCount)
	}
	k := r.Key()
	d := decodeTree(t, r.Dir(), info.DataHTree, k.DataSK.V, k.DataPSK.V, r.dataHashKey, false)
	if fmt.Sprint(d.leafLens) != "[4096 4096 4096 15 4096 904]" {
		t.Errorf("leaf lengths %v", d.leafLens)
	}
	verifySnapshot(t, r, info, tr.Entries())
}

// TestBatchLimits checks that batches end after 128 entries and once they
// hold the batch byte limit, each starting on a fresh leaf.
func TestBatchLimits(t *testing.T) {
	t.Parallel()
	o := fixedLeaves()
	o.batchBytes = 10000
	r := newRepo(t, o)
	tr := NewTree()
	for i := range 300 {
		tr.MustAdd(File(fmt.Sprintf("many/f%03d", i), Random(50, uint64(i))))
	}
	for i := range 10 {
		tr.MustAdd(File(fmt.Sprintf("big/f%d", i), Random(3000, uint64(i))))
	}
	info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	got := readIndex(t, r, info)
	starts := map[string]bool{}
	for _, e := range got {
		if e.StartOffset == 0 && e.Size > 0 {
			starts[string(e.Path)] = true
		}
	}
	// Batch starts: entries 0, 128 and 256 of many/ (50-byte files, 6400
	// bytes per batch, leaves cut inside batches elsewhere), and
	// big/ files 0, 4 and 8 (3000-byte files: a batch closes after the
	// fourth, at 12000 bytes).
	for _, p := range []string{"many/f000", "many/f128", "many/f256", "big/f0", "big/f4", "big/f8"} {
		if !starts[p] {
			t.Errorf("%q does not start a leaf", p)
		}
	}
	for _, p := range []string{"many/f127", "many/f255", "big/f3", "big/f7"} {
		for _, e := range got {
			if string(e.Path) == p && e.EndOffset != 0 {
				t.Errorf("%q ends its batch at offset %d, not on a leaf end", p, e.EndOffset)
			}
		}
	}
	verifySnapshot(t, r, info, tr.Entries())
}

// TestNoData checks a snapshot without file data: one empty data leaf.
func TestNoData(t *testing.T) {
	t.Parallel()
	r := newRepo(t, nil)
	tr := NewTree().MustAdd(Dir("a/b/c"), Symlink("a/l", "b"), FIFO("p"), File("a/empty", nil))
	info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if info.DataSize != 0 || info.DataHTree.DataChunkCount != 1 || info.DataHTree.Height != 0 {
		t.Errorf("data tree %+v, %d bytes", info.DataHTree, info.DataSize)
	}
	verifySnapshot(t, r, info, tr.Entries())
}

// TestTallTrees forces interior nodes of three entries, so that small
// streams make trees of height 5 to 7, and checks them through the reader
// (which walks and verifies every level) and the test decoder.
func TestTallTrees(t *testing.T) {
	t.Parallel()
	o := &Options{MinChunkSize: 64, MaxChunkSize: 256, SplitBits: 6, NodeMinSize: 80, NodeMaxSize: 120}
	r := newRepo(t, o)
	content := readAll(t, Text(64<<10, 7).Open())
	info, err := r.AddRaw(context.Background(), strings.NewReader(string(content)), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if info.DataHTree.Height < 4 {
		t.Errorf("raw tree height %d with %d leaves", info.DataHTree.Height, info.DataHTree.DataChunkCount)
	}
	verifyRaw(t, r, info, content)

	tr := NewTree()
	for i := range 60 {
		tr.MustAdd(File(fmt.Sprintf("d%d/f%d", i%7, i), Text(int64(i*97), uint64(i))))
	}
	sinfo, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if sinfo.DataHTree.Height < 3 || sinfo.IndexHTree.Height < 3 {
		t.Errorf("snapshot tree heights %d and %d", sinfo.DataHTree.Height, sinfo.IndexHTree.Height)
	}
	verifySnapshot(t, r, sinfo, tr.Entries())
}

// TestHeightLimit checks that a tree taller than Bupstash allows is
// refused rather than written.
func TestHeightLimit(t *testing.T) {
	t.Parallel()
	r := newRepo(t, &Options{MinChunkSize: 16, MaxChunkSize: 16, NodeMinSize: 80, NodeMaxSize: 80})
	_, err := r.AddRaw(context.Background(), Zeros(16<<11).Open(), ItemMeta{})
	if err == nil || !strings.Contains(err.Error(), "height") {
		t.Fatalf("2048 leaves in binary nodes: %v", err)
	}
	items, err := openReader(t, r, nil).Items(context.Background())
	if err != nil || len(items) != 0 {
		t.Fatalf("items after a refused put: %d, %v", len(items), err)
	}
}

// TestStreamedEntries writes entries from a plain slice, leaving inode
// numbers and link counts to the writer, with an entry (huge xattrs)
// larger than several index leaves.
func TestStreamedEntries(t *testing.T) {
	t.Parallel()
	r := newRepo(t, &Options{MinChunkSize: 1024, MaxChunkSize: 4096, SplitBits: 10})
	big := make([]byte, 20000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	es := []Entry{
		Dir("."),
		{Path: "huge-xattr", Mode: TypeRegular | 0o644, Content: String("x"), Xattrs: map[string][]byte{"user.big": big, "user.small": {1}}},
		Dir("sub"),
		File("z", Text(10000, 1)),
		File("sub/a", Random(5000, 2)),
		{Path: "sub/b", Mode: TypeDir | 0o755, Xattrs: map[string][]byte{"user.big": big}},
	}
	info, err := r.AddSnapshot(context.Background(), Entries(es), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if info.IndexHTree.DataChunkCount < 10 {
		t.Errorf("index of %d bytes in %d leaves", info.IndexSize, info.IndexHTree.DataChunkCount)
	}
	verifySnapshot(t, r, info, expectedEntries(es))
}
