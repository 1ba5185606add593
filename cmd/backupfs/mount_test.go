package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/fusetest"
	"golang.org/x/sys/unix"
)

// These tests run the real binary: signals, exit statuses and what a
// killed process leaves behind cannot be tested in process.

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func backupfsBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "backupfs-bin")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "backupfs")
		out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// mountProcess is a running `backupfs mount`.
type mountProcess struct {
	cmd    *exec.Cmd
	dir    string
	stderr *syncBuffer
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMount runs backupfs mount and waits until the mountpoint answers.
func startMount(t *testing.T, env []string, args ...string) *mountProcess {
	t.Helper()
	return startMountStdin(t, nil, env, args...)
}

// startMountStdin is startMount with data on the process's standard input.
func startMountStdin(t *testing.T, stdin []byte, env []string, args ...string) *mountProcess {
	t.Helper()
	fusetest.RequireFUSE(t)
	p := &mountProcess{dir: args[len(args)-1], stderr: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(backupfsBinary(t), append([]string{"mount"}, args...)...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stderr = p.stderr
	if stdin != nil {
		p.cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
			}
		}
		if fusetest.Mounted(p.dir) {
			syscall.Unmount(p.dir, syscall.MNT_DETACH)
		}
	})
	// Mounted, and answering: its FUSE INIT is done and the mount is ours,
	// not a stale one left by an earlier process (which fails the listing),
	// nor the bare directory under it, seen in the moment between this
	// process detaching the stale mount and mounting its own.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if fusetest.Mounted(p.dir) {
			var st unix.Statfs_t
			if _, err := os.ReadDir(p.dir); err == nil && unix.Statfs(p.dir, &st) == nil && st.Type == unix.FUSE_SUPER_MAGIC {
				return p
			}
		}
		select {
		case err := <-p.exited:
			t.Fatalf("backupfs mount exited (%v):\n%s", err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 15s:\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its status.
func (p *mountProcess) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		pid := p.cmd.Process.Pid
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		// What is still alive, and where it waits, for the log.
		ps, _ := exec.Command("sh", "-c", fmt.Sprintf("ps -ef | grep -E 'fusermount|backupfs' | grep -v grep; cat /proc/%d/task/*/wchan 2>&1 | sort | uniq -c", pid)).CombinedOutput()
		t.Fatalf("backupfs mount still running after %v:\n%s\nstatus:\n%s\nprocesses:\n%s", within, p.stderr, st, ps)
		return -1
	}
}

// cleanEnv is the test's environment without Bupstash, AWS or XDG
// settings that would change which sources get mounted, or how.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BUPSTASH_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME=/nonexistent")
}

func abs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// From the Bupstash environment alone: `backupfs mount DIR`.
func TestMountFromEnvironmentAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, []string{"BUPSTASH_REPOSITORY=" + abs(t, repo012), "BUPSTASH_KEY=" + abs(t, primary012)}, dir)
	b, err := os.ReadFile(filepath.Join(dir, "repo", "ids", "fdd75e29487490b4ef3eb1792242fc00", "sub", "s.txt"))
	if err != nil || string(b) != "sub file\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	// The mount names the repository it shows, as df and findmnt print it.
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if src, fstype := sourceOf(t, info, dir); src != "backupfs:"+abs(t, repo012) || fstype != "fuse.backupfs" {
		t.Errorf("source %q type %q", src, fstype)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, p.stderr)
	}
	if fusetest.Mounted(dir) {
		t.Fatal("still mounted after SIGTERM")
	}
}

// SIGTERM while a reader is in the middle of a file: the mount still goes
// away cleanly and the process exits 0; the reader gets an error, not a
// hang.
func TestSIGTERMWithBusyReader(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	readerDone := busyReader(t, filepath.Join(dir, "repo", "ids", "fdd75e29487490b4ef3eb1792242fc00", "big.txt"))
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr)
	}
	if fusetest.Mounted(dir) {
		t.Fatal("still mounted")
	}
	select {
	case err := <-readerDone:
		if err == io.EOF {
			t.Log("the reader finished before the mount went away")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader hangs after the mount went away")
	}
}

// busyReader reads path slowly, 4 KiB a millisecond, until a read fails,
// and sends that failure; it returns once the reading is under way.
func busyReader(t *testing.T, path string) <-chan error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				done <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	return done
}

func TestExternalUnmount(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	fusetest.Run(t, "fusermount3", "-u", dir)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr)
	}
}

