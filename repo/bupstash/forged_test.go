package bupstash_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
)

// Tests over items forged with bupstashtest: shapes and formats that no
// fixture has.

const fixtures = "../../testdata"

var quiet = slog.New(slog.DiscardHandler)

func fixtureKey(t testing.TB) *bupstash.Key {
	t.Helper()
	k, err := bupstash.LoadKey(filepath.Join(fixtures, "bupstash-0.12.1/keys/primary.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newForged(t testing.TB, schema int) *bupstashtest.Repo {
	t.Helper()
	return bupstashtest.Create(t, filepath.Join(t.TempDir(), "repo"), fixtureKey(t), schema)
}

func openForged(t testing.TB, f *bupstashtest.Repo) *bupstash.Repository {
	t.Helper()
	r, err := bupstash.Open(context.Background(), f.Dir, f.Key, bupstash.Options{Cache: cache.New(32 << 20), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return r
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
	empty := f.DataTree(nil, bupstash.CompressionNone)
	idx := f.IndexTree([][]byte{(&bupstashtest.Entry{Path: ".", Mode: bupstash.ModeDir | 0o755}).Encode(5, bupstashtest.Relative{}, bupstashtest.Absolute{})}, bupstash.CompressionNone)

	bad := map[bupstash.Xid]string{
		f.AddItem(bupstashtest.Item{DataTree: bupstash.TreeMeta{Height: 2, DataChunkCount: 1<<45 + 1, Address: liar}, DataSize: 1 << 50}):              "impossible tree shape",
		f.AddItem(bupstashtest.Item{DataTree: bupstash.TreeMeta{Height: 2, DataChunkCount: 1 << 33, Address: liar}, DataSize: 100}):                    "claims 8589934592 leaves for a 100-byte stream",
		f.AddItem(bupstashtest.Item{DataTree: bupstash.TreeMeta{Height: 1, DataChunkCount: 1 << 22, Address: liar}, DataSize: 1 << 30}):                "impossible tree shape",
		f.AddItem(bupstashtest.Item{DataTree: empty, IndexTree: &bupstash.TreeMeta{Height: 1, DataChunkCount: 9, Address: idx.Address}, IndexSize: 3}): "index tree claims 9 leaves",
	}
	good := f.AddItem(bupstashtest.Item{DataTree: empty, DataSize: 0})
	// A liar within the bounds lists, and fails when read past what its
	// nodes back up.
	lies := f.AddItem(bupstashtest.Item{DataTree: bupstash.TreeMeta{Height: 2, DataChunkCount: 1<<33 + 1, Address: f.Node(
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
