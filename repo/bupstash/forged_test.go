package bupstash_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
)

// Tests over items forged with bupstashtest: shapes and formats that no
// fixture has.

const fixtures = "../../testdata"

var quiet = slog.New(slog.DiscardHandler)

// fixtureKey is the primary key items are forged for.
var fixtureKey = filepath.Join(fixtures, "bupstash-0.12.1/keys/primary.key")

func newForged(t testing.TB, schema int) *bupstashtest.Repo {
	t.Helper()
	return bupstashtest.Create(t, filepath.Join(t.TempDir(), "repo"), fixtureKey, schema)
}

func openForged(t testing.TB, f *bupstashtest.Repo) *bupstash.Repository {
	t.Helper()
	r, err := bupstash.Open(context.Background(), f.Dir, f.Key, bupstash.Options{Cache: cache.New(32 << 20), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// loadForgedSnapshot forges snap as the one item of a new repository
// (schema 8) and returns it opened, with its tree loaded.
func loadForgedSnapshot(t testing.TB, snap bupstashtest.Snapshot) (*bupstash.OpenItem, *bupstash.Tree) {
	t.Helper()
	f := newForged(t, 8)
	f.AddSnapshot(snap)
	r := openForged(t, f)
	items, err := r.Items(context.Background())
	if err != nil || len(items) != 1 {
		t.Fatalf("%d items, %v", len(items), err)
	}
	o := r.OpenItem(items[0])
	tr, err := o.LoadTree(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return o, tr
}

// itemErrs maps the ids of items that failed to decode to their errors.
func itemErrs(err error) map[bupstash.Xid]error {
	out := map[bupstash.Xid]error{}
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ie *bupstash.ItemError
		if errors.As(err, &ie) {
			out[ie.ID] = ie.Err
		}
	}
	walk(err)
	return out
}

// A tree's leaf count comes from the item's plaintext metadata. Counts
// that cannot be (more leaves than the stream has bytes, more than a
// height-1 node can hold, beyond 2^40) are refused when the item is
// listed, before any reader sizes anything by them.
func TestImpossibleLeafCountsAreRejected(t *testing.T) {
	f := newForged(t, 8)
	l0 := f.DataLeaf([]byte("leaf zero"), bupstash.CompressionNone)
	n1 := f.Node(bupstashtest.NodeEntry{Count: 1, Addr: l0})
	liar := f.Node(bupstashtest.NodeEntry{Count: 1, Addr: n1}, bupstashtest.NodeEntry{Count: 1 << 45, Addr: n1})
	empty := f.DataHTree(nil, bupstash.CompressionNone)
	idx := f.IndexHTree([][]byte{(&bupstashtest.Entry{Path: ".", Mode: bupstash.ModeDir | 0o755}).Encode(5, bupstashtest.Relative{}, bupstashtest.Absolute{})}, bupstash.CompressionNone)

	bad := map[bupstash.Xid]string{
		f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 2, DataChunkCount: 1<<45 + 1, Address: liar}, DataSize: 1 << 50}):               "impossible tree shape",
		f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 2, DataChunkCount: 1 << 33, Address: liar}, DataSize: 100}):                     "claims 8589934592 leaves for a 100-byte stream",
		f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 1, DataChunkCount: 1 << 22, Address: liar}, DataSize: 1 << 30}):                 "impossible tree shape",
		f.AddItem(bupstashtest.Item{DataHTree: empty, IndexHTree: &bupstash.HTreeMeta{Height: 1, DataChunkCount: 9, Address: idx.Address}, IndexSize: 3}): "index tree claims 9 leaves",
	}
	good := f.AddItem(bupstashtest.Item{DataHTree: empty, DataSize: 0})
	// A liar within the bounds lists, and fails when read past what its
	// nodes back up.
	lies := f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 2, DataChunkCount: 1<<33 + 1, Address: f.Node(
		bupstashtest.NodeEntry{Count: 1, Addr: n1}, bupstashtest.NodeEntry{Count: 1 << 33, Addr: n1})}, DataSize: 1 << 34})

	r := openForged(t, f)
	items, err := r.Items(context.Background())
	errs := itemErrs(err)
	for id, want := range bad {
		if e := errs[id]; !errors.Is(e, bupstash.ErrCorrupt) || !strings.Contains(e.Error(), want) {
			t.Errorf("item %s: err = %v, want ErrCorrupt saying %q", id, e, want)
		}
	}
	if len(items) != 2 || len(errs) != len(bad) {
		t.Fatalf("%d items listed, %d refused: %v", len(items), len(errs), err)
	}
	it, _ := bupstash.FindItem(items, good.String())
	if it == nil || it.DataSize != 0 {
		t.Fatalf("the empty item: %+v", it)
	}
	it, _ = bupstash.FindItem(items, lies.String())
	data, err := r.OpenItem(it).Data()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := data.NewReader().ReadAt(buf, 0)
	if string(buf[:9]) != "leaf zero" || !errors.Is(err, bupstash.ErrCorrupt) {
		t.Fatalf("read %q, err %v", buf[:n], err)
	}
}

