package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A repository is untrusted storage: what these tests put in it must be
// refused at once, named in one line, and never allowed to block a
// command or a mount, or to make memory grow.

// Item files that are not item files: a sparse 3 GiB file, a symlink to
// /dev/zero (endless), a FIFO with no writer (blocks an open) and a
// directory.
var hostileItems = []struct{ id, what string }{
	{"11111111111111111111111111111111", "3 GiB"},
	{"22222222222222222222222222222222", "a character device"},
	{"33333333333333333333333333333333", "a FIFO"},
	{"44444444444444444444444444444444", "a directory"},
}

func plantHostileItems(t *testing.T, repo string) {
	t.Helper()
	items := filepath.Join(repo, "items")
	f, err := os.Create(filepath.Join(items, hostileItems[0].id))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Symlink("/dev/zero", filepath.Join(items, hostileItems[1].id)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(items, hostileItems[2].id), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(items, hostileItems[3].id), 0o700); err != nil {
		t.Fatal(err)
	}
}

// runBinary runs the backupfs binary with a deadline and returns its
// exit status, output and peak RSS in KiB.
func runBinary(t *testing.T, within time.Duration, args ...string) (code int, stdout, stderr string, maxRSS int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, backupfsBinary(t), args...)
	cmd.Env = cleanEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peak := watchPeak(cmd.Process.Pid) // not the wait's rusage: see watchPeak
	err := cmd.Wait()
	maxRSS = peak()
	if ctx.Err() != nil {
		t.Fatalf("backupfs %s did not finish within %v:\n%s", strings.Join(args, " "), within, errb.String())
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String(), maxRSS
}

// backupfs list refuses each bad file in the one error line, lists the
// good items, and neither hangs nor allocates what a file claims.
func TestListRefusesHostileItemFiles(t *testing.T) {
	dir := copyRepo(t, repo012)
	plantHostileItems(t, dir)
	code, stdout, stderr, rss := runBinary(t, 30*time.Second, "list", "--repo", dir, "--key", primary012)
	if code != exitDamaged || strings.Count(stdout, "\n") != 7 {
		t.Fatalf("exit %d, %d items listed; stderr %q", code, strings.Count(stdout, "\n"), stderr)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "4 of 11 items could not be read") {
		t.Fatalf("stderr is not one line naming 4 of 11 items: %q", stderr)
	}
	for _, h := range hostileItems {
		if !strings.Contains(stderr, h.id) || !strings.Contains(stderr, h.what) {
			t.Errorf("stderr does not name %s as %s: %q", h.id, h.what, stderr)
		}
	}
	// The race detector's own overhead is about 100 MiB; a read of the
	// 3 GiB file, or of /dev/zero, would be far beyond.
	if rss > 256<<10 {
		t.Errorf("peak RSS %d MiB", rss>>10)
	}
}

// answersWithin fails the test if fn does not return within d.
func answersWithin(t *testing.T, what string, d time.Duration, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s took longer than %v", what, d)
	}
}

// The same files appearing in a live mount's repository: the mount says
// so once, keeps answering, and its memory does not grow.
func TestMountSurvivesHostileItemFiles(t *testing.T) {
	dir := copyRepo(t, repo012)
	mnt := t.TempDir()
	p := startMount(t, nil, "--repo", dir, "--key", abs(t, primary012), "--cache-size", "8M", mnt)
	ids := filepath.Join(mnt, "repo", "ids")
	file := filepath.Join(ids, "fdd75e29487490b4ef3eb1792242fc00", "sub", "s.txt")
	if _, err := os.ReadFile(file); err != nil {
		t.Fatal(err)
	}
	before := vmRSS(t, p.cmd.Process.Pid, "VmRSS")
	plantHostileItems(t, dir)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stderr.String(), "some items cannot be read") {
		if time.Now().After(deadline) {
			t.Fatalf("the mount did not report the bad items:\n%s", p.stderr)
		}
		answersWithin(t, "ls ids/", 5*time.Second, func() error { _, err := os.ReadDir(ids); return err })
		time.Sleep(100 * time.Millisecond)
	}
	answersWithin(t, "ls ids/", 5*time.Second, func() error {
		ents, err := os.ReadDir(ids)
		if err == nil && len(ents) != 7 {
			err = fmt.Errorf("%d items listed, want the 7 good ones", len(ents))
		}
		return err
	})
	answersWithin(t, "a read of another item", 5*time.Second, func() error {
		b, err := os.ReadFile(file)
		if err == nil && string(b) != "sub file\n" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	})
	if grew := vmRSS(t, p.cmd.Process.Pid, "VmRSS") - before; grew > 32<<10 {
		t.Errorf("the mount's RSS grew by %d MiB", grew>>10)
	}
	if n := strings.Count(p.stderr.String(), "some items cannot be read"); n != 1 {
		t.Errorf("reported %d times, want once:\n%s", n, p.stderr)
	}
}

// Another process holding the transaction lock (bupstash gc or put)
// while the item set changes delays only the mount's refresh: ls, stat
// and reads answer at once from the last list, and the change shows once
// the lock is released.
func TestMountDoesNotWaitForTheTransactionLock(t *testing.T) {
	dir := copyRepo(t, repo012)
	mnt := t.TempDir()
	startMount(t, nil, "--repo", dir, "--key", abs(t, primary012), mnt)
	ids := filepath.Join(mnt, "repo", "ids")
	const victim = "fdd75e29487490b4ef3eb1792242fc00"

	lock, err := os.OpenFile(filepath.Join(dir, "tx.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	wr := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(lock.Fd(), syscall.F_SETLK, &wr); err != nil {
		t.Fatal(err)
	}
	// As bupstash rm would, under the lock.
	if err := os.Rename(filepath.Join(dir, "items", victim), filepath.Join(dir, "items", victim+".removed")); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	for time.Since(held) < 4*time.Second {
		answersWithin(t, "ls ids/ while the lock is held", time.Second, func() error {
			_, err := os.ReadDir(ids)
			return err
		})
		answersWithin(t, "a stat while the lock is held", time.Second, func() error {
			_, err := os.Stat(filepath.Join(ids, "4d0adcd0cbd80b68cb20bcfa49edc161"))
			return err
		})
		time.Sleep(200 * time.Millisecond)
	}
	un := syscall.Flock_t{Type: syscall.F_UNLCK}
	if err := syscall.FcntlFlock(lock.Fd(), syscall.F_SETLK, &un); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(ids, victim)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed item is still listed after the lock was released")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
