package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/sshtest"
	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/internal/testtools"
)

// Remote repositories mounted by the real binary, through a real sshd
// whose ForceCommand runs the genuine bupstash serve.

// remoteFixture is a generated repository served through sshd.
type remoteFixture struct {
	repo, key, item string
	huge            int64  // size of huge.bin at the item's root
	raw             string // a raw item of 8 MiB, named data.bin
	srv             *sshtest.Server
	down            string // while this file exists, the server refuses
}

// newRemoteFixture writes a repository (a snapshot of 300 files, hard
// links, xattrs, a sparse file and a 40 MiB file) and serves it through
// sshd, behind a script that refuses while fixture.down exists.
func newRemoteFixture(t *testing.T) *remoteFixture {
	t.Helper()
	dir := t.TempDir()
	f := &remoteFixture{repo: filepath.Join(dir, "repo"), key: filepath.Join(dir, "key"), huge: 40 << 20, down: filepath.Join(dir, "down")}
	r, err := testrepo.Create(f.repo, nil)
	if err != nil {
		t.Fatal(err)
	}
	shape := testrepo.Shape{Seed: 21, Files: 300, FilesPerDir: 20, Depth: 3, Huge: f.huge, SparseFiles: 1, Hardlinks: 3, XattrEvery: 5}
	info, err := r.AddSnapshot(context.Background(), shape.Source(), testrepo.ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	f.item = info.ID.String()
	rawInfo, err := r.AddRaw(context.Background(), testrepo.Random(8<<20, 3).Open(), testrepo.ItemMeta{Tags: map[string]string{"name": "data.bin"}})
	if err != nil {
		t.Fatal(err)
	}
	f.raw = rawInfo.ID.String()
	if err := r.WriteKey(f.key); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "serve.sh")
	os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo 'bupstash serve: down for maintenance' >&2; exit 1; fi\nexec %s serve --allow-get %s\n",
		f.down, testtools.Bupstash(t, "0.12.1"), f.repo)), 0o755)
	f.srv = sshtest.Start(t, script)
	return f
}

// mountArgs are the arguments of a mount of the fixture on mnt.
func (f *remoteFixture) mountArgs(mnt string, extra ...string) []string {
	args := []string{"--repo", f.srv.URL(""), "--key", f.key, "--name", "repo"}
	for _, o := range f.srv.Options {
		args = append(args, "--ssh-option", o)
	}
	return append(append(args, extra...), mnt)
}

// serversOf lists the processes serving the fixture: bupstash serve on
// its repository, and ssh clients to its port.
func (f *remoteFixture) serversOf() []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		st, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if strings.Contains(string(st), ") Z ") {
			continue
		}
		if (strings.Contains(cmd, " serve ") && strings.Contains(cmd, f.repo) && !strings.HasPrefix(cmd, "/bin/sh")) ||
			(strings.HasPrefix(cmd, "ssh ") && strings.Contains(cmd, fmt.Sprintf("-p %d ", f.srv.Port))) {
			out = append(out, d.Name()+": "+cmd)
		}
	}
	return out
}

// noServersLeft waits until no process serves the fixture.
func (f *remoteFixture) noServersLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.serversOf()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes left after the mount ended: %v", f.serversOf())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killServers kills the bupstash serve processes of the fixture.
func (f *remoteFixture) killServers(t *testing.T) {
	t.Helper()
	n := 0
	for _, p := range f.serversOf() {
		if !strings.Contains(p, " serve ") {
			continue
		}
		var pid int
		fmt.Sscan(p, &pid)
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no server process to kill")
	}
}

// extractWithBupstash extracts the item with the genuine client from the
// repository itself: `bupstash get id=… | tar -x`.
func (f *remoteFixture) extractWithBupstash(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	get := exec.Command(testtools.Bupstash(t, "0.12.1"), "get", "id="+f.item)
	get.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "BUPSTASH_REPOSITORY=" + f.repo,
		"BUPSTASH_KEY=" + f.key, "BUPSTASH_QUERY_CACHE=" + filepath.Join(t.TempDir(), "q")}
	tar := exec.Command("tar", "-xpf", "-", "-C", dst, "--xattrs", "--xattrs-include=*")
	pipe, err := get.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tar.Stdin = pipe
	var getErr strings.Builder
	get.Stderr = &getErr
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	out, terr := tar.CombinedOutput()
	if err := get.Wait(); err != nil || terr != nil {
		t.Fatalf("bupstash get | tar -x: %v %v: %s %s", err, terr, getErr.String(), out)
	}
	return dst
}

// The mount through sshd: `cp -a` of the snapshot equals what the
// genuine client extracts (diff -r, and every entry's type, mode,
// owner, size and mtime); unmounting leaves no ssh or server process.
func TestRemoteMountSSHCopy(t *testing.T) {
	f := newRemoteFixture(t)
	mnt := t.TempDir()
	p := startMount(t, nil, f.mountArgs(mnt, "--remote-cache-size", "0")...)
	copied := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", filepath.Join(mnt, "repo", "ids", f.item), copied).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s\n%s", err, out, p.stderr)
	}
	want := f.extractWithBupstash(t)
	if out, err := exec.Command("diff", "-r", "--no-dereference", copied, want).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, out)
	}
	sameMetadata(t, copied, want)
	p.stop(t)
	if fusetest.Mounted(mnt) {
		t.Fatal("still mounted")
	}
	f.noServersLeft(t)
}