// A crashed mount leaves a dead mountpoint; the next mount cleans it up.
func TestStaleMountIsCleanedUp(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	p.cmd.Process.Kill()
	// Reaping a killed -race binary can take a while on a loaded machine
	// (its shadow memory is large); a hang would still fail.
	p.wait(t, 30*time.Second)
	// Listing needs the (dead) server; a stat could be answered from the
	// kernel's attribute cache.
	if _, err := os.ReadDir(dir); !strings.Contains(fmt.Sprint(err), "not connected") {
		t.Fatalf("after kill -9 the mountpoint gives %v, want a stale mount", err)
	}
	p2 := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	if _, err := os.ReadFile(filepath.Join(dir, "repo", "ids", "d5dbf2447bdcf7807b25732d40a02b35", "data")); err != nil {
		t.Fatal(err)
	}
	p2.cmd.Process.Signal(syscall.SIGINT)
	if code := p2.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// Several sources from a configuration file in $XDG_CONFIG_HOME.
func TestMountFromConfigFile(t *testing.T) {
	cfgHome := t.TempDir()
	os.MkdirAll(filepath.Join(cfgHome, "backupfs"), 0o755)
	cfg := fmt.Sprintf(`cache_size = "64M"
[[bupstash]]
name = "new"
repo = %q
key = %q
[[bupstash]]
repo = %q
key_command = "cat '%s'"
`, abs(t, repo012), abs(t, primary012), abs(t, filepath.Join(testdata, "bupstash-versions/v0.10.3/repo")),
		abs(t, filepath.Join(testdata, "bupstash-versions/v0.10.3/primary.key")))
	os.WriteFile(filepath.Join(cfgHome, "backupfs", "config.toml"), []byte(cfg), 0o600)
	dir := t.TempDir()
	startMount(t, []string{"XDG_CONFIG_HOME=" + cfgHome}, dir)
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 || ents[0].Name() != "new" || ents[1].Name() != "repo" {
		t.Fatalf("sources: %v", ents)
	}
	if _, err := os.ReadFile(filepath.Join(dir, "repo", "ids", "b467fd2f8192eddc81bb22361e6fa2ca", "data")); err != nil {
		t.Fatal(err)
	}
}

// A mount that cannot happen says why in one line, with a non-zero status.
func TestMountFailures(t *testing.T) {
	fusetest.RequireFUSE(t)
	busy := t.TempDir()
	startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), busy)
	keys := abs(t, filepath.Join(testdata, "bupstash-0.12.1/keys"))
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no such mountpoint", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "/nonexistent/mnt"}, 1, "no such file or directory"},
		{"already mounted", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), busy}, 1, "already a mountpoint"},
		{"inside the repository", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), abs(t, filepath.Join(repo012, "data"))}, 1, "inside the source"},
		{"put-only key", []string{"--repo", abs(t, repo012), "--key", filepath.Join(keys, "put.key"), t.TempDir()}, exitWrongKey, "put-only"},
		{"nothing to mount", []string{t.TempDir()}, 2, "nothing to mount"},
		{"no mountpoint", []string{"--repo", abs(t, repo012)}, 2, "MOUNTPOINT"},
		{"bad xattrs mode", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "--xattrs", "maybe", t.TempDir()}, 2, "auto, on or off"},
		{"key without repository", []string{"--key", abs(t, primary012), t.TempDir()}, 2, "--key and --name describe --repo"},
		{"user without fusermount3", append([]string{"--as-nobody"}, openToAll(t)...), 1, "install the fuse3 package"},
		{"non-empty mountpoint", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), nonEmptyDir(t)}, 1, "holds notes.txt, which the mount would hide: use an empty directory, or --allow-non-empty (-o nonempty)"},
		{"item not there", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "fdd75e29:nope", t.TempDir()}, 1, "item fdd75e29487490b4ef3eb1792242fc00: nope: no such file or directory"},
		{"item path not a directory", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "fdd75e29:a.txt", t.TempDir()}, 1, "a.txt: not a directory"},
		{"path in a raw item", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "d5dbf244:data", t.TempDir()}, 1, "a raw item is one file"},
		{"no such item", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "0123", t.TempDir()}, 1, `no such item "0123"`},
		{"item and query", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "--query", "fixture=stdin", "fdd75e29", t.TempDir()}, 2, "ITEM and --query both choose"},
		{"item query matching several", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "--item", "name=*.tar", t.TempDir()}, 1, "matches several items"},
		{"item of two sources", []string{"--repo", abs(t, repo012), "--key", abs(t, primary012), "--backupy", t.TempDir(), "--item", "fdd75e29", t.TempDir()}, 2, "ITEM is an item of one repository"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			argv := append([]string{backupfsBinary(t), "mount"}, tt.args...)
			env := cleanEnv()
			if tt.args[0] == "--as-nobody" {
				// An unprivileged user whose PATH has no fusermount3.
				argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", argv[0], "mount"}, tt.args[1:]...)
				os.Chmod(filepath.Dir(argv[4]), 0o755)
				env = append(env, "PATH=/nonexistent")
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("mount did not fail:\n%s", stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if cmd.ProcessState.ExitCode() != tt.code || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") ||
				strings.Contains(msg, "goroutine") {
				t.Fatalf("exit %d, stderr %q; want %d and one line with %q", cmd.ProcessState.ExitCode(), msg, tt.code, tt.want)
			}
		})
	}
}

func TestDebugLogsRequests(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--debug", "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	os.ReadDir(filepath.Join(dir, "repo"))
	time.Sleep(100 * time.Millisecond)
	if !strings.Contains(p.stderr.String(), "LOOKUP") && !strings.Contains(p.stderr.String(), "READDIR") {
		t.Fatalf("--debug logged no requests:\n%s", p.stderr)
	}
}

