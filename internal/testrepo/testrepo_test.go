package testrepo

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// kitchenSink is a tree with every kind of entry Bupstash records.
func kitchenSink(t testing.TB) *Tree {
	t.Helper()
	tr := NewTree()
	old := time.Date(1969, 7, 20, 20, 17, 40, 987654321, time.UTC)
	tr.MustAdd(
		Entry{Path: ".", Mode: TypeDir | 0o700, UID: 1000, GID: 1000, Xattrs: map[string][]byte{"user.root": []byte("r")}},
		File("a.txt", String("hello\n")),
		Entry{Path: "old.txt", Mode: 0o640, Mtime: old, Ctime: old.Add(time.Nanosecond), Content: String("apollo\n"), UID: 4294967296, GID: 7},
		File("empty", nil),
		File("big.bin", Random(100<<10, 1)),
		File("text.txt", Text(50<<10, 2)),
		File("zeros", Zeros(30<<10)),
		Entry{Path: "setuid.sh", Mode: TypeRegular | 0o4755, Content: String("#!/bin/sh\n")},
		Entry{Path: "sparse.bin", Mode: TypeRegular | 0o644, Content: Sparse(64<<10, Region{Offset: 40 << 10, Data: String("tail")}, Region{Offset: 1, Data: Random(3000, 5)})},
		Entry{Path: "xattr.txt", Mode: TypeRegular | 0o644, Content: String("x"), Xattrs: map[string][]byte{"user.comment": []byte("xattr value"), "user.bin": {0, 1, 2, 0xff}}},
		Symlink("link-to-a", "a.txt"),
		Symlink("dangling", "does/not/exist"),
		Symlink("caf\xe9-link", "caf\xe9"),
		File("caf\xe9", String("latin1 name\n")),
		File("ümlaut.txt", String("umlaut\n")),
		FIFO("fifo"),
		CharDev("chardev", 1, 3),
		BlockDev("blockdev", 8, 1),
		Dir("emptydir"),
		Entry{Path: "sub", Mode: TypeDir | 0o755, Xattrs: map[string][]byte{"user.dirattr": {0, 1, 'b'}}},
		File("sub/s.txt", String("sub file\n")),
		File("sub/nested/deeper/file.txt", String("deep file\n")),
		File("sub/nested/big", Random(40<<10, 9)),
		Entry{Path: "private", Mode: TypeDir | 0o700},
		File("private/p.txt", String("secret\n")),
	)
	if err := tr.Hardlink("hard2", "hard1"); err == nil {
		t.Fatal("hard link to a missing file accepted")
	}
	tr.MustAdd(File("hard1", String("hardlinked content\n")))
	for _, p := range []string{"hard2", "sub/hard3"} {
		if err := tr.Hardlink(p, "hard1"); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// TestKitchenSink writes every kind of entry with each compression and
// reads it all back.
func TestKitchenSink(t *testing.T) {
	t.Parallel()
	for _, comp := range []Compression{Zstd, LZ4, None} {
		t.Run(comp.String(), func(t *testing.T) {
			o := smallOptions()
			o.Compression = comp
			r := newRepo(t, o)
			tr := kitchenSink(t)
			info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{Source: "/home/me/tree"})
			if err != nil {
				t.Fatal(err)
			}
			if info.Tags["name"] != "tree.tar" || len(info.Tags) != 1 {
				t.Errorf("tags %v", info.Tags)
			}
			want := tr.Entries()
			verifySnapshot(t, r, info, want)

			// Compressible leaves carry the chosen footer, incompressible
			// ones footer 0.
			k := r.Key()
			d := decodeTree(t, r.Dir(), info.DataHTree, k.DataSK.V, k.DataPSK.V, r.dataHashKey, true)
			var seen [3]bool
			for i, f := range d.footers {
				seen[f] = true
				if comp == None && f != 0 {
					t.Errorf("leaf %d: footer %d with compression none", i, f)
				}
			}
			wantFooter := map[Compression]byte{Zstd: 2, LZ4: 1, None: 0}[comp]
			if !seen[wantFooter] || (comp != None && !seen[0]) {
				t.Errorf("footers seen %v (want %d and 0)", seen, wantFooter)
			}
		})
	}
}

// TestTreeWalkOrder checks Tree's order against the example of
// docs/bupstash-format.md §10.10, its link counts and inode numbering.
func TestTreeWalkOrder(t *testing.T) {
	t.Parallel()
	tr := NewTree().MustAdd(
		File("b/z", nil), File("f.txt", nil), File("a/y", nil), File("a/x/1", nil),
		Entry{Path: "a/x/2", Mode: TypeRegular | 0o600, Ino: 2},
	)
	if err := tr.Hardlink("a/x/3", "a/x/2"); err != nil {
		t.Fatal(err)
	}
	var paths []string
	ino := map[uint64]string{}
	for _, e := range tr.Entries() {
		paths = append(paths, e.Path)
		if other, ok := ino[e.Ino]; ok && !(e.Nlink == 2 && strings.HasPrefix(other, "a/x/")) {
			t.Errorf("%q and %q share inode %d", e.Path, other, e.Ino)
		}
		ino[e.Ino] = e.Path
		wantNlink := map[string]uint64{".": 4, "a": 3, "b": 2, "a/x": 2, "f.txt": 1}
		if n, ok := wantNlink[e.Path]; ok && e.Nlink != n {
			t.Errorf("%q: nlink %d, want %d", e.Path, e.Nlink, n)
		}
		switch e.Path {
		case "a/x/2", "a/x/3":
			if e.Nlink != 2 || e.Ino != 2 {
				t.Errorf("%q: hard link ino %d nlink %d", e.Path, e.Ino, e.Nlink)
			}
		}
	}
	want := ". a b f.txt a/x a/y a/x/1 a/x/2 a/x/3 b/z"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("walk order\n got %s\nwant %s", got, want)
	}
	if err := tr.Add(File("f.txt/under-a-file", nil)); err == nil {
		t.Error("a child of a file was accepted")
	}
	if err := tr.Add(File("b/z", nil)); err == nil {
		t.Error("a duplicate was accepted")
	}
}