// sameMetadata compares every entry's type, mode, owner, size and mtime
// (directories' mtimes aside: extraction order sets them).
func sameMetadata(t *testing.T, got, want string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		var a, b syscall.Stat_t
		if err := syscall.Lstat(p, &b); err != nil {
			return err
		}
		if err := syscall.Lstat(filepath.Join(got, rel), &a); err != nil {
			return err
		}
		// Seconds: the tar bupstash writes has no finer times.
		if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || (!d.IsDir() && (a.Size != b.Size || a.Mtim.Sec != b.Mtim.Sec)) {
			t.Errorf("%s: mode %o uid %d gid %d size %d mtime %v; bupstash extracts %o %d %d %d %v",
				rel, a.Mode, a.Uid, a.Gid, a.Size, a.Mtim, b.Mode, b.Uid, b.Gid, b.Size, b.Mtim)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 300 {
		t.Fatalf("only %d entries compared", n)
	}
}

// SIGTERM while a reader streams a large file over ssh: the mount goes
// away promptly, the reader gets an error rather than hanging, and no
// ssh or server process is left.
func TestRemoteMountSIGTERMUnderLoad(t *testing.T) {
	f := newRemoteFixture(t)
	mnt := t.TempDir()
	p := startMount(t, nil, f.mountArgs(mnt, "--remote-cache-size", "0")...)
	reader := exec.Command("cat", filepath.Join(mnt, "repo", "ids", f.item, "huge.bin"))
	reader.Stdout = io.Discard
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Wait() }()
	// Under way: data is flowing.
	deadline := time.Now().Add(10 * time.Second)
	for len(f.serversOf()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 15*time.Second)
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	select {
	case <-readerDone:
	case <-time.After(10 * time.Second):
		reader.Process.Kill()
		t.Fatal("the reader hung after the mount ended")
	}
	if fusetest.Mounted(mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	f.noServersLeft(t)
}

// The server killed while a file is being read, and unreachable for a
// while: the read fails with EIO, the log has one line quoting the
// server, the mount stays up, and once the server is back the next read
// reconnects and gets the right bytes.
func TestRemoteMountServerKilled(t *testing.T) {
	f := newRemoteFixture(t)
	mnt := t.TempDir()
	p := startMount(t, nil, f.mountArgs(mnt, "--remote-cache-size", "0", "--remote-refresh", "1h")...)
	path := filepath.Join(mnt, "repo", "ids", f.item, "huge.bin")
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	head := make([]byte, 4096)
	if _, err := file.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	// Killed while reachable: the next read goes to a new connection.
	f.killServers(t)
	mid := make([]byte, 4096)
	if _, err := file.ReadAt(mid, f.huge/2); err != nil {
		t.Fatalf("read after the server was killed: %v\n%s", err, p.stderr)
	}

	// Down: a read of data not fetched yet (another item) fails.
	os.WriteFile(f.down, nil, 0o600)
	f.killServers(t)
	rawPath := filepath.Join(mnt, "repo", "ids", f.raw, "data.bin")
	if _, err := os.ReadFile(rawPath); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read while the server is down: %v, want EIO", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(p.stderr.String(), "down for maintenance"); n != 1 {
		t.Fatalf("%d log lines quote the server, want 1:\n%s", n, p.stderr)
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, "repo", "ids")); err != nil || len(ents) != 2 {
		t.Fatalf("the mount went down with the server: %v", err)
	}
	os.Remove(f.down)
	var raw []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		raw, err = os.ReadFile(rawPath)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnection: %v\n%s", err, p.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	local := runCmd(t, nil, "cat", "--repo", f.repo, "--key", f.key, f.item, "huge.bin")
	if string(head) != local.stdout[:4096] || string(mid) != local.stdout[f.huge/2:f.huge/2+4096] {
		t.Fatal("bytes read around the outage differ from the repository's")
	}
	if string(raw) != runCmd(t, nil, "cat", "--repo", f.repo, "--key", f.key, f.raw).stdout {
		t.Fatal("the item read after the outage differs from the repository's")
	}
	p.stop(t)
	f.noServersLeft(t)
}

// A second mount of the same repository fetches no chunk the first left
// in the disk cache (counted in the mounts' closing lines).
func TestRemoteSecondMountFetchesNothing(t *testing.T) {
	f := newRemoteFixture(t)
	cacheDir := t.TempDir()
	var counts []int
	for range 2 {
		mnt := t.TempDir()
		p := startMount(t, nil, f.mountArgs(mnt, "--remote-cache-dir", cacheDir)...)
		if out, err := exec.Command("sh", "-c", "ls -lR "+mnt+" >/dev/null && cat "+filepath.Join(mnt, "repo", "ids", f.item, "huge.bin")+" | cksum").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		p.stop(t)
		counts = append(counts, fetched(t, p.stderr.String()))
	}
	if counts[0] == 0 || counts[1] != 0 {
		t.Fatalf("chunks fetched by the first and second mounts: %v", counts)
	}
}
