package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
)

// A forged index may repeat a path, or give a regular file entries below
// it. The command line and the mount must show the same tree: the first
// entry of each path counts, nothing lies below a file, and the damage is
// reported once. (The mount used to show the last duplicate and turn the
// file into a directory; cat showed the last duplicate and the file.)
func forgeDamagedIndex(t *testing.T) (dir, id string) {
	t.Helper()
	f := bupstashtest.Create(t, filepath.Join(t.TempDir(), "repo"), primary012, 8)
	x := f.AddSnapshot(bupstashtest.Snapshot{
		Item:        bupstashtest.Item{Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Tags: map[string]string{"name": "forged.tar"}},
		EntryFormat: 5,
		Entries: []bupstashtest.Entry{
			{Path: ".", Mode: bupstash.ModeDir | 0o755, Nlink: 4},
			{Path: "dup.txt", Mode: bupstash.ModeRegular | 0o644, Content: []byte("first\n"), Nlink: 1},
			{Path: "dup.txt", Mode: bupstash.ModeRegular | 0o600, Content: []byte("second, longer\n"), Nlink: 1},
			{Path: "f", Mode: bupstash.ModeRegular | 0o644, Content: []byte("a file\n"), Nlink: 1},
			{Path: "f/child", Mode: bupstash.ModeRegular | 0o644, Content: []byte("below a file\n"), Nlink: 1},
			{Path: "d", Mode: bupstash.ModeDir | 0o750, Nlink: 2},
			{Path: "d/x", Mode: bupstash.ModeRegular | 0o644, Content: []byte("x\n"), Nlink: 1},
			{Path: "d", Mode: bupstash.ModeRegular | 0o644, Content: []byte("not a directory\n"), Nlink: 1},
		},
	})
	return f.Dir, x.String()
}

// hiddenWarning is what both report, once.
const hiddenWarning = "damaged index: 3 entries repeat a path or lie below a non-directory and are hidden"

func TestDamagedIndexOnTheCommandLine(t *testing.T) {
	dir, id := forgeDamagedIndex(t)
	args := func(a ...string) []string {
		return append([]string{a[0], "--repo", dir, "--key", primary012}, a[1:]...)
	}
	for _, tc := range []struct {
		path, stdout, stderr string
		code                 int
	}{
		{"dup.txt", "first\n", "", 0},
		{"f", "a file\n", "", 0},
		{"d/x", "x\n", "", 0},
		{"f/child", "", "item " + id + ": f/child: \"f\": not a directory", 1},
		{"f/", "", "item " + id + ": f/: not a directory", 1},
		{"d", "", "is a directory", 1},
	} {
		r := runCmd(t, nil, args("cat", id, tc.path)...)
		if r.code != tc.code || r.stdout != tc.stdout || (tc.stderr != "" && !strings.Contains(r.stderr, tc.stderr)) {
			t.Errorf("cat %s: exit %d, %q, stderr %q", tc.path, r.code, r.stdout, r.stderr)
		}
	}
	r := runCmd(t, nil, args("ls", id)...)
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		names = append(names, line[strings.LastIndexByte(line, ' ')+1:])
	}
	if r.code != 0 || !slices.Equal(names, []string{"dup.txt", "f", "d"}) || !strings.HasPrefix(r.stdout, "-rw-r--r--") {
		t.Errorf("ls: exit %d, %q", r.code, r.stdout)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, hiddenWarning) {
		t.Errorf("ls: stderr %q, want the damage reported once", r.stderr)
	}
	if r := runCmd(t, nil, args("ls", "-R", id, "f")...); !strings.Contains(r.stdout, " f\n") || strings.Contains(r.stdout, "child") {
		t.Errorf("ls -R f: %q %q", r.stdout, r.stderr)
	}
}

func TestDamagedIndexInAMount(t *testing.T) {
	dir, id := forgeDamagedIndex(t)
	mnt := t.TempDir()
	p := startMount(t, nil, "--repo", dir, "--key", abs(t, primary012), mnt)
	root := filepath.Join(mnt, "repo", "ids", id)
	for path, want := range map[string]string{"dup.txt": "first\n", "f": "a file\n", "d/x": "x\n"} {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", path, b, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "f")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("f: %v, %v; want the regular file", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("d: %v, %v; want the first entry's directory", fi, err)
	}
	for _, path := range []string{"f/child", "f/"} {
		if _, err := os.Stat(root + "/" + path); !errors.Is(err, syscall.ENOTDIR) { // not Join, which drops a final slash
			t.Errorf("%s: %v, want ENOTDIR", path, err)
		}
	}
	names, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, n.Name())
	}
	if !slices.Equal(got, []string{"d", "dup.txt", "f"}) {
		t.Errorf("readdir: %q", got)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)
	if n := strings.Count(p.stderr.String(), hiddenWarning); n != 1 {
		t.Errorf("damage reported %d times:\n%s", n, p.stderr)
	}
}

// A trailing slash names a directory, as for the kernel: on a raw item's
// file it is an error too.
func TestCatTrailingSlashOnARawItem(t *testing.T) {
	r := runCmd(t, nil, "cat", "--repo", repo012, "--key", primary012, "a9efc039", "s.txt/")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "s.txt/: not a directory") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, nil, "cat", "--repo", repo012, "--key", primary012, "a9efc039", "s.txt"); r.code != 0 {
		t.Fatalf("without the slash: exit %d, %q", r.code, r.stderr)
	}
}

// A repository that cannot be opened is named once in the mount's error
// line (it said "backupfs mount: /r: /r: tx.wal: …").
func TestMountErrorNamesTheRepositoryOnce(t *testing.T) {
	dir := copyRepo(t, repo012)
	f, err := os.Create(filepath.Join(dir, "tx.wal"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(100 << 20) // a hot WAL too large to read
	f.Close()
	code, _, stderr, _ := runBinary(t, 30*time.Second, "mount", "--repo", dir, "--key", primary012, t.TempDir())
	if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "backupfs mount: "+dir+": tx.wal: ") || strings.Contains(stderr, dir+": "+dir) {
		t.Fatalf("exit %d: %q", code, stderr)
	}
}
