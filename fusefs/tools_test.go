package fusefs_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/repo/bupstash"
)

const snapshot012 = "fdd75e29487490b4ef3eb1792242fc00"

// extract writes an item's tar (what `backupfs cat ITEM` and `bupstash get`
// print) into a new directory with tar -x.
func extract(t *testing.T, r *bupstash.Repository, id string) string {
	t.Helper()
	items, err := r.Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	it, err := bupstash.FindItem(items, id)
	if err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if err := dump.Tar(context.Background(), r.OpenItem(it), &tarball); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("tar", "-xpf", "-", "-C", dir, "--xattrs", "--xattrs-include=*")
	cmd.Stdin = &tarball
	out, err := cmd.CombinedOutput()
	// Bupstash encodes a pre-1970 mtime in a way GNU tar warns about and
	// then exits 2 for; anything else is a failure.
	if err != nil && !onlyTimeWarnings(string(out)) {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	return dir
}

func onlyTimeWarnings(out string) bool {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(l, "time_t range") && !strings.Contains(l, "implausibly old") && !strings.Contains(l, "Exiting with failure status") {
			return false
		}
	}
	return true
}

var specialFile = regexp.MustCompile(`^File (.+) is a (fifo|character special file|block special file) while file (.+) is a (fifo|character special file|block special file)$`)

// sameTrees runs diff -r and accepts only its notes about special files,
// which it cannot compare, when both sides are of the same kind.
func sameTrees(t *testing.T, a, b string) {
	t.Helper()
	out, err := exec.Command("diff", "-r", "--no-dereference", a, b).CombinedOutput()
	if err == nil {
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := specialFile.FindStringSubmatch(l)
		if m == nil || m[2] != m[4] {
			t.Fatalf("diff -r %s %s:\n%s", a, b, out)
		}
	}
}

// cp -a of a snapshot out of the mount equals what the CLI extracts, and
// both equal the mount itself under diff -r.
func TestCpAndDiff(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	for _, tt := range []struct{ source, id string }{
		{"v0.12.1", snapshot012},
		{"v0.11.1", "21005b7805101fabe090ee972e7251fe"},
		{"maxbupst", "81e33ca1db1e6d562bc7146ddd9b37ab"},
	} {
		item := m.path(tt.source, "ids", tt.id)
		extracted := extract(t, m.repo[tt.source], tt.id)
		copied := filepath.Join(t.TempDir(), "copy")
		fusetest.Run(t, "cp", "-a", item, copied)
		sameTrees(t, extracted, copied)
		sameTrees(t, extracted, item)

		// cp -a kept modes, times and xattrs.
		for _, p := range []string{"a.txt", "sub", "dangling", "setuid.sh"} {
			src, err1 := os.Lstat(filepath.Join(item, p))
			dst, err2 := os.Lstat(filepath.Join(copied, p))
			if os.IsNotExist(err1) {
				continue
			}
			if err1 != nil || err2 != nil || src.Mode() != dst.Mode() || !src.ModTime().Equal(dst.ModTime()) {
				t.Errorf("%s: cp -a gave %v %v, mount has %v %v (%v %v)", p, dst.Mode(), dst.ModTime(), src.Mode(), src.ModTime(), err1, err2)
			}
		}
	}
	copied := filepath.Join(t.TempDir(), "copy")
	fusetest.Run(t, "cp", "-a", m.path("v0.12.1", "ids", snapshot012), copied)
	if out := fusetest.Run(t, "getfattr", "--absolute-names", "-d", filepath.Join(copied, "a.txt")); !strings.Contains(out, `user.comment="xattr value"`) {
		t.Fatalf("xattr not copied: %s", out)
	}
}

func TestTarOfTheMount(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	dir := m.path("v0.12.1", "ids", snapshot012)
	tarball := filepath.Join(t.TempDir(), "m.tar")
	fusetest.Run(t, "tar", "-cf", tarball, "-C", dir, ".")
	out := fusetest.Run(t, "tar", "-tvf", tarball)
	for _, want := range []string{"./big.txt", "./sub/nested/deeper/file.txt", "./dangling -> does/not/exist", "./hard2 link to ./hard1"} {
		if !strings.Contains(out, want) {
			t.Errorf("tar listing lacks %q:\n%s", want, out)
		}
	}
	back := t.TempDir()
	fusetest.Run(t, "tar", "-xpf", tarball, "-C", back)
	sameTrees(t, dir, back)
}

func TestLsLR(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	out := fusetest.Run(t, "ls", "-lR", "--time-style=+%Y-%m-%dT%H:%M:%S", m.path("v0.12.1"))
	for _, want := range []string{
		"-rw-r--r-- 1 root root        6 2001-02-03T04:05:06 a.txt",
		"crw-r--r-- 1 root root     1, 3 ",
		"lrwxrwxrwx 1 root root       14 1969-12-31T23:59:58 dangling -> does/not/exist",
		"-rwsr-xr-x 1 root root       10 ",
		"prw-r--r-- 1 root root        0 ",
		"-rw-r--r-- 2 root root       19 ",
		"latest -> ids/48a22dd86a5d60520ab4a0f6f1c07bef",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ls -lR lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestStatAndGetfattr(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	dir := m.path("v0.12.1", "ids", snapshot012)
	out := fusetest.Run(t, "stat", "-c", "%n %s %b %f %u:%g %h %y %z %t:%T", filepath.Join(dir, "a.txt"), filepath.Join(dir, "chardev"), filepath.Join(dir, "sparse.bin"))
	for _, want := range []string{
		"a.txt 6 1 81a4 0:0 1 2001-02-03 04:05:06.123456789 +0000 2026-11-23 04:29:39.692707377 +0000",
		"chardev 0 0 21a4 0:0 1 ",
		" 1:3",
		"sparse.bin 5242880 8 81a4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stat output lacks %q:\n%s", want, out)
		}
	}
	out = fusetest.Run(t, "getfattr", "--absolute-names", "-d", "-m", "-", filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub"))
	if !strings.Contains(out, `user.comment="xattr value"`) || !strings.Contains(out, `user.dirattr=0sAAFiaW5hcnk=`) {
		t.Errorf("getfattr:\n%s", out)
	}
	if out := fusetest.Run(t, "readlink", filepath.Join(dir, "link-to-a")); out != "a.txt\n" {
		t.Errorf("readlink = %q", out)
	}
}
