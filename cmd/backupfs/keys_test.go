package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/procstat"
)

// Keys and the configuration file are untrusted input: what is not a
// regular file of a sensible size is refused at once, in one line, and a
// key command that floods or hangs is cut off. Each of these used to grow
// the process to gigabytes or block it forever, deaf to Ctrl-C.

// hostileFiles makes a FIFO with no writer, a sparse 3 GiB file and a
// directory, and names /dev/zero, with what refusing each says.
func hostileFiles(t *testing.T) []struct{ path, says string } {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sub := filepath.Join(dir, "dir")
	os.Mkdir(sub, 0o700)
	return []struct{ path, says string }{
		{"/dev/zero", "/dev/zero: not a regular file (a character device)"},
		{fifo, fifo + ": not a regular file (a FIFO)"},
		{huge, huge + ": file too large: 3 GiB, over the limit of "},
		{sub, sub + ": not a regular file (a directory)"},
	}
}

// assertOneLine fails unless stderr is exactly one line holding want.
func assertOneLine(t *testing.T, what, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("%s: stderr %q, want one line with %q", what, stderr, want)
	}
}

// maxSaneRSS is far above what the (race-built) binary needs to refuse a
// file, and far below what reading /dev/zero whole took (gigabytes).
const maxSaneRSS = 400 << 10 // KiB

func TestHostileKeyFilesAreRefused(t *testing.T) {
	for _, h := range hostileFiles(t) {
		code, _, stderr, rss := runBinary(t, 30*time.Second, "list", "--repo", repo012, "--key", h.path)
		if code != 1 {
			t.Errorf("--key %s: exit %d", h.path, code)
		}
		assertOneLine(t, "--key "+h.path, stderr, "backupfs list: key "+h.says)
		if rss > maxSaneRSS {
			t.Errorf("--key %s: peak RSS %d MiB", h.path, rss>>10)
		}
	}
	// The same through BUPSTASH_KEY.
	r := runCmd(t, map[string]string{"BUPSTASH_KEY": "/dev/zero", "BUPSTASH_REPOSITORY": repo012}, "list")
	assertOneLine(t, "BUPSTASH_KEY=/dev/zero", r.stderr, "key /dev/zero: not a regular file (a character device)")
}

func TestHostileConfigFilesAreRefused(t *testing.T) {
	for _, h := range hostileFiles(t) {
		code, _, stderr, rss := runBinary(t, 30*time.Second, "mount", "--config", h.path, t.TempDir())
		if code == 0 {
			t.Errorf("--config %s: exit 0", h.path)
		}
		assertOneLine(t, "--config "+h.path, stderr, "backupfs mount: config "+h.says)
		if rss > maxSaneRSS {
			t.Errorf("--config %s: peak RSS %d MiB", h.path, rss>>10)
		}
	}
}

// Key commands that print forever are cut off as soon as their output
// passes the limit (a key file is a few hundred bytes).
func TestFloodingKeyCommandIsCutOff(t *testing.T) {
	for _, c := range []string{"cat /dev/zero", "yes"} {
		cmd := exec.Command(backupfsBinary(t), "list", "--repo", repo012)
		cmd.Env = append(cleanEnv(), "BUPSTASH_KEY_COMMAND="+c)
		code, stderr, rss := runWithDeadline(t, cmd, 30*time.Second)
		if code != 1 {
			t.Errorf("%s: exit %d", c, code)
		}
		assertOneLine(t, c, stderr, "printed too much: more than 64 KiB")
		if rss > maxSaneRSS {
			t.Errorf("%s: peak RSS %d MiB", c, rss>>10)
		}
	}
}

// A key command that hangs is ended with the program by SIGINT, at once,
// and takes what it started with it.
func TestHangingKeyCommandEndsWithSIGINT(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command(backupfsBinary(t), "list", "--repo", repo012)
	cmd.Env = append(cleanEnv(), "BUPSTASH_KEY_COMMAND=sh -c 'sleep 1000 & echo $! $$ > "+pidFile+"; wait'")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	var pids []int
	for deadline := time.Now().Add(30 * time.Second); len(pids) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the key command did not start:\n%s", stderr.String())
		}
		b, _ := os.ReadFile(pidFile)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("still waiting for the key command 10 s after SIGINT:\n%s", stderr.String())
	}
	if cmd.ProcessState.ExitCode() == 0 {
		t.Error("exit status 0 after SIGINT")
	}
	assertOneLine(t, "SIGINT", stderr.String(), "interrupted")
	for _, pid := range pids {
		if !procstat.WaitGone(pid, 10*time.Second) {
			t.Errorf("process %d of the key command outlived it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// runWithDeadline runs cmd and returns its exit status, stderr and peak
// RSS in KiB, failing the test if it does not finish in time.
func runWithDeadline(t *testing.T, cmd *exec.Cmd, within time.Duration) (int, string, int64) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peak := watchPeak(cmd.Process.Pid) // not the wait's rusage: see watchPeak
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-time.After(within):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish within %v:\n%s", strings.Join(cmd.Args, " "), within, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String(), peak()
}

// Keys come from --key, key_command, BUPSTASH_KEY or BUPSTASH_KEY_COMMAND,
// in that order, as with Bupstash.
func TestBupstashKeySources(t *testing.T) {
	keyPath, _ := filepath.Abs(filepath.Join(testdata, "bupstash-0.12.1/keys/list.key"))
	ctx := context.Background()
	e := func(m map[string]string) *env { return &env{getenv: func(k string) string { return m[k] }} }
	k, err := bupstashKey(ctx, e(map[string]string{"BUPSTASH_KEY": keyPath}), "", "")
	if err != nil || k.Kind() != "list-only sub" {
		t.Fatalf("BUPSTASH_KEY: %v %v", k, err)
	}
	k, err = bupstashKey(ctx, e(map[string]string{"BUPSTASH_KEY_COMMAND": "cat '" + keyPath + "'"}), "", "")
	if err != nil || k.Kind() != "list-only sub" {
		t.Fatalf("BUPSTASH_KEY_COMMAND: %v %v", k, err)
	}
	k, err = bupstashKey(ctx, e(map[string]string{"BUPSTASH_KEY": "/nonexistent"}), primary012, "")
	if err != nil || k.Kind() != "primary" {
		t.Fatalf("--key before the environment: %v %v", k, err)
	}
	k, err = bupstashKey(ctx, e(nil), "", "cat '"+keyPath+"'")
	if err != nil || k.Kind() != "list-only sub" {
		t.Fatalf("key_command: %v %v", k, err)
	}
	if _, err := bupstashKey(ctx, e(map[string]string{"BUPSTASH_KEY_COMMAND": "false"}), "", ""); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("a failing key command: %v", err)
	}
	if _, err := bupstashKey(ctx, e(map[string]string{"BUPSTASH_KEY_COMMAND": "echo not a key"}), "", ""); err == nil || !strings.Contains(err.Error(), "output of BUPSTASH_KEY_COMMAND: not a valid bupstash key") {
		t.Fatalf("a command printing garbage: %v", err)
	}
	if _, err := bupstashKey(ctx, e(nil), "", ""); !errors.Is(err, errNoKey) {
		t.Fatalf("no key: %v", err)
	}
}
