package fusefs_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/location"
)

// Remote repositories through the genuine servers, mounted: the same
// checks the local reader passes.

// copyDir copies a repository for a server to open (bupstash serve may
// write to what it opens).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", src, err, out)
	}
	return dst
}

// remoteSource is a repository served by the genuine bupstash serve of
// version, with extra server flags. The server opens a copy of repo
// (under testdata), or dir when set.
type remoteSource struct {
	name, repo, key, version string
	flags                    []string
	dir                      string
}

// mountRemote mounts each source through its server, read through
// BUPSTASH_REPOSITORY_COMMAND-style commands.
func mountRemote(t *testing.T, opts fusefs.Options, remote location.Remote, srcs ...remoteSource) *mounted {
	t.Helper()
	m := &mounted{log: &logBuffer{}, repo: map[string]*bupstash.Repository{}}
	opts.Logger = slog.New(slog.NewTextHandler(m.log, nil))
	m.fs = fusefs.New(opts)
	chunks := cache.New(64 << 20)
	for _, s := range srcs {
		bin := testtools.Bupstash(t, s.version)
		k, err := bupstashtest.LoadKey(filepath.Join(testdata, s.key))
		if err != nil {
			t.Fatal(err)
		}
		dir := s.dir
		if dir == "" {
			dir = copyDir(t, filepath.Join(testdata, s.repo))
		}
		loc, err := location.FromCommand(strings.Join(append(append([]string{bin, "serve"}, s.flags...), dir), " "))
		if err != nil {
			t.Fatal(err)
		}
		r, err := location.OpenBupstashWith(context.Background(), loc, k, bupstash.Options{Cache: chunks, Logger: opts.Logger}, remote)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if err := m.fs.AddBupstash(s.name, r); err != nil {
			t.Fatal(err)
		}
		m.repo[s.name] = r
	}
	m.dir = fusetest.Mount(t, m.fs, fusefs.MountOptions{})
	return m
}

// serverOpens says which fixtures (by name) a server version opens:
// 0.10.3 opens schema 6 only.
func serverOpens(version, fixture string) bool {
	if version == "0.10.3" {
		return fixture == "v0.10.3"
	}
	return fixture != "maxbupst" && fixture != "simplegetput" || version == "0.12.1"
}

// Every entry of every fixture snapshot, through each genuine server that
// opens it, mounted: lstat, readlink, xattrs and contents as Bupstash
// printed them; contents again at random offsets.
func TestRemoteMountMatchesBupstashListings(t *testing.T) {
	for _, v := range testtools.BupstashVersions {
		t.Run(v, func(t *testing.T) {
			var srcs []remoteSource
			var fxs []fixture
			for _, f := range fixtures {
				if f.expected != "" && serverOpens(v, f.name) {
					srcs = append(srcs, remoteSource{name: f.name, repo: f.repo, key: f.key, version: v})
					fxs = append(fxs, f)
				}
			}
			remote := location.Remote{}
			if v != "0.11.1" {
				remote.CacheDir, remote.CacheSize = t.TempDir(), 1<<30
			}
			m := mountRemote(t, fsOptions(), remote, srcs...)
			if n := checkListings(t, m, fxs); n < 30 {
				t.Fatalf("only %d entries checked", n)
			}
			if n := randomReads(t, m.dir); n < 10 {
				t.Fatalf("only %d files read", n)
			}
		})
	}
}