// TestEdgeShapes covers shapes at the edges of what the index and the tar
// rendering handle: a deep chain, long names and paths, a large hard-link
// group, a wide directory, odd xattrs and symlink targets.
func TestEdgeShapes(t *testing.T) {
	t.Parallel()
	r := newRepo(t, smallOptions())
	tr := NewTree()
	deep := "."
	for i := range 120 {
		if deep == "." {
			deep = fmt.Sprintf("d%03d", i)
		} else {
			deep += fmt.Sprintf("/d%03d", i)
		}
	}
	long := strings.Repeat("n", 250)
	tr.MustAdd(
		File(deep+"/bottom.txt", String("at the bottom\n")),
		File(deep+"/"+long, Text(3000, 1)),
		File(long, String("long name\n")),
		Symlink("long-link", strings.Repeat("../target/", 40)+"x\ny"),
		Entry{Path: "odd-xattrs", Mode: TypeRegular | 0o600, Content: String("x"),
			Xattrs: map[string][]byte{"user.caf\xe9": []byte("latin1 name"), "user.empty": {}, "trusted.x": {0}}},
		File("links/original", Random(5000, 2)),
	)
	for i := range 39 {
		if err := tr.Hardlink(fmt.Sprintf("links/l%02d", i), "links/original"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		tr.MustAdd(File(fmt.Sprintf("wide/%04d", i), Text(int64(i%50), uint64(i))))
	}
	info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	want := tr.Entries()
	for _, e := range want {
		if strings.HasPrefix(e.Path, "links/") && e.Nlink != 40 {
			t.Fatalf("%q: nlink %d", e.Path, e.Nlink)
		}
	}
	verifySnapshot(t, r, info, want)
}
