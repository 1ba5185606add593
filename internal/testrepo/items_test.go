package testrepo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashkey"

	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// TestLayout checks the files of a new repository against what
// `bupstash init` 0.12.1 writes, and the item files and oplog records of
// added items.
func TestLayout(t *testing.T) {
	t.Parallel()
	r := newRepo(t, nil)
	dir := r.Dir()
	read := func(p string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for p, want := range map[string]string{
		"meta/schema_version": "8", "meta/storage_engine": `"DirStore"`, "tx.seq": "\x00\x00\x00\x00\x00\x00\x00\x00",
		"tx.wal": "", "tx.lock": "", "repo.lock": "", "repo.oplog": "",
	} {
		if got := string(read(p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if g := read("meta/gc_generation"); len(g) != 32 || !isLowerHex(string(g)) {
		t.Errorf("gc_generation %q", g)
	}
	for _, d := range []string{"items", "data", "wal"} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}

	var ids []bupstash.Xid
	for i := range 3 {
		info, err := r.AddRaw(context.Background(), strings.NewReader(strings.Repeat("x", i)), ItemMeta{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	// The oplog is AddItem(id, metadata) ops, each metadata equal to its
	// item file.
	oplog := read("repo.oplog")
	d := bare.NewDecoder(oplog)
	for _, id := range ids {
		if op := d.Uint(); op != 0 {
			t.Fatalf("op %d", op)
		}
		if got := d.Array16(); got != id {
			t.Fatalf("oplog id %x, want %s", got, id)
		}
		item := read("items/" + id.String())
		if got := d.Fixed(len(item)); !bytes.Equal(got, item) {
			t.Fatalf("oplog metadata of %s differs from its item file", id)
		}
		if item[0] != 2 || len(item) > 34*1024 {
			t.Errorf("item %s: format byte %d, %d bytes", id, item[0], len(item))
		}
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(filepath.Join(dir, "items"))
	if len(names) != 3 {
		t.Errorf("%d item files", len(names))
	}
	// An empty raw item is one leaf with an empty plaintext: a 73-byte
	// envelope (72 bytes of overhead and the footer).
	rd := openReader(t, r, nil)
	it := findItem(t, rd, ids[0])
	if st, err := os.Stat(filepath.Join(dir, "data", it.DataHTree.Address.String())); err != nil || st.Size() != 73 {
		t.Errorf("empty leaf: %v, %v", st, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "data"))
	for _, e := range entries {
		if len(e.Name()) != 64 || !isLowerHex(e.Name()) {
			t.Errorf("stray file data/%s", e.Name())
		}
	}
}

func isLowerHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// TestRawItems checks raw items of sizes around the leaf size, with each
// compression, and their tags.
func TestRawItems(t *testing.T) {
	t.Parallel()
	for _, comp := range []Compression{Zstd, LZ4, None} {
		o := fixedLeaves()
		o.Compression = comp
		r := newRepo(t, o)
		for _, size := range []int64{0, 1, 4095, 4096, 4097, 3*4096 + 17} {
			for _, kind := range []ContentKind{ContentRandom, ContentText} {
				content := readAll(t, kind.Make(size, uint64(size)).Open())
				info, err := r.AddRaw(context.Background(), bytes.NewReader(content), ItemMeta{Source: "some/dir/file.bin"})
				if err != nil {
					t.Fatal(err)
				}
				if info.Tags["name"] != "file.bin" {
					t.Errorf("tags %v", info.Tags)
				}
				if want := max(1, uint64((size+4095)/4096)); info.DataHTree.DataChunkCount != want {
					t.Errorf("%d bytes: %d leaves, want %d", size, info.DataHTree.DataChunkCount, want)
				}
				verifyRaw(t, r, info, content)
			}
		}
	}
}

func TestTags(t *testing.T) {
	t.Parallel()
	r := newRepo(t, nil)
	ctx := context.Background()
	for _, c := range []struct {
		meta ItemMeta
		raw  bool
		want map[string]string
	}{
		{ItemMeta{}, true, map[string]string{}},
		{ItemMeta{Source: "x/y.txt"}, true, map[string]string{"name": "y.txt"}},
		{ItemMeta{Source: "/srv/www/"}, false, map[string]string{"name": "www.tar"}},
		{ItemMeta{}, false, map[string]string{"name": "snapshot.tar"}},
		{ItemMeta{NoDefaultTags: true, Tags: map[string]string{"k": "v"}}, false, map[string]string{"k": "v"}},
		{ItemMeta{Source: "a", Tags: map[string]string{"name": "custom", "host-1_x": "é"}}, true, map[string]string{"name": "custom", "host-1_x": "é"}},
	} {
		var info *ItemInfo
		var err error
		if c.raw {
			info, err = r.AddRaw(ctx, strings.NewReader("data"), c.meta)
		} else {
			info, err = r.AddSnapshot(ctx, NewTree().Source(), c.meta)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(info.Tags, c.want) {
			t.Errorf("%+v: tags %v, want %v", c.meta, info.Tags, c.want)
		}
		it := findItem(t, openReader(t, r, nil), info.ID)
		checkItemMeta(t, r, it, info)
	}
	for _, tags := range []map[string]string{
		{"bad key": "v"}, {"k": ""}, {"k=": "v"}, {"big": strings.Repeat("x", 33*1024)},
	} {
		if _, err := r.AddRaw(ctx, strings.NewReader(""), ItemMeta{Tags: tags}); err == nil {
			t.Errorf("tags %.40v accepted", tags)
		}
	}
	// Explicit timestamps are kept; default ones increase.
	ts := time.Date(2001, 2, 3, 4, 5, 6, 789e6, time.UTC)
	info, err := r.AddRaw(ctx, strings.NewReader(""), ItemMeta{Timestamp: ts})
	if err != nil || !info.Timestamp.Equal(ts) {
		t.Fatalf("timestamp %v, %v", info.Timestamp, err)
	}
	if _, err := r.AddRaw(ctx, strings.NewReader(""), ItemMeta{Timestamp: time.Unix(-1, 0)}); err == nil {
		t.Error("a pre-1970 item timestamp was accepted")
	}
}

// TestReopen adds items in two sessions, the second through Open with the
// key file, and checks listing order and the oplog.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := Create(dir, smallOptions())
	if err != nil {
		t.Fatal(err)
	}
	keyFile := dir + ".key"
	if err := r.WriteKey(keyFile); err != nil {
		t.Fatal(err)
	}
	var infos []*ItemInfo
	add := func(r *Repo, i int) {
		t.Helper()
		var info *ItemInfo
		var err error
		if i%2 == 0 {
			info, err = r.AddSnapshot(ctx, Shape{Seed: uint64(i), Files: 20}.Source(), ItemMeta{})
		} else {
			info, err = r.AddRaw(ctx, Text(5000, uint64(i)).Open(), ItemMeta{})
		}
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	for i := range 3 {
		add(r, i)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddRaw(ctx, strings.NewReader(""), ItemMeta{}); err == nil {
		t.Error("add after close succeeded")
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bupstashkey.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, nil); err == nil {
		t.Error("Create over an existing repository succeeded")
	}
	r2, err := Open(dir, key, smallOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	for i := 3; i < 5; i++ {
		add(r2, i)
	}
	items, err := openReader(t, r2, nil).Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 5 {
		t.Fatalf("%d items", len(items))
	}
	for i, it := range items {
		if it.ID != infos[i].ID {
			t.Errorf("item %d is %s, want %s (timestamps must follow commit order)", i, it.ID, infos[i].ID)
		}
		if i > 0 && !it.Timestamp.After(items[i-1].Timestamp) {
			t.Errorf("item %d: timestamp %v not after %v", i, it.Timestamp, items[i-1].Timestamp)
		}
	}
}

// TestPutKey writes items with a put-only sub key: the primary key reads
// them through the items' own hash-key second parts.
func TestPutKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner := newRepo(t, smallOptions())
	primary := owner.Key()
	put, err := NewPutKey(primary)
	if err != nil {
		t.Fatal(err)
	}
	if put.DataSK.OK || put.IdxSK.OK || put.MetadataSK.OK || put.DataHashKeyPart2 == primary.DataHashKeyPart2 {
		t.Fatal("put key has secrets or the primary's second parts")
	}
	if _, err := NewPutKey(put); err == nil {
		t.Error("a sub key derived from a sub key")
	}
	// Round trip through the key file format.
	put, err = bupstashkey.Parse(put.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(owner.Dir(), &bupstashkey.Key{ID: put.ID}, nil); err == nil {
		t.Error("a key without put fields was accepted")
	}
	owner.Close()
	r, err := Open(owner.Dir(), put, smallOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := kitchenSink(t)
	info, err := r.AddSnapshot(ctx, tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	rd := openReader(t, r, readerKey(t, primary))
	it := findItem(t, rd, info.ID)
	if it.SendKeyID != bupstash.Xid(put.ID) || it.PrimaryKeyID != bupstash.Xid(primary.ID) {
		t.Errorf("sent by %s under %s", it.SendKeyID, it.PrimaryKeyID)
	}
	o := rd.OpenItem(it)
	tree, err := o.LoadTree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := lookup(t, tree, "big.bin")
	f, err := tree.File(o, n)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f.NewReader()); !bytes.Equal(got, readAll(t, Random(100<<10, 1).Open())) {
		t.Error("file differs")
	}
	var buf bytes.Buffer
	if err := dump.Tar(ctx, o, &buf); err != nil {
		t.Fatal(err)
	}
}

// TestSubKeys checks the capabilities of derived sub keys with the
// reader: list keys see items, list-contents keys their trees, and only
// the primary key file data.
func TestSubKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRepo(t, smallOptions())
	primary := r.Key()
	info, err := r.AddSnapshot(ctx, kitchenSink(t).Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSubKey(primary, false, false, false); err == nil {
		t.Error("a sub key without capabilities")
	}
	for _, c := range []struct {
		put, list, contents  bool
		kind                 string
		canList, canContents bool
	}{
		{true, false, false, "put-only sub", false, false},
		{false, true, false, "list-only sub", true, false},
		{false, false, true, "list-contents sub", true, true},
		{true, true, true, "list-contents sub", true, true},
	} {
		sub, err := NewSubKey(primary, c.put, c.list, c.contents)
		if err != nil {
			t.Fatal(err)
		}
		k, err := bupstash.ParseKey(sub.Encode()) // through the key file format
		if err != nil {
			t.Fatal(err)
		}
		if k.Kind() != c.kind || k.CanReadData() || k.PrimaryKeyID() != bupstash.Xid(primary.ID) {
			t.Errorf("%+v: kind %q, reads data %v", c, k.Kind(), k.CanReadData())
		}
		rd, err := bupstash.Open(ctx, r.Dir(), k, bupstash.Options{Logger: quiet})
		if !c.canList {
			if err == nil {
				t.Errorf("%+v: put-only key opened the repository", c)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		it := findItem(t, rd, info.ID)
		_, err = rd.OpenItem(it).LoadTree(ctx)
		if (err == nil) != c.canContents {
			t.Errorf("%+v: LoadTree: %v", c, err)
		}
		if _, err := rd.OpenItem(it).Data(); !errors.Is(err, bupstash.ErrCannotReadData) {
			t.Errorf("%+v: Data: %v", c, err)
		}
	}
}

// TestConcurrentAdds writes items from several goroutines into one
// repository.
func TestConcurrentAdds(t *testing.T) {
	t.Parallel()
	r := newRepo(t, smallOptions())
	var wg sync.WaitGroup
	var mu sync.Mutex
	infos := map[bupstash.Xid][]byte{}
	errs := make(chan error, 12)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				content := readAll(t, Random(int64(1000*(g+1)+i), uint64(g*10+i)).Open())
				info, err := r.AddRaw(context.Background(), bytes.NewReader(content), ItemMeta{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				infos[info.ID] = content
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(infos) != 12 {
		t.Fatalf("%d items", len(infos))
	}
	items, err := openReader(t, r, nil).Items(context.Background())
	if err != nil || len(items) != 12 {
		t.Fatalf("%d items listed: %v", len(items), err)
	}
	rd := openReader(t, r, nil)
	for _, it := range items {
		f, err := rd.OpenItem(it).Data()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, f.NewReader()), infos[it.ID]) {
			t.Errorf("item %s differs", it.ID)
		}
	}
}

// TestWalkOrderChecks feeds entries out of Bupstash's walk order.
func TestWalkOrderChecks(t *testing.T) {
	t.Parallel()
	d, f := Dir, func(p string) Entry { return File(p, nil) }
	for _, c := range []struct {
		name string
		es   []Entry
		ok   bool
	}{
		{"siblings before nephews", []Entry{d("."), d("a"), d("b"), f("f"), d("a/x"), f("a/y"), f("a/x/1"), f("b/z")}, true},
		{"empty directories skipped", []Entry{d("."), d("a"), d("b"), d("c"), d("a/x"), f("c/1"), d("a/x/y")}, false},
		{"empty directories skipped in order", []Entry{d("."), d("a"), d("b"), d("c"), d("a/x"), d("a/x/y"), f("c/1")}, true},
		{"no root", []Entry{f("a")}, false},
		{"root twice", []Entry{d("."), d(".")}, false},
		{"unsorted", []Entry{d("."), f("b"), f("a")}, false},
		{"duplicate", []Entry{d("."), f("a"), f("a")}, false},
		{"bytewise", []Entry{d("."), f("B"), f("a"), f("\xe9")}, true},
		{"nephew first", []Entry{d("."), d("a"), f("a/x"), f("b")}, false},
		{"child of a file", []Entry{d("."), f("a"), f("a/x")}, false},
		{"missing parent", []Entry{d("."), f("a/x")}, false},
		{"depth first", []Entry{d("."), d("a"), d("b"), f("b/1"), f("a/1")}, false},
		{"bad path", []Entry{d("."), f("a//b")}, false},
		{"dotdot", []Entry{d("."), f("..")}, false},
		{"socket", []Entry{d("."), {Path: "s", Mode: 0o140755}}, false},
		{"symlink without target", []Entry{d("."), {Path: "l", Mode: TypeSymlink | 0o777}}, false},
		{"content on a directory", []Entry{d("."), {Path: "x", Mode: TypeDir | 0o755, Content: String("x")}}, false},
		{"xattrs on a symlink", []Entry{d("."), {Path: "l", Mode: TypeSymlink, Link: "t", Xattrs: map[string][]byte{"user.a": nil}}}, false},
		{"device numbers on a file", []Entry{d("."), {Path: "x", DevMajor: 1}}, false},
		{"root not a directory", []Entry{f(".")}, false},
	} {
		r := newRepo(t, nil)
		_, err := r.AddSnapshot(context.Background(), Entries(c.es), ItemMeta{})
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// failingSource fails after n entries.
type failingSource struct {
	src EntrySource
	n   int
}

var errSource = errors.New("source failed")

func (s *failingSource) Next() (*Entry, error) {
	if s.n == 0 {
		return nil, errSource
	}
	s.n--
	return s.src.Next()
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errSource
	}
	n := min(len(p), r.n)
	clear(p[:n])
	r.n -= n
	return n, nil
}

// TestFailures checks that errors from sources, readers and the context
// abort the item without committing it and without leaking goroutines.
func TestFailures(t *testing.T) {
	t.Parallel()
	r := newRepo(t, smallOptions())
	ctx := context.Background()
	_, err := r.AddSnapshot(ctx, &failingSource{src: Shape{Files: 500}.Source(), n: 300}, ItemMeta{})
	if !errors.Is(err, errSource) {
		t.Errorf("failing source: %v", err)
	}
	tr := NewTree().MustAdd(File("a", Random(100<<10, 1)), File("b", readerContent{&failingReader{50 << 10}, 100 << 10}))
	if _, err := r.AddSnapshot(ctx, tr.Source(), ItemMeta{}); !errors.Is(err, errSource) {
		t.Errorf("failing file: %v", err)
	}
	if _, err := r.AddRaw(ctx, &failingReader{1 << 20}, ItemMeta{}); !errors.Is(err, errSource) {
		t.Errorf("failing raw reader: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.AddRaw(cctx, Zeros(1<<20).Open(), ItemMeta{}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled raw: %v", err)
	}
	if _, err := r.AddSnapshot(cctx, Shape{Files: 100}.Source(), ItemMeta{}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled snapshot: %v", err)
	}
	if _, err := r.AddSnapshot(ctx, Entries(nil), ItemMeta{}); err == nil {
		t.Error("empty snapshot accepted")
	}
	items, err := openReader(t, r, nil).Items(ctx)
	if err != nil || len(items) != 0 {
		t.Errorf("%d items committed: %v", len(items), err)
	}
	for _, o := range []Options{
		{MinChunkSize: 10, MaxChunkSize: 5},
		{MaxChunkSize: 21 << 20},
		{NodeMaxSize: 40},
		{SplitBits: 40},
		{Compression: 7},
	} {
		if _, err := Create(filepath.Join(t.TempDir(), "r"), &o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

// readerContent wraps a one-shot reader, for failure tests.
type readerContent struct {
	r    *failingReader
	size int64
}

func (c readerContent) Size() int64     { return c.size }
func (c readerContent) Open() io.Reader { return c.r }

// TestContentDeterminism checks that generated contents do not depend on
// how they are read, and that seeds matter.
func TestContentDeterminism(t *testing.T) {
	t.Parallel()
	for _, c := range []Content{
		Random(300<<10+7, 1), Text(300<<10+7, 1), Zeros(70000),
		Sparse(200<<10, Region{Offset: 100, Data: Text(5000, 3)}, Region{Offset: 150 << 10, Data: Random(10, 4)}),
	} {
		whole := readAll(t, c.Open())
		if int64(len(whole)) != c.Size() {
			t.Fatalf("%T: %d bytes, size %d", c, len(whole), c.Size())
		}
		rd := c.Open()
		var pieces []byte
		buf := make([]byte, 4099)
		for n := 1; ; n = n*3%4099 + 1 {
			k, err := rd.Read(buf[:n])
			pieces = append(pieces, buf[:k]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(whole, pieces) {
			t.Errorf("%T: bytes depend on read sizes", c)
		}
	}
	if bytes.Equal(readAll(t, Random(100, 1).Open()), readAll(t, Random(100, 2).Open())) {
		t.Error("seeds do not matter")
	}
	bad := Sparse(100, Region{Offset: 90, Data: Zeros(20)})
	if _, err := io.ReadAll(bad.Open()); err == nil {
		t.Error("sparse region past the end accepted")
	}
}

// TestChunker checks that leaf boundaries depend on the content only, not
// on how it is fed, and respect the bounds.
func TestChunker(t *testing.T) {
	t.Parallel()
	o, err := (Options{MinChunkSize: 1000, MaxChunkSize: 9000, SplitBits: 11}).normalize()
	if err != nil {
		t.Fatal(err)
	}
	tab := gearTable([32]byte{1})
	data := readAll(t, Random(200000, 5).Open())
	cut := func(step int) []int {
		ch := newChunker(&o, tab, newBufPool(o.MaxChunkSize, 4))
		var lens []int
		for p := data; len(p) > 0; {
			k, leaf := ch.add(p[:min(step, len(p))])
			p = p[k:]
			if leaf != nil {
				lens = append(lens, len(leaf))
			}
		}
		if leaf := ch.forceSplit(); leaf != nil {
			lens = append(lens, len(leaf))
		}
		if ch.forceSplit() != nil {
			t.Error("second forced split returned a leaf")
		}
		return lens
	}
	whole := cut(len(data))
	for _, step := range []int{1, 7, 1000, 4096} {
		if got := cut(step); fmt.Sprint(got) != fmt.Sprint(whole) {
			t.Fatalf("step %d: leaves %v, whole %v", step, got, whole)
		}
	}
	sum, contentCut := 0, false
	for i, n := range whole {
		sum += n
		if n > o.MaxChunkSize || (n < o.MinChunkSize && i != len(whole)-1) {
			t.Errorf("leaf %d: %d bytes", i, n)
		}
		contentCut = contentCut || n < o.MaxChunkSize
	}
	if sum != len(data) || !contentCut {
		t.Errorf("leaves %v", whole)
	}
	if other := gearTable([32]byte{2}); *other == *tab {
		t.Error("gear table does not depend on the key")
	}
}
