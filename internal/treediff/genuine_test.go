package treediff

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
	"golang.org/x/sys/unix"
)

const (
	snapXattrs = "fdd75e29487490b4ef3eb1792242fc00"
	snapSub    = "4d0adcd0cbd80b68cb20bcfa49edc161"
	snapPriv   = "7f3491e57862cd4bef370cafbb47b1c4"
	snapMulti  = "48a22dd86a5d60520ab4a0f6f1c07bef"
)

// diffEnv runs genuine `bupstash diff` and this package on the same
// arguments.
type diffEnv struct {
	t    *testing.T
	bin  string
	dir  string // working directory of both
	repo *bupstash.Repository
	env  []string
	loc  *time.Location
}

func newDiffEnv(t *testing.T) *diffEnv {
	bin := testtools.Bupstash(t, "0.12.1")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	copyTree(t, filepath.Join(testdata, fixture012.repo), repo)
	key, err := filepath.Abs(filepath.Join(testdata, fixture012.key))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	return &diffEnv{t: t, bin: bin, dir: dir, repo: openRepo(t, repo, key), env: genuineEnv(dir, repo, key, "Asia/Kolkata"), loc: loc}
}

// ours runs the diff the way `bupstash diff ARGS` would.
func (d *diffEnv) ours(args []string) (string, bool, error) {
	ctx := context.Background()
	var opts Options
	opts.Location = d.loc
	var live LiveOptions
	var picks [2]string
	var sides [][]string
	cur := []string{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--relaxed":
			opts.Ignore |= Relaxed
		case "--ignore":
			i++
			ig, err := ParseIgnore(args[i])
			if err != nil {
				return "", false, err
			}
			opts.Ignore |= ig
		case "--format":
			i++
			opts.Format = JSONL1
		case "--utc-timestamps":
			opts.Location = time.UTC
		case "--xattrs":
			live.Xattrs = true
		case "--left-pick":
			i++
			picks[0] = args[i]
		case "--right-pick":
			i++
			picks[1] = args[i]
		case "::":
			sides = append(sides, cur)
			cur = []string{}
		default:
			cur = append(cur, a)
		}
	}
	sides = append(sides, cur)
	var idx [2]*Index
	for i, side := range sides {
		if strings.HasPrefix(side[0], "./") || strings.HasPrefix(side[0], "/") {
			var paths []string
			for _, p := range side {
				if !filepath.IsAbs(p) {
					p = filepath.Join(d.dir, p)
				}
				paths = append(paths, p)
			}
			x, err := Live(ctx, paths, live)
			if err != nil {
				return "", false, err
			}
			idx[i] = x
			continue
		}
		idx[i] = itemIndex(d.t, d.repo, strings.TrimPrefix(side[0], "id="))
	}
	for i, p := range picks {
		if p == "" {
			continue
		}
		x, err := idx[i].Pick(ctx, p)
		if err != nil {
			return "", false, err
		}
		idx[i] = x
	}
	var out strings.Builder
	changed, err := Write(ctx, &out, idx[0], idx[1], opts)
	return out.String(), changed, err
}

// check compares the two outputs byte for byte.
func (d *diffEnv) check(args ...string) string {
	d.t.Helper()
	want, stderr, code := runGenuine(d.t, d.bin, d.dir, d.env, append([]string{"diff"}, args...)...)
	got, changed, err := d.ours(args)
	if code != 0 {
		if err == nil {
			d.t.Errorf("diff %q: bupstash failed (%s), backupfs did not", args, strings.TrimSpace(stderr))
		}
		return ""
	}
	if err != nil {
		d.t.Errorf("diff %q: %v", args, err)
		return ""
	}
	if got != want {
		d.t.Errorf("diff %q differs from bupstash's:\n--- backupfs\n%s--- bupstash\n%s", args, got, want)
	}
	if changed != (want != "") {
		d.t.Errorf("diff %q: changed = %v with output %q", args, changed, got)
	}
	if testing.Verbose() {
		d.t.Logf("diff %q: %d lines", args, strings.Count(want, "\n"))
	}
	return got
}