// oldSnapshot is a small tree whose files straddle 64 KiB leaves in every
// way: inside one leaf, across two and three, ending exactly on a
// boundary, empty.
func oldSnapshot() []bupstashtest.Entry {
	fill := func(n int, seed byte) []byte {
		b := make([]byte, n)
		x := uint32(seed) + 1
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		return b
	}
	link := "a.txt"
	return []bupstashtest.Entry{
		{Path: ".", Mode: bupstash.ModeDir | 0o755, Nlink: 3, Mtime: 1600000000},
		{Path: "a.txt", Mode: bupstash.ModeRegular | 0o644, Content: fill(5000, 1), UID: 1000, GID: 100,
			Mtime: 1600000001, MtimeNsec: 123456789, Ino: 11, Nlink: 1, Xattrs: map[string][]byte{"user.k": []byte("v")}},
		{Path: "big.bin", Mode: bupstash.ModeRegular | 0o600, Content: fill(200000, 2), Ino: 12, Nlink: 1},
		{Path: "dir", Mode: bupstash.ModeDir | 0o700, Nlink: 2, Ino: 13},
		{Path: "empty", Mode: bupstash.ModeRegular | 0o644, Ino: 14, Nlink: 1},
		{Path: "link", Mode: bupstash.ModeSymlink | 0o777, Link: &link, Ino: 15, Nlink: 1},
		{Path: "upto-boundary", Mode: bupstash.ModeRegular | 0o644, Content: fill(4*65536-205000, 3), Ino: 16, Nlink: 1},
		{Path: "dir/x", Mode: bupstash.ModeRegular | 0o644, Content: fill(70000, 4), Ino: 17, Nlink: 1},
		{Path: "dir/y", Mode: bupstash.ModeRegular | 0o644, Content: []byte("end"), Ino: 18, Nlink: 1},
	}
}

// Item metadata V1 and V2 and index entries V1 and V2
// (docs/bupstash-format.md §8.2, §8.3, §10.3), which no fixture has:
// listed, browsed as a tree, and read at offsets through the data stream
// (their chunk cursors are unusable, docs/bupstash-format.md §10.6, and are
// written stale here, all zero, so using them would read wrong bytes).
func TestOldItemAndEntryFormats(t *testing.T) {
	ts := time.Date(2020, 9, 13, 12, 26, 40, 987654321, time.UTC)
	for _, tt := range []struct {
		item, entry int
		schema      int
	}{{1, 1, 5}, {1, 2, 5}, {2, 2, 5}, {2, 1, 6}, {2, 3, 8}} {
		t.Run(fmt.Sprintf("item V%d entries V%d", tt.item, tt.entry), func(t *testing.T) {
			f := newForged(t, tt.schema)
			entries := oldSnapshot()
			snap := f.AddSnapshot(bupstashtest.Snapshot{
				Item:        bupstashtest.Item{Format: tt.item, Timestamp: ts, Tags: map[string]string{"name": "old.tar"}},
				EntryFormat: tt.entry, Entries: entries, LeafSize: 65536, IndexLeafSize: 97,
				Compression: bupstash.CompressionLZ4,
			})
			rawData := bytes.Repeat([]byte("raw item "), 20000)
			raw := f.AddRaw(bupstashtest.Item{Format: tt.item, Timestamp: ts.Add(time.Second), Tags: map[string]string{"name": "r.bin"}},
				rawData, 50000, bupstash.CompressionNone)

			r := openForged(t, f)
			items, err := r.Items(context.Background())
			if err != nil || len(items) != 2 {
				t.Fatalf("%d items, %v", len(items), err)
			}
			it, rawIt := items[0], items[1]
			wantTS := ts.Truncate(time.Millisecond) // V2: milliseconds
			if tt.item == 1 {
				wantTS = ts // V1: the RFC 3339 string keeps nanoseconds
			}
			if it.ID != snap || rawIt.ID != raw || it.Format != tt.item || !it.Timestamp.Equal(wantTS) ||
				it.Tags["name"] != "old.tar" || !it.HasIndex() || rawIt.HasIndex() || rawIt.DataSize != uint64(len(rawData)) {
				t.Fatalf("listed %+v and %+v", it, rawIt)
			}
			o := r.OpenItem(it)

			// The index, streamed.
			idx, err := o.Index()
			if err != nil {
				t.Fatal(err)
			}
			var got []*bupstash.IndexEntry
			for {
				e, err := idx.Next(context.Background())
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, e)
			}
			if len(got) != len(entries) {
				t.Fatalf("%d entries, want %d", len(got), len(entries))
			}
			var off uint64
			for i, e := range got {
				w := entries[i]
				if string(e.Path) != w.Path || e.Mode != w.Mode || e.Size != uint64(len(w.Content)) || e.Version != tt.entry ||
					e.StreamOffset != off || e.HasCursor != (tt.entry >= 3) || (e.DataHash != nil) != (tt.entry >= 2 && e.IsRegular()) {
					t.Fatalf("entry %d = %+v", i, e)
				}
				off += e.Size
				if !e.IsRegular() {
					continue
				}
				file, err := o.File(e)
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, w.Path, file, w.Content)
			}
			if string(got[1].Xattrs[0].Value) != "v" || got[1].MtimeNsec != 123456789 || string(got[5].Link) != "a.txt" {
				t.Errorf("attributes lost: %+v %+v", got[1], got[5])
			}

			// The tree, and its files.
			tree, err := o.LoadTree(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			dir, ok := tree.Lookup(0, []byte("dir"))
			x, okx := tree.Lookup(dir, []byte("x"))
			if !ok || !okx || len(tree.Children(0)) != 6 || tree.Attr(dir).Mode != bupstash.ModeDir|0o700 {
				t.Fatalf("tree: dir %v, x %v, %d root children", ok, okx, len(tree.Children(0)))
			}
			file, err := tree.File(o, x)
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, "dir/x", file, entries[7].Content)

			// The whole stream as tar, as `bupstash get` would write it.
			var tarball bytes.Buffer
			if err := dump.Tar(context.Background(), o, &tarball); err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(&tarball)
			for i := 0; ; i++ {
				h, err := tr.Next()
				if err == io.EOF {
					if i != len(entries) {
						t.Fatalf("tar holds %d entries", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(tr)
				if !bytes.Equal(b, entries[i].Content) {
					t.Fatalf("tar entry %s: %d bytes differ", h.Name, len(b))
				}
			}

			// The raw item.
			data, err := r.OpenItem(rawIt).Data()
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, "raw", data, rawData)
		})
	}
}

