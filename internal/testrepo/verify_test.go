package testrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
	"lukechampine.com/blake3"
)

// Helpers that read generated repositories back with the project's reader
// and with the test decoder, and compare everything with what was written.

var quiet = slog.New(slog.DiscardHandler)

// smallOptions give many small leaves and nodes from little data, so that
// tests exercise multi-leaf files and content-defined cuts quickly.
func smallOptions() *Options {
	return &Options{MinChunkSize: 1 << 10, MaxChunkSize: 8 << 10, SplitBits: 11}
}

func newRepo(t testing.TB, o *Options) *Repo {
	t.Helper()
	r, err := Create(filepath.Join(t.TempDir(), "repo"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// openReader opens the repository with the project's reader and the
// primary key k (the repository's own key when nil).
func openReader(t testing.TB, r *Repo, k *bupstash.Key) *bupstash.Repository {
	t.Helper()
	if k == nil {
		k = r.ReaderKey()
	}
	rd, err := bupstash.Open(context.Background(), r.Dir(), k, bupstash.Options{Cache: cache.New(32 << 20), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func findItem(t testing.TB, rd *bupstash.Repository, id bupstash.Xid) *bupstash.Item {
	t.Helper()
	items, err := rd.Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.ID == id {
			return it
		}
	}
	t.Fatalf("item %s not listed", id)
	return nil
}

// readAll reads c whole.
func readAll(t testing.TB, c io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkItemMeta compares the reader's view of an item with ItemInfo.
func checkItemMeta(t testing.TB, r *Repo, it *bupstash.Item, info *ItemInfo) {
	t.Helper()
	if it.Format != 3 || it.PrimaryKeyID != bupstash.Xid(r.Key().PrimaryKeyID) || it.SendKeyID != bupstash.Xid(r.Key().ID) {
		t.Errorf("item format %d, key %s, sent by %s", it.Format, it.PrimaryKeyID, it.SendKeyID)
	}
	if !it.Timestamp.Equal(info.Timestamp) {
		t.Errorf("timestamp %v, want %v", it.Timestamp, info.Timestamp)
	}
	if !maps.Equal(it.Tags, info.Tags) {
		t.Errorf("tags %v, want %v", it.Tags, info.Tags)
	}
	if it.DataSize != info.DataSize || it.IndexSize != info.IndexSize {
		t.Errorf("sizes %d/%d, want %d/%d", it.DataSize, it.IndexSize, info.DataSize, info.IndexSize)
	}
	if it.DataHTree != info.DataHTree {
		t.Errorf("data tree %+v, want %+v", it.DataHTree, info.DataHTree)
	}
	if info.Snapshot != it.HasIndex() || (it.HasIndex() && *it.IndexHTree != info.IndexHTree) {
		t.Errorf("index tree %v, want %+v", it.IndexHTree, info.IndexHTree)
	}
}

// expectedEntries resolves inode numbers and link counts as processBatch
// does for a streamed snapshot.
func expectedEntries(es []Entry) []Entry {
	out := slices.Clone(es)
	for i := range out {
		if out[i].Ino == 0 {
			out[i].Ino = AutoInoBase + uint64(i)
		}
		if out[i].Nlink == 0 {
			out[i].Nlink = 1
			if out[i].IsDir() {
				out[i].Nlink = 2
			}
		}
	}
	return out
}

// verifySnapshot reads a snapshot back every way the reader offers and
// checks it against want (resolved entries in walk order), and checks its
// trees and cursors with the test decoder.
func verifySnapshot(t testing.TB, r *Repo, info *ItemInfo, want []Entry) {
	t.Helper()
	ctx := context.Background()
	rd := openReader(t, r, nil)
	it := findItem(t, rd, info.ID)
	checkItemMeta(t, r, it, info)
	o := rd.OpenItem(it)

	// The index, entry by entry.
	idx, err := o.Index()
	if err != nil {
		t.Fatal(err)
	}
	var got []*bupstash.IndexEntry
	for {
		e, err := idx.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != len(want) || info.Entries != len(want) {
		t.Fatalf("%d entries read, %d reported, %d written", len(got), info.Entries, len(want))
	}
	var stream []byte
	keepStream := info.DataSize <= 64<<20
	cursors := make([]cursorEntry, len(got))
	for i, g := range got {
		w := &want[i]
		content := readAll(t, w.Open())
		if keepStream {
			stream = append(stream, content...)
		}
		checkEntry(t, g, w, content)
		cursors[i] = cursorEntry{path: string(g.Path), size: g.Size, delta: g.ChunkDelta, start: g.StartOffset, end: g.EndOffset}
	}

	// Trees and cursors, independently of the reader.
	k := r.Key()
	data := decodeTree(t, r.Dir(), it.DataHTree, k.DataSK.V, k.DataPSK.V, r.dataHashKey, keepStream)
	index := decodeTree(t, r.Dir(), *it.IndexHTree, k.IdxSK.V, k.IdxPSK.V, r.idxHashKey, false)
	short := checkCursors(t, cursors, data.leafLens, r.opts.batchBytes)
	checkLeafSizes(t, data.leafLens, r.opts, short)
	checkLeafSizes(t, index.leafLens, r.opts, nil)
	checkNodeShapes(t, data, r.opts)
	checkNodeShapes(t, index, r.opts)
	if keepStream && !bytes.Equal(data.stream, stream) {
		t.Error("data stream differs from the concatenated contents")
	}
	for i, f := range index.footers {
		if f != byte(bupstash.CompressionZstd) && f != byte(bupstash.CompressionNone) {
			t.Errorf("index leaf %d: footer %d, want zstd (or none when it does not shrink)", i, f)
		}
	}
	var total int
	for _, n := range index.leafLens {
		total += n
	}
	if uint64(total) != info.IndexSize {
		t.Errorf("index leaves hold %d bytes, metadata says %d", total, info.IndexSize)
	}

	// The whole data stream through the reader.
	if keepStream {
		df, err := o.Data()
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, df.NewReader()); !bytes.Equal(b, stream) {
			t.Error("reader's data stream differs")
		}
	}

	// Every file through the loaded tree, whole and at random offsets.
	tr, err := o.LoadTree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	inodes := map[uint64]uint32{}
	for i := range want {
		w := &want[i]
		n := lookup(t, tr, w.Path)
		a := tr.Attr(n)
		if a.Mode != w.Type()|w.Mode&^TypeMask {
			t.Errorf("%q: tree mode %o", w.Path, a.Mode)
		}
		if w.IsRegular() && w.Nlink > 1 {
			if first, ok := inodes[w.Ino]; ok && first != a.InodeRecord {
				t.Errorf("%q: hard link has inode %d, group has %d", w.Path, a.InodeRecord, first)
			}
			inodes[w.Ino] = a.InodeRecord
		}
		if !w.IsRegular() {
			if _, err := tr.File(o, n); !errors.Is(err, bupstash.ErrNotRegular) {
				t.Errorf("%q: File on a non-file: %v", w.Path, err)
			}
			continue
		}
		f, err := tr.File(o, n)
		if err != nil {
			t.Fatal(err)
		}
		content := readAll(t, w.Open())
		if b := readAll(t, f.NewReader()); !bytes.Equal(b, content) {
			t.Errorf("%q: read %d bytes differing from the %d written", w.Path, len(b), len(content))
			continue
		}
		checkRandomReads(t, f, content, rng, w.Path)
	}

	checkTar(t, o, want)
}

// checkEntry compares a decoded index entry with the entry written.
func checkEntry(t testing.TB, g *bupstash.IndexEntry, w *Entry, content []byte) {
	t.Helper()
	p := w.Path
	if string(g.Path) != p || g.Version != 5 || !g.HasCursor {
		t.Errorf("entry %q: got %q version %d", p, g.Path, g.Version)
	}
	mt, ct := w.MtimeOrDefault(), w.CtimeOrDefault()
	switch {
	case g.Mode != w.Type()|w.Mode&^TypeMask:
		t.Errorf("%q: mode %o, want %o", p, g.Mode, w.Type()|w.Mode)
	case g.Size != uint64(len(content)):
		t.Errorf("%q: size %d, want %d", p, g.Size, len(content))
	case g.UID != w.UID || g.GID != w.GID:
		t.Errorf("%q: owner %d:%d", p, g.UID, g.GID)
	case g.Mtime != mt.Unix() || g.MtimeNsec != uint32(mt.Nanosecond()):
		t.Errorf("%q: mtime %d.%09d, want %v", p, g.Mtime, g.MtimeNsec, mt)
	case g.Ctime != ct.Unix() || g.CtimeNsec != uint32(ct.Nanosecond()):
		t.Errorf("%q: ctime %d.%09d, want %v", p, g.Ctime, g.CtimeNsec, ct)
	case g.Ino != w.Ino || g.Nlink != w.Nlink || g.NormDev != w.Dev:
		t.Errorf("%q: ino %d nlink %d dev %d, want %d %d %d", p, g.Ino, g.Nlink, g.NormDev, w.Ino, w.Nlink, w.Dev)
	case string(g.Link) != w.Link || (g.Link == nil) != (w.Type() != TypeSymlink):
		t.Errorf("%q: link %q, want %q", p, g.Link, w.Link)
	case g.DevMajor != w.DevMajor || g.DevMinor != w.DevMinor:
		t.Errorf("%q: device %d:%d", p, g.DevMajor, g.DevMinor)
	case g.Sparse != w.IsSparse():
		t.Errorf("%q: sparse %v", p, g.Sparse)
	}
	var xs []bupstash.Xattr
	for _, n := range slices.Sorted(maps.Keys(w.Xattrs)) {
		xs = append(xs, bupstash.Xattr{Name: n, Value: w.Xattrs[n]})
	}
	if !slices.EqualFunc(g.Xattrs, xs, func(a, b bupstash.Xattr) bool { return a.Name == b.Name && bytes.Equal(a.Value, b.Value) }) {
		t.Errorf("%q: xattrs %v, want %v", p, g.Xattrs, xs)
	}
	if w.IsRegular() {
		if h := blake3.Sum256(content); g.DataHash == nil || *g.DataHash != h {
			t.Errorf("%q: content hash mismatch", p)
		}
	} else if g.DataHash != nil || g.Size != 0 {
		t.Errorf("%q: non-file with hash or size", p)
	}
}

func lookup(t testing.TB, tr *bupstash.Tree, p string) uint32 {
	t.Helper()
	n := uint32(0)
	if p == "." {
		return n
	}
	for _, c := range strings.Split(p, "/") {
		k, ok := tr.Lookup(n, []byte(c))
		if !ok {
			t.Fatalf("%q: not in the loaded tree", p)
		}
		n = k
	}
	return n
}

// checkRandomReads reads f at random offsets and lengths, and across its
// end, with fresh readers so that no sequential state helps.
func checkRandomReads(t testing.TB, f *bupstash.File, content []byte, rng *rand.Rand, p string) {
	t.Helper()
	if len(content) == 0 {
		return
	}
	for range 8 {
		off := rng.IntN(len(content))
		n := 1 + rng.IntN(min(len(content)-off+16, 64<<10))
		buf := make([]byte, n)
		got, err := f.NewReader().ReadAt(buf, int64(off))
		want := content[off:min(off+n, len(content))]
		if got != len(want) || !bytes.Equal(buf[:got], want) {
			t.Fatalf("%q: ReadAt(%d, %d) = %d bytes, %v; want %d", p, n, off, got, err, len(want))
		}
		if off+n > len(content) && err != io.EOF {
			t.Fatalf("%q: short read past the end returned %v", p, err)
		}
	}
}

// checkTar parses the reader's tar rendering of the snapshot. The tar is
// what `bupstash get` writes, including its base-256 encoding of negative
// mtimes, which archive/tar refuses; so it is parsed here by hand.
func checkTar(t testing.TB, o *bupstash.OpenItem, want []Entry) {
	t.Helper()
	var buf bytes.Buffer
	if err := dump.Tar(context.Background(), o, &buf); err != nil {
		t.Fatalf("WriteTar: %v", err)
	}
	tr := &tarParser{b: buf.Bytes()}
	seenIno := map[uint64]string{}
	for i := range want {
		w := &want[i]
		h, err := tr.next()
		if err != nil {
			t.Fatalf("tar entry %d (%q): %v", i, w.Path, err)
		}
		if h.name != w.Path {
			t.Fatalf("tar entry %d: name %q, want %q", i, h.name, w.Path)
		}
		if w.IsRegular() && w.Nlink > 1 {
			if first, ok := seenIno[w.Ino]; ok {
				if h.typ != '1' || h.link != first {
					t.Errorf("%q: tar type %c link %q, want a hard link to %q", w.Path, h.typ, h.link, first)
				}
				continue
			}
			seenIno[w.Ino] = w.Path
		}
		if w.IsRegular() && !bytes.Equal(h.data, readAll(t, w.Open())) {
			t.Errorf("%q: tar content differs", w.Path)
		}
		if w.Type() == TypeSymlink && h.link != w.Link {
			t.Errorf("%q: tar link %q", w.Path, h.link)
		}
		for n, v := range w.Xattrs {
			if h.pax["SCHILY.xattr."+n] != string(v) {
				t.Errorf("%q: tar xattr %q missing", w.Path, n)
			}
		}
	}
	if h, err := tr.next(); err != io.EOF {
		t.Errorf("tar has extra entries: %+v %v", h, err)
	}
}

type tarEntry struct {
	name, link string
	typ        byte
	data       []byte
	pax        map[string]string
}

type tarParser struct{ b []byte }

func (p *tarParser) block() ([]byte, error) {
	if len(p.b) < 512 {
		return nil, io.ErrUnexpectedEOF
	}
	h := p.b[:512]
	p.b = p.b[512:]
	return h, nil
}

func (p *tarParser) body(size int64) ([]byte, error) {
	padded := (size + 511) &^ 511
	if int64(len(p.b)) < padded {
		return nil, io.ErrUnexpectedEOF
	}
	d := p.b[:size]
	p.b = p.b[padded:]
	return d, nil
}

func tarString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func tarNumber(b []byte) int64 {
	if b[0]&0x80 != 0 { // base 256: keep the low 8 bytes
		var v uint64
		for _, c := range b[len(b)-8:] {
			v = v<<8 | uint64(c)
		}
		return int64(v &^ (1 << 63))
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(tarString(b)), 8, 64)
	return v
}

func (p *tarParser) next() (*tarEntry, error) {
	e := &tarEntry{pax: map[string]string{}}
	for {
		h, err := p.block()
		if err != nil {
			return nil, err
		}
		if bytes.Equal(h, make([]byte, 512)) {
			return nil, io.EOF
		}
		size := tarNumber(h[124:136])
		data, err := p.body(size)
		if err != nil {
			return nil, err
		}
		if h[156] == 'x' {
			for len(data) > 0 {
				sp := bytes.IndexByte(data, ' ')
				n, err := strconv.Atoi(string(data[:sp]))
				if err != nil || n > len(data) {
					return nil, fmt.Errorf("bad pax record")
				}
				kv := string(data[sp+1 : n-1])
				k, v, _ := strings.Cut(kv, "=")
				e.pax[k] = v
				data = data[n:]
			}
			continue
		}
		e.typ = h[156]
		e.name = tarString(h[0:100])
		if prefix := tarString(h[345:500]); prefix != "" {
			e.name = prefix + "/" + e.name
		}
		e.link = tarString(h[157:257])
		if v, ok := e.pax["path"]; ok {
			e.name = v
		}
		if v, ok := e.pax["linkpath"]; ok {
			e.link = v
		}
		e.name = strings.TrimSuffix(e.name, "/")
		e.data = data
		return e, nil
	}
}

// verifyRaw reads a raw item back and checks it against content.
func verifyRaw(t testing.TB, r *Repo, info *ItemInfo, content []byte) {
	t.Helper()
	rd := openReader(t, r, nil)
	it := findItem(t, rd, info.ID)
	checkItemMeta(t, r, it, info)
	if it.HasIndex() || it.DataSize != uint64(len(content)) {
		t.Fatalf("raw item: index %v, size %d", it.HasIndex(), it.DataSize)
	}
	o := rd.OpenItem(it)
	f, err := o.Data()
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, f.NewReader()); !bytes.Equal(b, content) {
		t.Fatalf("raw item: read %d bytes differing from the %d written", len(b), len(content))
	}
	checkRandomReads(t, f, content, rand.New(rand.NewPCG(3, 4)), "raw")

	k := r.Key()
	d := decodeTree(t, r.Dir(), it.DataHTree, k.DataSK.V, k.DataPSK.V, r.dataHashKey, true)
	if !bytes.Equal(d.stream, content) {
		t.Fatal("raw item: decoded leaves differ")
	}
	checkLeafSizes(t, d.leafLens, r.opts, nil)
	checkNodeShapes(t, d, r.opts)
}