func TestDiffItemsMatchesBupstash(t *testing.T) {
	d := newDiffEnv(t)
	for _, pair := range [][2]string{
		{snapXattrs, snapSub}, {snapSub, snapXattrs}, {snapXattrs, snapMulti}, {snapPriv, snapSub},
		{snapXattrs, snapXattrs}, {snapMulti, snapSub},
	} {
		l, r := "id="+pair[0], "id="+pair[1]
		for _, opts := range [][]string{
			nil, {"--relaxed"}, {"--ignore", "times"}, {"--ignore", "file-content,perms"}, {"--ignore", "type,nlink,inode"},
			{"--format", "jsonl1"}, {"--utc-timestamps"}, {"--relaxed", "--ignore", "devnos,xattrs"},
		} {
			d.check(append(append([]string{}, opts...), l, "::", r)...)
		}
	}
	d.check("--left-pick", "sub", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--left-pick", "sub", "--relaxed", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--left-pick", "sub/nested", "--right-pick", "nested", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--left-pick", ".", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--left-pick", "a.txt", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--left-pick", "nope", "id="+snapXattrs, "::", "id="+snapSub)
	d.check("--ignore", "bogus", "id="+snapXattrs, "::", "id="+snapSub)
}

// A snapshot against a live directory: the snapshot restored by genuine
// Bupstash, then modified.
func TestDiffLiveMatchesBupstash(t *testing.T) {
	d := newDiffEnv(t)
	live := filepath.Join(d.dir, "live")
	extract(t, d.bin, d.env, snapXattrs, live)
	id := "id=" + snapXattrs
	for _, opts := range [][]string{nil, {"--relaxed"}, {"--xattrs"}, {"--xattrs", "--relaxed"}, {"--format", "jsonl1"}, {"--ignore", "times,inode,dev"}, {"--xattrs", "--ignore", "times,inode,dev"}} {
		d.check(append(append([]string{}, opts...), id, "::", "./live")...)
		d.check(append(append([]string{}, opts...), "./live", "::", id)...)
	}
	d.check("--relaxed", id, "::", live) // an absolute path

	// Change it: content, metadata, entries added and removed, a new hard
	// link, a socket (never listed), a file replaced by a directory.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(live, "a.txt"), []byte("hello, changed\n"), 0o644))
	must(os.WriteFile(filepath.Join(live, "sub", "s.txt"), []byte("sub fil!\n"), 0o644)) // same size, new hash
	must(os.Remove(filepath.Join(live, "after-big.txt")))
	must(os.Chmod(filepath.Join(live, "setuid.sh"), 0o755))
	must(os.Mkdir(filepath.Join(live, "newdir"), 0o700))
	must(os.WriteFile(filepath.Join(live, "newdir", "n.txt"), []byte("new\n"), 0o600))
	must(os.Link(filepath.Join(live, "ümlaut.txt"), filepath.Join(live, "newdir", "ümlaut-link")))
	must(os.Remove(filepath.Join(live, "link-to-a")))
	must(os.Symlink("sub/s.txt", filepath.Join(live, "link-to-a")))
	must(os.Remove(filepath.Join(live, "empty")))
	must(os.Mkdir(filepath.Join(live, "empty"), 0o755))
	must(os.WriteFile(filepath.Join(live, "caf\xe9-2"), []byte("latin1 again\n"), 0o644))
	must(unix.Lsetxattr(filepath.Join(live, "sub"), "user.dirattr", []byte("changed"), 0))
	must(unix.Lsetxattr(filepath.Join(live, "big.txt"), "user.new", []byte{0xff, 0}, 0))
	sock, err := net.Listen("unix", filepath.Join(live, "sock"))
	must(err)
	defer sock.Close()
	for _, opts := range [][]string{nil, {"--relaxed"}, {"--xattrs", "--relaxed"}, {"--format", "jsonl1", "--xattrs"},
		{"--ignore", "file-content,times"}, {"--utc-timestamps", "--relaxed"}, {"--xattrs", "--ignore", "times,inode,dev,nlink"},
		{"--format", "jsonl1", "--xattrs", "--ignore", "times,inode,dev"}} {
		d.check(append(append([]string{}, opts...), id, "::", "./live")...)
	}
	d.check("--relaxed", "--left-pick", "sub", id, "::", "./live/sub")
	d.check("--relaxed", "id="+snapSub, "::", "./live/sub")
}

// Live trees on both sides, several paths on a side (their common
// directory becomes a filler root), and a single file.
func TestDiffLiveTreesMatchesBupstash(t *testing.T) {
	d := newDiffEnv(t)
	for _, p := range []string{"x/a/one", "x/a/two/three", "x/b/four", "y/a/one", "y/c/five", "z"} {
		full := filepath.Join(d.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(p+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(d.dir, "x", "a", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"./x", "::", "./y"}, {"--relaxed", "./x", "::", "./y"}, {"./x/a", "::", "./y/a"},
		{"./x/a", "./x/b", "::", "./y"}, {"./x/a/two", "./x/b", "::", "./x"}, {"./x/a", "./x/a/two", "::", "./x/a"},
		{"./x/a/one", "::", "./y/a/one"}, {"./z", "::", "./x"}, {"./x/a/one", "./y/c", "::", "./x"},
		{"--format", "jsonl1", "./x/a", "./y/c/five", "::", "./y"}, {"./x/../y", "::", "./y/"},
	} {
		d.check(args...)
	}
}

// Entries of formats 1 and 2 (absolute cursors) make Bupstash refuse the
// diff once both sides have entries to compare.
func TestDiffOldIndexRefused(t *testing.T) {
	b := newBuilder()
	if err := b.add(&bupstash.IndexEntry{Path: []byte("."), Mode: bupstash.ModeDir | 0o755, Version: 2}); err != nil {
		t.Fatal(err)
	}
	old, _ := b.finish()
	b = newBuilder()
	if err := b.add(&bupstash.IndexEntry{Path: []byte("."), Mode: bupstash.ModeDir | 0o755, Version: 5, HasCursor: true}); err != nil {
		t.Fatal(err)
	}
	cur, _ := b.finish()
	empty, _ := newBuilder().finish()
	if _, err := Diff(context.Background(), old, cur, 0, func(Change, *bupstash.IndexEntry) error { return nil }); err != ErrOldIndex {
		t.Fatalf("diff with an old index: %v", err)
	}
	n := 0
	if _, err := Diff(context.Background(), old, empty, 0, func(Change, *bupstash.IndexEntry) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("old index against nothing: %v, %d lines", err, n)
	}
	if _, err := old.Pick(context.Background(), "."); err == nil {
		t.Fatal("picked from an old index")
	}
}

var _ = fmt.Sprint
