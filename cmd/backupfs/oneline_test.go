package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"lukechampine.com/blake3"
)

// hotJournal gives a copy of the 0.12.1 repository a pending (hot)
// transaction log, which every command warns about.
func hotJournal(t *testing.T) string {
	t.Helper()
	dir := copyRepo(t, repo012)
	wal := []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 1} // Begin{2}, End
	sum := blake3.Sum256(wal)
	if err := os.WriteFile(filepath.Join(dir, "tx.wal"), append(wal, sum[:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The rule: a failing command prints only its one error line, a
// succeeding one its warnings. A hot journal's warning and a failure
// make one line: the error.
func TestWarningsOfAFailingCommandAreNotPrinted(t *testing.T) {
	dir := hotJournal(t)
	put := filepath.Join(testdata, "bupstash-0.12.1/keys/put.key")
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no such item", []string{"cat", "--repo", dir, "--key", primary012, "0123abcd"}, 1, `no such item "0123abcd"`},
		{"no such path", []string{"ls", "--repo", dir, "--key", primary012, "fdd75e29", "nope"}, 1, "nope: no such file"},
		{"put-only key", []string{"list", "--repo", dir, "--key", put}, exitWrongKey, "put-only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, nil, tt.args...)
			if r.code != tt.code || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stderr, "warning") {
				t.Fatalf("exit %d, stderr %q; want %d and the one error line with %q", r.code, r.stderr, tt.code, tt.want)
			}
		})
	}
	// Succeeding, the same command says what it warned about, once.
	r := runCmd(t, nil, "cat", "--repo", dir, "--key", primary012, "fdd75e29", "sub/s.txt")
	if r.code != 0 || r.stdout != "sub file\n" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "warning: repository has an unfinished transaction") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// --verbose holds nothing back.
	r = runCmd(t, nil, "cat", "-v", "--repo", dir, "--key", primary012, "0123abcd")
	if r.code != 1 || !strings.Contains(r.stderr, "unfinished transaction") || !strings.Contains(r.stderr, "no such item") {
		t.Fatalf("--verbose: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A mount that cannot start says one line too; one that starts says its
// warnings once it is mounted.
func TestMountWarningsAndFailureLines(t *testing.T) {
	dir := hotJournal(t)
	cmd := exec.Command(backupfsBinary(t), "mount", "--repo", dir, "--key", filepath.Join(abs(t, testdata), "bupstash-0.12.1/keys/put.key"), t.TempDir())
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitWrongKey || strings.Count(stderr.String(), "\n") != 1 || strings.Contains(stderr.String(), "warning") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	mnt := t.TempDir()
	p := startMount(t, nil, "--repo", dir, "--key", abs(t, primary012), mnt)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "warning: repository has an unfinished transaction") ||
		!strings.Contains(lines[1], "backupfs: mounted") || !strings.Contains(lines[2], "backupfs: unmounted") {
		t.Fatalf("stderr:\n%s", p.stderr)
	}
}

// Untrusted files of the repository that are refused unread are damage
// (status 3), as a file that fails its checks is; the same refusal of a
// key file given by the user is not.
func TestRefusedFilesStatus(t *testing.T) {
	dir := copyRepo(t, repo012)
	fifo := filepath.Join(dir, "items", "33333333333333333333333333333333")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, nil, "cat", "--repo", dir, "--key", primary012, "3333"); r.code != exitDamaged || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("a FIFO as the item asked for: exit %d %q", r.code, r.stderr)
	}
	os.Remove(fifo)
	os.Remove(filepath.Join(dir, "meta", "schema_version"))
	syscall.Mkfifo(filepath.Join(dir, "meta", "schema_version"), 0o600)
	if r := runCmd(t, nil, "list", "--repo", dir, "--key", primary012); r.code != exitDamaged || !strings.Contains(r.stderr, "schema_version") {
		t.Errorf("a FIFO as meta/schema_version: exit %d %q", r.code, r.stderr)
	}
	if r := runCmd(t, nil, "list", "--repo", repo012, "--key", t.TempDir()); r.code == exitDamaged || r.code == 0 {
		t.Errorf("a directory as the key: exit %d %q", r.code, r.stderr)
	}
}