// checkFile reads f whole, then at offsets around every 64 KiB leaf
// boundary and at random, from fresh readers (so leaf lengths are learned
// out of order), comparing with want.
func checkFile(t *testing.T, name string, f *bupstash.File, want []byte) {
	t.Helper()
	if f.Size() != int64(len(want)) {
		t.Fatalf("%s: size %d, want %d", name, f.Size(), len(want))
	}
	b, err := io.ReadAll(f.NewReader())
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("%s: read whole: %d bytes, %v", name, len(b), err)
	}
	offs := []int64{int64(len(want)) - 1, int64(len(want)) / 2, 0}
	for o := int64(65536 - 10); o < int64(len(want)); o += 65536 {
		offs = append(offs, o)
	}
	for _, off := range offs {
		if off < 0 {
			continue
		}
		buf := make([]byte, 100)
		n, err := f.NewReader().ReadAt(buf, off)
		end := min(off+100, int64(len(want)))
		if (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], want[off:end]) {
			t.Fatalf("%s: read at %d: %d bytes, %v", name, off, n, err)
		}
	}
}

// What V1 and V2 metadata must still prove: the plaintext hash (V1/V2
// hash the plaintext alone), a parseable V1 timestamp.
func TestOldItemFormatsAreVerified(t *testing.T) {
	f := newForged(t, 5)
	tree := f.DataHTree([][]byte{[]byte("x")}, bupstash.CompressionNone)
	bad := map[bupstash.Xid]string{
		f.AddItem(bupstashtest.Item{Format: 1, DataHTree: tree, DataSize: 1, BadHash: true}):                  "does not match its signed hash",
		f.AddItem(bupstashtest.Item{Format: 2, DataHTree: tree, DataSize: 1, BadHash: true}):                  "does not match its signed hash",
		f.AddItem(bupstashtest.Item{Format: 1, DataHTree: tree, DataSize: 1, TimestampText: "yesterday-ish"}): "timestamp",
	}
	good := f.AddItem(bupstashtest.Item{Format: 1, DataHTree: tree, DataSize: 1, TimestampText: "2021-03-04T05:06:07+02:00",
		SecretCompression: bupstash.CompressionZstd, Tags: map[string]string{"long": strings.Repeat("tag", 100)}})
	items, err := openForged(t, f).Items(context.Background())
	errs := itemErrs(err)
	for id, want := range bad {
		if e := errs[id]; !errors.Is(e, bupstash.ErrCorrupt) || !strings.Contains(e.Error(), want) {
			t.Errorf("item %s: %v, want %q", id, e, want)
		}
	}
	if len(items) != 1 || items[0].ID != good || !items[0].Timestamp.Equal(time.Date(2021, 3, 4, 3, 6, 7, 0, time.UTC)) {
		t.Fatalf("items %v", items)
	}
}
