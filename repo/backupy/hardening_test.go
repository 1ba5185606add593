package backupy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/internal/untrusted"
)

// withDeadline fails the test if fn blocks: a hostile file must be
// refused at once, never waited on.
func withDeadline(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("blocked on a hostile file")
	}
}

func mkfifo(t *testing.T, name string) string {
	t.Helper()
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func symlink(t *testing.T, target, name string) string {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
	return name
}

func sparse(t *testing.T, name string, size int64) string {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return name
}

// Token and keyring files that are FIFOs, devices or huge are refused at
// once, with an error naming the file and what is wrong with it.
func TestHostileKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		src  KeySources
		want error
		says string
	}{
		{"token FIFO", KeySources{TokenFiles: []string{mkfifo(t, filepath.Join(dir, "t.fifo"))}}, untrusted.ErrNotRegular, "a FIFO"},
		{"token /dev/zero", KeySources{TokenFiles: []string{"/dev/zero"}}, untrusted.ErrNotRegular, "a character device"},
		{"token link to /dev/zero", KeySources{TokenFiles: []string{symlink(t, "/dev/zero", filepath.Join(dir, "zero.jwt"))}}, untrusted.ErrNotRegular, "a character device"},
		{"huge token", KeySources{TokenFiles: []string{sparse(t, filepath.Join(dir, "big.jwt"), 3<<30)}}, untrusted.ErrTooLarge, "3 GiB"},
		{"keyring FIFO", KeySources{KeyringFiles: []string{mkfifo(t, filepath.Join(dir, "r.fifo"))}}, untrusted.ErrNotRegular, "a FIFO"},
		{"keyring /dev/zero", KeySources{KeyringFiles: []string{"/dev/zero"}}, untrusted.ErrNotRegular, "a character device"},
		{"huge keyring", KeySources{KeyringFiles: []string{sparse(t, filepath.Join(dir, "big.ring"), 3<<30)}}, untrusted.ErrTooLarge, "3 GiB"},
		{"keyring entry naming a FIFO", KeySources{KeyringFiles: []string{writeFile(t, filepath.Join(dir, "ring"), "token:t.fifo\n")}}, untrusted.ErrNotRegular, "a FIFO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withDeadline(t, func() {
				_, err := LoadKeys(tc.src, nil)
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
					t.Errorf("got %v, want %v saying %q", err, tc.want, tc.says)
				}
			})
		})
	}
	// Standard input is read with the same limit.
	withDeadline(t, func() {
		zero, err := os.Open("/dev/zero")
		if err != nil {
			t.Fatal(err)
		}
		defer zero.Close()
		if _, err := LoadKeys(KeySources{TokenFiles: []string{"-"}, Stdin: zero}, nil); !errors.Is(err, untrusted.ErrTooLarge) {
			t.Errorf("endless standard input: %v", err)
		}
	})
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// One bad file in a token directory is skipped with one warning naming
// it; the other tokens still load.
func TestTokenDirSkipsBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := newKey(t)
	writeFile(t, filepath.Join(dir, "a.jwt"), tokenFor(good, "good", ""))
	bad := []string{
		mkfifo(t, filepath.Join(dir, "b.jwt")),
		symlink(t, "/dev/zero", filepath.Join(dir, "c.token")),
		writeFile(t, filepath.Join(dir, "d.jwt"), "not.a.token"),
		symlink(t, filepath.Join(dir, "gone"), filepath.Join(dir, "e.jwt")),
	}
	logs := &logBuffer{}
	withDeadline(t, func() {
		kr, err := LoadKeys(KeySources{TokenDirs: []string{dir}}, logs.logger())
		if err != nil || kr.Len() != 1 {
			t.Fatalf("%d keys, %v", kr.Len(), err)
		}
	})
	out := logs.String()
	if n := strings.Count(out, "skipping unreadable token file"); n != len(bad) {
		t.Fatalf("%d warnings for %d bad files:\n%s", n, len(bad), out)
	}
	for _, b := range bad {
		if !strings.Contains(out, b) {
			t.Errorf("no warning names %s", b)
		}
	}
	assertNoLeak(t, out, good)
}