// randomReads reads every regular file under dir whole, then at random
// offsets, and compares. It returns the number of files read.
func randomReads(t *testing.T, dir string) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		whole, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for range 4 {
			if len(whole) == 0 {
				break
			}
			off := rng.IntN(len(whole))
			buf := make([]byte, min(rng.IntN(9000)+1, len(whole)-off))
			if _, err := f.ReadAt(buf, int64(off)); err != nil {
				return err
			}
			if !bytes.Equal(buf, whole[off:off+len(buf)]) {
				t.Errorf("%s: %d bytes at %d differ from the whole file's", p, len(buf), off)
			}
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Sub-keys through a server: a list-contents key lists trees and cannot
// open files (EACCES); a list-only key lists items as empty directories.
func TestRemoteSubKeys(t *testing.T) {
	for _, v := range []string{"0.11.1", "0.12.1"} {
		t.Run(v, func(t *testing.T) {
			m := mountRemote(t, fsOptions(), location.Remote{},
				remoteSource{name: "contents", repo: "bupstash-0.12.1/repo", key: "bupstash-0.12.1/keys/list-contents.key", version: v},
				remoteSource{name: "list", repo: "bupstash-0.12.1/repo", key: "bupstash-0.12.1/keys/list.key", version: v},
			)
			root := m.path("contents", "ids", snapshot012)
			for _, rel := range []string{"a.txt", "sub/nested/deeper/file.txt", "dangling"} {
				if _, err := os.Lstat(filepath.Join(root, rel)); err != nil {
					t.Errorf("list-contents key: %v", err)
				}
			}
			if _, err := os.ReadFile(filepath.Join(root, "a.txt")); !errors.Is(err, syscall.EACCES) {
				t.Errorf("list-contents key, reading a file: %v, want EACCES", err)
			}
			ids, err := os.ReadDir(m.path("list", "ids"))
			if err != nil || len(ids) != 7 {
				t.Fatalf("list key: %d items, %v", len(ids), err)
			}
			for _, id := range ids {
				ents, err := os.ReadDir(m.path("list", "ids", id.Name()))
				if err == nil && len(ents) > 0 {
					t.Errorf("list key: %s shows %d entries", id.Name(), len(ents))
				}
			}
		})
	}
}

// bupstash gc by the genuine client while the repository is mounted:
// idle connections are closed, so gc runs; the removed item leaves the
// mount, and a file of it still open fails with ESTALE.
func TestRemoteGCWhileMounted(t *testing.T) {
	const v = "0.12.1"
	dir := copyDir(t, filepath.Join(testdata, "bupstash-0.12.1/repo"))
	opts := fsOptions()
	opts.Refresh = 100 * time.Millisecond
	m := mountRemote(t, opts, location.Remote{IdleClose: 300 * time.Millisecond, Refresh: 100 * time.Millisecond},
		remoteSource{name: "r", key: "bupstash-0.12.1/keys/primary.key", version: v, dir: dir})
	f, err := os.Open(m.path("r", "ids", snapshot012, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 100)
	if _, err := f.ReadAt(buf[:1], 0); err != nil {
		t.Fatal(err)
	}
	bupstashRun(t, v, dir, "bupstash-0.12.1/keys/primary.key", "rm", "id="+snapshot012)
	start := time.Now()
	bupstashRun(t, v, dir, "bupstash-0.12.1/keys/primary.key", "gc")
	t.Logf("gc ran after %v", time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Lstat(m.path("r", "ids", snapshot012)); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed item is still in the mount")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("read of an open file of the removed item: %v, want ESTALE", err)
	}
	ids, err := os.ReadDir(m.path("r", "ids"))
	if err != nil || len(ids) != 6 {
		t.Fatalf("%d items after gc, %v", len(ids), err)
	}
	if n := randomReads(t, m.path("r", "ids")); n == 0 {
		t.Fatal("no file left to read")
	}
}

// A list-only server (--allow-list): items and trees list; reading a
// file fails with EACCES, and one log line quotes the server.
func TestRemoteAllowListOnly(t *testing.T) {
	for _, v := range []string{"0.10.3", "0.12.1"} {
		t.Run(v, func(t *testing.T) {
			f := fixtures[2] // v0.10.3, which every server opens
			m := mountRemote(t, fsOptions(), location.Remote{}, remoteSource{name: "r", repo: f.repo, key: f.key, version: v, flags: []string{"--allow-list"}})
			var files []string
			filepath.WalkDir(m.path("r", "ids"), func(p string, d fs.DirEntry, err error) error {
				if fi, ierr := d.Info(); err == nil && d.Type().IsRegular() && ierr == nil && fi.Size() > 0 {
					files = append(files, p)
				}
				return err
			})
			if len(files) < 3 {
				t.Fatalf("only %d files listed", len(files))
			}
			for _, p := range files {
				_, err := os.ReadFile(p)
				if !errors.Is(err, syscall.EACCES) {
					t.Fatalf("read %s: %v, want EACCES", p, err)
				}
			}
			if n := strings.Count(m.log.String(), "server has disabled get for this client"); n != 1 {
				t.Fatalf("%d log lines quote the server, want 1:\n%s", n, m.log)
			}
		})
	}
}

// bupstashRun runs the genuine client on a repository.
func bupstashRun(t *testing.T, version, dir, key string, args ...string) {
	t.Helper()
	cmd := exec.Command(testtools.Bupstash(t, version), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "BUPSTASH_REPOSITORY=" + dir,
		"BUPSTASH_KEY=" + filepath.Join(testdata, key), "BUPSTASH_QUERY_CACHE=" + filepath.Join(t.TempDir(), "q")}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	}()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bupstash %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
