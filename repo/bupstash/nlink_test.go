package bupstash

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/testtools"
)

// A snapshot of http/ whose request.go had a second name outside it: the
// link count is what extracting the snapshot gives, 1, not the 2 the
// source had. Checked against genuine `bupstash get` extracted by tar.
func TestNlinkInsideSnapshot(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(old, new string) {
		t.Helper()
		if err := os.Link(old, new); err != nil {
			t.Fatal(err)
		}
	}
	http := filepath.Join(src, "http")
	write(filepath.Join(http, "request.go"), "package http // request\n")
	link(filepath.Join(http, "request.go"), filepath.Join(src, "request-outside.go")) // outside: 2 links, 1 inside
	write(filepath.Join(http, "a"), "two names inside, one outside\n")
	link(filepath.Join(http, "a"), filepath.Join(http, "b"))
	link(filepath.Join(http, "a"), filepath.Join(src, "a-outside"))
	write(filepath.Join(http, "sub", "deep", "c"), "two names inside\n")
	link(filepath.Join(http, "sub", "deep", "c"), filepath.Join(http, "c2"))
	write(filepath.Join(http, "plain"), "one name\n")
	if err := os.MkdirAll(filepath.Join(http, "sub", "e"), 0o755); err != nil {
		t.Fatal(err)
	}

	repo, key := filepath.Join(dir, "repo"), filepath.Join(dir, "key")
	env := []string{"BUPSTASH_REPOSITORY=" + repo, "BUPSTASH_KEY=" + key, "BUPSTASH_QUERY_CACHE=" + filepath.Join(dir, "qcache"),
		"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bupstash %q: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	run("new-key", "-o", key)
	run("init")
	id := run("put", "--no-send-log", "-q", http)

	// What a genuine extraction gives.
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	get := exec.Command(bin, "get", "id="+id)
	get.Env = env
	tar := exec.Command("tar", "-x", "-C", out)
	tar.Stdin, _ = get.StdoutPipe()
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := get.Run(); err != nil {
		t.Fatal(err)
	}
	if err := tar.Wait(); err != nil {
		t.Fatal(err)
	}
	extracted := map[string]uint64{}
	if err := filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		extracted[rel] = uint64(fi.Sys().(*syscall.Stat_t).Nlink)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if extracted["request.go"] != 1 || extracted["a"] != 2 || extracted["c2"] != 2 {
		t.Fatalf("extraction: %v", extracted)
	}

	k, err := loadKey(key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), repo, k, Options{Cache: cache.New(16 << 20), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	it, err := FindItem(listItems(t, r), id)
	if err != nil {
		t.Fatal(err)
	}
	o := r.OpenItem(it)
	tr := loadTree(t, o)
	lc, err := o.LinkCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	idx, err := o.Index()
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	saved := map[string]uint64{}
	for {
		e, err := idx.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := string(e.Path)
		saved[p] = e.Nlink
		want, ok := extracted[p]
		if !ok {
			t.Errorf("%s: not extracted", p)
			continue
		}
		n, found := resolve(tr, e.Path)
		if p == "." {
			n, found = 0, true
		}
		if !found {
			t.Fatalf("%s: not in the tree", p)
		}
		if got := uint64(tr.Attr(n).Nlink); got != want {
			t.Errorf("%s: tree nlink %d, extraction %d (saved %d)", p, got, want, e.Nlink)
		}
		if got := lc.Nlink(e); got != want {
			t.Errorf("%s: LinkCounts %d, extraction %d (saved %d)", p, got, want, e.Nlink)
		}
	}
	if saved["request.go"] != 2 || saved["a"] != 3 {
		t.Fatalf("the source's counts were not saved as expected: %v", saved)
	}
}

// LinkCounts agrees with the Tree on odd indexes too: implied parents,
// directories described after their children, hard links whose other
// names are missing, and a name stored twice.
func TestLinkCountsMatchTree(t *testing.T) {
	entries := []IndexEntry{
		{Path: []byte("."), Mode: ModeDir | 0o755, Nlink: 7},
		{Path: []byte("a/b/c"), Mode: ModeRegular | 0o644, Nlink: 3, NormDev: 0, Ino: 5},
		{Path: []byte("a"), Mode: ModeDir | 0o755, Nlink: 2},
		{Path: []byte("x"), Mode: ModeRegular | 0o644, Nlink: 3, NormDev: 0, Ino: 5},
		{Path: []byte("x"), Mode: ModeRegular | 0o644, Nlink: 3, NormDev: 0, Ino: 5},
		{Path: []byte("y"), Mode: ModeRegular | 0o644, Nlink: 2, NormDev: 1, Ino: 5},
		{Path: []byte("d1"), Mode: ModeDir | 0o755, Nlink: 9},
		{Path: []byte("d1/d2"), Mode: ModeDir | 0o755, Nlink: 1},
		{Path: []byte("f"), Mode: ModeRegular | 0o644, Nlink: 0},
		{Path: []byte("s"), Mode: ModeSymlink | 0o777, Nlink: 1, Link: []byte("f")},
	}
	b := newTreeBuilder(&Item{})
	c := newLinkCounts()
	for i := range entries {
		if err := b.add(&entries[i]); err != nil {
			t.Fatal(err)
		}
		c.add(&entries[i])
	}
	tr := b.finish()
	for i := range entries {
		e := &entries[i]
		n, ok := resolve(tr, e.Path)
		if string(e.Path) == "." {
			n, ok = 0, true
		}
		if !ok {
			t.Fatalf("%s missing", e.Path)
		}
		if got, want := c.Nlink(e), uint64(tr.Attr(n).Nlink); got != want {
			t.Errorf("%s: LinkCounts %d, tree %d", e.Path, got, want)
		}
	}
	for p, want := range map[string]uint32{".": 7, "a": 3, "a/b": 2, "a/b/c": 2, "x": 2, "y": 1, "d1": 9, "d1/d2": 2, "f": 1} {
		n, _ := resolve(tr, []byte(p))
		if p == "." {
			n = 0
		}
		if got := tr.Attr(n).Nlink; got != want {
			t.Errorf("%s: nlink %d, want %d", p, got, want)
		}
	}
}