// Opening a store changes nothing about an existing cache directory: a
// mount refused afterwards leaves its mode alone. The first decoded data
// written makes it private.
func TestCacheDirBecomesPrivateOnFirstWrite(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "m", "")), "t")
	ts := newTestStore(t, kr, map[string][]byte{"run_m.enc": agentEncrypt(t, agentZstd(t, textish(1, 300_000), true), key)})
	ts.Close()
	cacheDir := t.TempDir()
	if err := os.Chmod(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mode := func() os.FileMode {
		fi, err := os.Stat(cacheDir)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	ts.opts.CacheDir = cacheDir
	ts.open()
	if _, err := ts.Files(ctx, ts.blob("run_m.enc")); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	if m := mode(); m != 0o755 {
		t.Fatalf("opening a store made the cache directory %v", m)
	}
	ts.open()
	if _, err := ts.file("run_m.enc", FileMain).Size(ctx); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o700 {
		t.Fatalf("decoding into the cache left it %v", m)
	}
	if n := strings.Count(ts.log.String(), "cache directory was not private"); n != 1 {
		t.Fatalf("%d warnings about the mode:\n%s", n, ts.log.String())
	}
}

// A full disk under the cache directory evicts decoded files no one uses,
// oldest first, and tries again; when nothing is left to evict, the decode
// fails with an error that is not ENOSPC (readers see EIO), and nothing is
// logged twice.
func TestFullCacheDiskEvictsThenFails(t *testing.T) {
	if os.Geteuid() != 0 {
		if testtools.Required() {
			t.Fatal("mounting a small tmpfs needs root (BACKUPFS_REQUIRE_TOOLS=1)")
		}
		t.Skip("skipped: mounting a small tmpfs needs root")
	}
	ctx := context.Background()
	cacheDir := t.TempDir()
	if err := syscall.Mount("tmpfs", cacheDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=4m,mode=0700"); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(cacheDir, syscall.MNT_DETACH) })
	dumps := map[string][]byte{
		"run_a.enc": textish(1, 5<<19), // 2.5 MiB
		"run_b.enc": textish(2, 3<<20),
		"run_c.enc": textish(3, 6<<20), // more than the disk
	}
	objects := map[string][]byte{}
	for name, d := range dumps {
		objects[name] = agentZstd(t, d, false)
	}
	ts := newTestStore(t, nil, objects)
	ts.Close()
	ts.opts.CacheDir = cacheDir
	ts.open()
	size := func(name string) (int64, error) {
		return ts.file(name, FileMain).Size(ctx)
	}
	if n, err := size("run_a.enc"); err != nil || n != int64(len(dumps["run_a.enc"])) {
		t.Fatalf("a: %d %v", n, err)
	}
	if n, err := size("run_b.enc"); err != nil || n != int64(len(dumps["run_b.enc"])) {
		t.Fatalf("b after evicting a: %d %v", n, err)
	}
	if e, _ := ts.disk.lookup(ts.blob("run_a.enc").id); e.Cached != 0 {
		t.Fatal("a was not evicted to make room")
	}
	got, err := readAll(ctx, ts.file("run_b.enc", FileMain), 1<<16)
	if err != nil || string(got) != string(dumps["run_b.enc"]) {
		t.Fatalf("b reads back wrong: %v", err)
	}
	_, err = size("run_c.enc")
	var errno syscall.Errno
	if !errors.Is(err, errCacheFull) || errors.As(err, &errno) || !strings.Contains(err.Error(), "run_c.enc") {
		t.Fatalf("c: %v, want errCacheFull naming the object and no errno", err)
	}
	if strings.Contains(ts.log.String(), "decoding into the cache failed") {
		t.Fatalf("the store logged the failure the reader reports:\n%s", ts.log.String())
	}
	// What was decoded before still reads, and the smaller dumps decode
	// again once there is room.
	if n, err := size("run_a.enc"); err != nil || n != int64(len(dumps["run_a.enc"])) {
		t.Fatalf("a again: %d %v", n, err)
	}
}

// A FIFO or a device among the objects is never opened: listing skips
// it, and one that replaces a listed object is refused, not waited on.
func TestStoreNeverBlocksOnSpecialFiles(t *testing.T) {
	ctx := context.Background()
	dump := textish(4, 1000)
	ts := newTestStore(t, nil, map[string][]byte{"a/run_1.enc": agentZstd(t, dump, false), "a/run_2.enc": agentZstd(t, dump, false)})
	mkfifo(t, filepath.Join(ts.dir, "a", "fifo.enc"))
	symlink(t, "/dev/zero", filepath.Join(ts.dir, "a", "zero.enc"))
	withDeadline(t, func() {
		if err := ts.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, b := range ts.Blobs() {
			paths = append(paths, b.Path)
		}
		if strings.Join(paths, " ") != "a/run_1.enc a/run_2.enc" {
			t.Fatalf("listed %v", paths)
		}
		// Replaced by a FIFO after it was listed.
		f := ts.file("a/run_2.enc", FileMain)
		os.Remove(filepath.Join(ts.dir, "a", "run_2.enc"))
		mkfifo(t, filepath.Join(ts.dir, "a", "run_2.enc"))
		if _, err := readAll(ctx, f, 100); !errors.Is(err, untrusted.ErrNotRegular) {
			t.Fatalf("read of an object replaced by a FIFO: %v", err)
		}
	})
}
