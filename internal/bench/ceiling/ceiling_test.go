package ceiling

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/testrepo"
)

// TestCeilingServesTheShape mounts the ceiling of a small shape and checks
// that it lists every entry with its size and mode, and that files read
// as many bytes as they are long.
func TestCeilingServesTheShape(t *testing.T) {
	fusetest.RequireFUSE(t)
	shape := testrepo.Shape{Seed: 3, Files: 300, FilesPerDir: 10, Depth: 4, Huge: 3<<20 + 17}
	want := map[string]testrepo.Entry{}
	src := shape.Source()
	for {
		e, err := src.Next()
		if err != nil {
			break
		}
		want[e.Path] = *e
	}
	tree, err := Build(shape.Source())
	if err != nil {
		t.Fatal(err)
	}
	if tree.Files != 301 {
		t.Errorf("Files = %d, want 301", tree.Files)
	}
	dir := t.TempDir()
	server, err := tree.Mount(dir, Options{Xattrs: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	var got []string
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		e, ok := want[rel]
		if !ok {
			t.Errorf("unexpected entry %q", rel)
			return nil
		}
		got = append(got, rel)
		if rel == "." {
			return nil
		}
		if fi.Mode().Perm() != os.FileMode(e.Mode&0o777) {
			t.Errorf("%s: mode %v, want %o", rel, fi.Mode(), e.Mode)
		}
		if !fi.ModTime().Equal(e.MtimeOrDefault()) {
			t.Errorf("%s: mtime %v, want %v", rel, fi.ModTime(), e.MtimeOrDefault())
		}
		if e.IsRegular() {
			if fi.Size() != e.Size() {
				t.Errorf("%s: size %d, want %d", rel, fi.Size(), e.Size())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Error(err)
			} else if int64(len(b)) != e.Size() {
				t.Errorf("%s: read %d bytes, want %d", rel, len(b), e.Size())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		sort.Strings(got)
		t.Errorf("walked %d entries, the shape has %d", len(got), len(want))
	}
}