// Progress of long work: forced with --progress=always (drawn at once,
// and its last state before it is erased), never by default when stderr
// is no terminal.
func TestCatProgress(t *testing.T) {
	r := runCmd(t, nil, "cat", "--progress=always", "--repo", repo012, "--key", primary012, "fdd75e29", "big.txt")
	if r.code != 0 || len(r.stdout) != 11600000 {
		t.Fatalf("exit %d, %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
	if !strings.Contains(r.stderr, "\r\x1b[Kbackupfs: cat fdd75e29 big.txt: 11.06MiB of 11.06MiB (100%)") || !strings.HasSuffix(r.stderr, "\r\x1b[K") {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = runCmd(t, nil, "cat", "--progress=always", "--repo", repo012, "--key", primary012, "4d0adcd0")
	if r.code != 0 || !strings.Contains(r.stderr, "backupfs: cat 4d0adcd0: ") || strings.Contains(r.stderr, "%") {
		t.Fatalf("a snapshot's tar, of no known size: %q", r.stderr)
	}
	r = runCmd(t, nil, "cat", "--repo", repo012, "--key", primary012, "fdd75e29", "big.txt")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stderr no terminal: %q", r.stderr)
	}
	// A failure erases the status line, then says the one line.
	r = runCmd(t, nil, "cat", "--progress=always", "--repo", repo012, "--key", primary012, "fdd75e29", "nope")
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("failure: %q", r.stderr)
	}
	if r := runCmd(t, nil, "cat", "--progress=sometimes", "--repo", repo012, "--key", primary012, "d5db"); r.code != exitUsage {
		t.Fatalf("--progress=sometimes: %d %q", r.code, r.stderr)
	}
}

// By default, progress is drawn when stderr is a terminal, and for work
// that writes to stdout only when stdout is not that terminal too.
func TestProgressOnATerminal(t *testing.T) {
	pty, tty := openPTY(t)
	defer pty.Close()
	defer tty.Close()
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	if !isTerminal(tty) || isTerminal(pipeW) || isTerminal(&bytes.Buffer{}) {
		t.Fatal("isTerminal")
	}
	for _, tt := range []struct {
		mode   progressMode
		stderr *os.File
		stdout io.Writer // nil: the work has no output
		want   bool
	}{
		{progressAuto, tty, pipeW, true},
		{progressAuto, tty, tty, false},
		{progressAuto, tty, nil, true},
		{progressAuto, pipeW, nil, false},
		{progressNever, tty, pipeW, false},
		{progressAlways, pipeW, pipeW, true},
	} {
		if got := tt.mode.enabled(tt.stderr, tt.stdout); got != tt.want {
			t.Errorf("%s, stderr %s, stdout %v: %v", tt.mode, tt.stderr.Name(), tt.stdout, got)
		}
	}
	// The real thing: cat with stderr on the terminal, its output piped.
	cmd := exec.Command(backupfsBinary(t), "cat", "--repo", abs(t, repo012), "--key", abs(t, primary012), "fdd75e29", "big.txt")
	cmd.Env = cleanEnv()
	cmd.Stderr = tty
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil || out.Len() != 11600000 {
		t.Fatalf("%v, %d bytes", err, out.Len())
	}
}

// openPTY opens a pseudo-terminal pair: its master and its terminal.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Drain what is written to the terminal, so that no writer blocks.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := m.Read(buf); err != nil {
				return
			}
		}
	}()
	return m, s
}

// Without $HOME (a systemd system service), the Bupstash commands work,
// and the configuration file is looked for where one can be: the message
// that none names a source says where.
func TestWithoutHome(t *testing.T) {
	env := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": primary012}
	if r := runCmd(t, env, "list"); r.code != 0 || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("list without HOME: %d %q", r.code, r.stderr)
	}
	if r := runCmd(t, env, "cat", "d5db"); r.code != 0 || r.stdout != "hello from stdin\n" {
		t.Fatalf("cat without HOME: %d %q", r.code, r.stderr)
	}
	mnt := t.TempDir()
	r := runCmd(t, nil, "mount", mnt)
	if r.code != exitUsage || !strings.Contains(r.stderr, "or list sources in /etc/backupfs/config.toml") {
		t.Fatalf("mount without HOME: %d %q", r.code, r.stderr)
	}
	r = runCmd(t, map[string]string{"HOME": "/home/ann"}, "mount", mnt)
	if !strings.Contains(r.stderr, "or list sources in /home/ann/.config/backupfs/config.toml or /etc/backupfs/config.toml") {
		t.Fatalf("mount with HOME: %q", r.stderr)
	}
	r = runCmd(t, map[string]string{"XDG_CONFIG_HOME": "/cfg"}, "mount", "--config", "/nonexistent.toml", mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "/nonexistent.toml") {
		t.Fatalf("--config missing: %q", r.stderr)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"XDG_CACHE_HOME": "/c", "HOME": "/h"}, "/c/backupfs/backupy"},
		{map[string]string{"CACHE_DIRECTORY": "/var/cache/backupfs:/other", "HOME": "/h"}, "/var/cache/backupfs/backupy"},
		{map[string]string{"HOME": "/h", "XDG_CACHE_HOME": "relative"}, "/h/.cache/backupfs/backupy"},
	} {
		if got, err := defaultBackupyCacheDir(func(k string) string { return tt.env[k] }); err != nil || got != tt.want {
			t.Errorf("%v: %q %v, want %q", tt.env, got, err, tt.want)
		}
	}
	// Root without a home has the system's cache directory; any other
	// user is told what to set.
	if os.Geteuid() == 0 {
		if got, err := defaultBackupyCacheDir(func(string) string { return "" }); err != nil || got != "/var/cache/backupfs/backupy" {
			t.Errorf("root without HOME: %q %v", got, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		store := t.TempDir()
		os.Chmod(filepath.Dir(store), 0o755)
		os.Chmod(store, 0o755)
		cmd := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", backupfsBinary(t), "backupy", "ls", store)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != exitUsage || !strings.Contains(string(out), "give --backupy-cache-dir") || strings.Count(string(out), "\n") != 1 {
			t.Errorf("backupy ls as nobody without HOME: exit %d %q", code, out)
		}
	}
}