// A Backupy store beside a Bupstash repository, keys from a token: the
// decoded dumps read back exactly; a blob no key opens stays as .enc.
func TestMountBackupy(t *testing.T) {
	f := newBkFixture(t)
	dir := t.TempDir()
	startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012),
		"--backupy", f.dir, "--backupy-token", f.token, "--backupy-cache-dir", f.cache, "--backupy-views", "zst,meta", dir)
	job := filepath.Join(dir, filepath.Base(f.dir), "co_kat", "agt_1", "job_1")
	ents, err := os.ReadDir(job)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// run-kat1 opens with the token; the copy under another run id does
	// too (trial decryption); the unencrypted one needs no key.
	for _, want := range []string{"run_run-kat1.bin", "run_run-kat1.meta.json", "run_plain.sql", "run_plain.sql.zst"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s lacks %s: %v", job, want, names)
		}
	}
	if b, err := os.ReadFile(filepath.Join(job, "run_run-kat1.bin")); err != nil || string(b) != bkKAT1Plain {
		t.Errorf("KAT-1 through the mount: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(job, "run_plain.sql")); err != nil || !bytes.Equal(b, f.plain) {
		t.Errorf("unencrypted dump through the mount: %d bytes, %v", len(b), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "repo", "latest")); err != nil {
		t.Errorf("the Bupstash source beside it: %v", err)
	}
}

// --uid and --gid show every file as the given user's, and --allow-other
// lets that user in: a backup of root's private directory is readable by
// the user it is mounted for.
func TestMountForAnotherUser(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	startMount(t, nil, "--allow-other", "--uid", "65534", "--gid", "65534", "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	ids, err := os.ReadDir(filepath.Join(dir, "repo", "ids"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !strings.HasPrefix(id.Name(), "7f3491e5") {
			continue
		}
		p := filepath.Join(dir, "repo", "ids", id.Name(), "p.txt")
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Uid != 65534 || st.Gid != 65534 {
			t.Fatalf("stat %s: uid %d gid %d, %v; want 65534", p, st.Uid, st.Gid, err)
		}
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", p).CombinedOutput()
		if err != nil || len(out) == 0 {
			t.Fatalf("the user the mount is for cannot read %s: %v %q", p, err, out)
		}
		if out, err := exec.Command("setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", "cat", p).CombinedOutput(); err == nil {
			t.Fatalf("another user read %s: %q", p, out)
		}
		return
	}
	t.Fatal("no private item in the fixture")
}

// nonEmptyDir is a directory with a file in it.
func nonEmptyDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// One item's tree at the mount's root (rustic's and kopia's
// snapshot:path): the item's directory, or a directory in it; the source
// field says which. --allow-non-empty mounts over a directory's files.
func TestMountOneItem(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), "fdd75e29:sub", dir)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 2 || ents[0].Name() != "nested" || ents[1].Name() != "s.txt" {
		t.Fatalf("root: %v %v", ents, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "nested", "deeper", "file.txt")); err != nil || string(b) != "deep file\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if src, _ := sourceOf(t, info, dir); src != "backupfs:"+abs(t, repo012)+":fdd75e29487490b4ef3eb1792242fc00:sub" {
		t.Errorf("source %q", src)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)

	// ITEM as a query naming one item.
	q := t.TempDir()
	p = startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), "--item", "fixture=snapshot-none and name=sub.tar", q)
	if b, err := os.ReadFile(filepath.Join(q, "s.txt")); err != nil || string(b) != "sub file\n" {
		t.Fatalf("item by query: %q %v", b, err)
	}
	info, _ = os.ReadFile("/proc/self/mountinfo")
	if src, _ := sourceOf(t, info, q); src != "backupfs:"+abs(t, repo012)+":4d0adcd0cbd80b68cb20bcfa49edc161" {
		t.Errorf("source %q", src)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)

	full := nonEmptyDir(t)
	p = startMount(t, nil, "--progress=always", "--repo", abs(t, repo012), "--key", abs(t, primary012), "--allow-non-empty", "-o", "item=d5dbf244", full)
	if b, err := os.ReadFile(filepath.Join(full, "data")); err != nil || string(b) != "hello from stdin\n" {
		t.Fatalf("raw item at the root: %q %v", b, err)
	}
	// The status line said it was mounting, and was erased before the
	// notice that it is mounted.
	if !regexp.MustCompile(`^\r\x1b\[Kbackupfs: mounting on \S+… \ds(\r\x1b\[Kbackupfs: mounting on \S+… \ds)*\r\x1b\[K\S+ backupfs: mounted; `).MatchString(p.stderr.String()) {
		t.Errorf("stderr %q", p.stderr)
	}
}

// openToAll copies the 0.12.1 repository and its key where any user may
// read them, and returns mount arguments for them and a mountpoint any
// user may use: the checkout itself may be private to its owner.
func openToAll(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	repo := filepath.Join(dir, "repo")
	if err := os.CopyFS(repo, os.DirFS(repo012)); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(primary012)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "primary.key"), key, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(mnt, 0o777)
	return []string{"--repo", repo, "--key", filepath.Join(dir, "primary.key"), mnt}
}
