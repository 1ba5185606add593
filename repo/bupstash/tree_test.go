package bupstash

import (
	"bytes"
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"lukechampine.com/blake3"
)

func loadTree(t *testing.T, o *OpenItem) *Tree {
	t.Helper()
	tr, err := o.LoadTree(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// resolve walks a path from the root by Lookup.
func resolve(tr *Tree, path []byte) (uint32, bool) {
	if string(path) == "." {
		return 0, true
	}
	n := uint32(0)
	for _, c := range bytes.Split(path, []byte{'/'}) {
		var ok bool
		if n, ok = tr.Lookup(n, c); !ok {
			return 0, false
		}
	}
	return n, true
}

// Every index entry of every fixture snapshot is reachable in the tree,
// with its attributes, link target, xattrs and content.
func TestTreeHoldsEveryEntry(t *testing.T) {
	for _, f := range fixtures {
		r := openFixture(t, f)
		for _, it := range listItems(t, r) {
			if !it.HasIndex() {
				continue
			}
			o := r.OpenItem(it)
			tr := loadTree(t, o)
			entries := readIndex(t, o)
			for _, e := range entries {
				n, ok := resolve(tr, e.Path)
				if !ok {
					t.Fatalf("%s %s: %q not found in the tree", f.name, it.ID, e.Path)
				}
				a := tr.Attr(n)
				if a.Mode != e.Mode || a.UID != uint32(e.UID) || a.GID != uint32(e.GID) ||
					a.Mtime != e.Mtime || a.MtimeNsec != e.MtimeNsec || a.Ctime != e.Ctime || a.CtimeNsec != e.CtimeNsec ||
					a.DevMajor != uint32(e.DevMajor) || a.DevMinor != uint32(e.DevMinor) || a.Sparse != e.Sparse {
					t.Errorf("%q: attr %+v, entry %+v", e.Path, a, e)
				}
				if e.IsRegular() && a.Size != e.Size {
					t.Errorf("%q: size %d, want %d", e.Path, a.Size, e.Size)
				}
				if !bytes.Equal(tr.Link(n), e.Link) {
					t.Errorf("%q: link %q, want %q", e.Path, tr.Link(n), e.Link)
				}
				if len(tr.Xattrs(n)) != len(e.Xattrs) {
					t.Errorf("%q: %d xattrs, want %d", e.Path, len(tr.Xattrs(n)), len(e.Xattrs))
				}
				for i, x := range tr.Xattrs(n) {
					if x.Name != e.Xattrs[i].Name || !bytes.Equal(x.Value, e.Xattrs[i].Value) {
						t.Errorf("%q: xattr %d = %q=%q", e.Path, i, x.Name, x.Value)
					}
				}
				if string(e.Path) != "." && tr.Path(n) != string(e.Path) {
					t.Errorf("Path(%d) = %q, want %q", n, tr.Path(n), e.Path)
				}
				if e.IsRegular() {
					file, err := tr.File(o, n)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(file.NewReader())
					if err != nil {
						t.Fatalf("%q: %v", e.Path, err)
					}
					if e.DataHash != nil && blake3.Sum256(got) != *e.DataHash {
						t.Errorf("%q: content differs", e.Path)
					}
				}
			}
			// Nothing else is in the tree, and directories list sorted.
			count := 0
			var walk func(uint32)
			walk = func(d uint32) {
				kids := tr.Children(d)
				if !slices.IsSortedFunc(kids, tr.compareRecords) {
					t.Errorf("%s: children of %q not sorted", it.ID, tr.Path(d))
				}
				for _, k := range kids {
					count++
					if tr.Parent(k) != d {
						t.Errorf("parent of %q is %d, want %d", tr.Path(k), tr.Parent(k), d)
					}
					if tr.IsDir(k) {
						walk(k)
					}
				}
			}
			walk(0)
			want := len(entries)
			if _, hasRoot := resolveEntry(entries, "."); hasRoot {
				want--
			}
			if count != want {
				t.Errorf("%s %s: tree holds %d entries below the root, index has %d", f.name, it.ID, count, want)
			}
		}
	}
}

func resolveEntry(es []*IndexEntry, p string) (*IndexEntry, bool) {
	for _, e := range es {
		if string(e.Path) == p {
			return e, true
		}
	}
	return nil, false
}

func TestTreeLinksAndCounts(t *testing.T) {
	r := openFixture(t, fixtures[5])
	it, _ := FindItem(listItems(t, r), "fdd75e29")
	tr := loadTree(t, r.OpenItem(it))
	h1, _ := resolve(tr, []byte("hard1"))
	h2, _ := resolve(tr, []byte("hard2"))
	a1, a2 := tr.Attr(h1), tr.Attr(h2)
	if a1.InodeRecord != a2.InodeRecord || a1.Nlink != 2 || a2.Nlink != 2 {
		t.Fatalf("hard links: %+v %+v", a1, a2)
	}
	a, _ := resolve(tr, []byte("a.txt"))
	if tr.Attr(a).InodeRecord == a1.InodeRecord || tr.Attr(a).Nlink != 1 {
		t.Fatalf("a.txt: %+v", tr.Attr(a))
	}
	// The root holds emptydir, private and sub: 2 + 3 links.
	if n := tr.Attr(0).Nlink; n != 5 {
		t.Fatalf("root nlink %d", n)
	}
	if TreeNodeSize > 104 {
		t.Fatalf("a tree record is %d bytes; the budget is 104", TreeNodeSize)
	}
}

// The multi-path snapshot's root is a filler directory and one entry
// carries a chunk delta with size 0 (docs/bupstash-format.md §10.5).
func TestTreeMultiPath(t *testing.T) {
	r := openFixture(t, fixtures[5])
	it, _ := FindItem(listItems(t, r), "48a22dd8")
	o := r.OpenItem(it)
	tr := loadTree(t, o)
	n, ok := resolve(tr, []byte("sub/s.txt"))
	if !ok {
		t.Fatal("sub/s.txt missing")
	}
	f, _ := tr.File(o, n)
	got, _ := io.ReadAll(f.NewReader())
	if string(got) != "sub file\n" {
		t.Fatalf("sub/s.txt = %q", got)
	}
}

// Entries whose parents are missing get synthesized parents; a path stored
// twice resolves to its last entry; a directory described after its
// children keeps them.
func TestTreeBuilderOddIndexes(t *testing.T) {
	it := &Item{Timestamp: time.Unix(1700000000, 0)}
	b := newTreeBuilder(it)
	add := func(path string, mode uint32, size uint64) {
		t.Helper()
		if err := b.add(&IndexEntry{Path: []byte(path), Mode: mode, Size: size, Nlink: 1, Mtime: int64(size)}); err != nil {
			t.Fatal(err)
		}
	}
	add("a/b/c.txt", ModeRegular|0o644, 1) // a and a/b are implied
	add("a", ModeDir|0o700, 2)             // a described after its child
	add("z.txt", ModeRegular|0o644, 3)
	add("z.txt", ModeRegular|0o600, 4) // stored twice: the first counts (entryrule.go)
	add(".", ModeDir|0o750, 5)
	tr := b.finish()

	ab, ok := resolve(tr, []byte("a/b"))
	if !ok || tr.Attr(ab).Mode != ModeDir|0o755 || tr.Attr(ab).Mtime != it.Timestamp.Unix() {
		t.Fatalf("synthesized a/b: %v %+v", ok, tr.Attr(ab))
	}
	a, _ := resolve(tr, []byte("a"))
	if tr.Attr(a).Mode != ModeDir|0o700 || len(tr.Children(a)) != 1 {
		t.Fatalf("a: %+v with %d children", tr.Attr(a), len(tr.Children(a)))
	}
	if _, ok := resolve(tr, []byte("a/b/c.txt")); !ok {
		t.Fatal("a/b/c.txt lost")
	}
	z, _ := resolve(tr, []byte("z.txt"))
	if tr.Attr(z).Mode != ModeRegular|0o644 || len(tr.Children(0)) != 2 {
		t.Fatalf("z.txt: %+v; root has %d children", tr.Attr(z), len(tr.Children(0)))
	}
	if tr.Attr(0).Mode != ModeDir|0o750 || tr.Attr(0).Nlink != 3 {
		t.Fatalf("root: %+v", tr.Attr(0))
	}
	if got := tr.Path(ab); got != "a/b" {
		t.Fatalf("Path = %q", got)
	}
	if n, first := tr.Hidden(); n != 1 || first != "z.txt" {
		t.Fatalf("Hidden = %d, %q", n, first)
	}
}

func TestTreeNonUTF8Names(t *testing.T) {
	r := openFixture(t, fixtures[4]) // 0.11.1 stores the raw byte
	for _, it := range listItems(t, r) {
		if it.Tags["fixture"] != "snapshot-nonutf8" {
			continue
		}
		tr := loadTree(t, r.OpenItem(it))
		if _, ok := resolve(tr, []byte("caf\xe9")); !ok {
			t.Fatal(`"caf\xe9" not found`)
		}
		return
	}
	t.Fatal("no snapshot-nonutf8 item")
}
