package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Help is asked for, so it goes to standard output with status 0, for
// every spelling; help CMD is that command's help.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}} {
		r := runCmd(t, nil, args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Available Commands:") || !strings.Contains(r.stdout, "Exit status:") {
			t.Errorf("%v: exit %d, stdout %.200q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"help", "mount"}, {"mount", "--help"}, {"mount", "-h"}} {
		r := runCmd(t, nil, args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "backupfs mount [flags] [ITEM[:PATH]] MOUNTPOINT") ||
			!strings.Contains(r.stdout, "      --allow-other ") || strings.Contains(r.stdout, "Available Commands:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := runCmd(t, nil, "help", "backupy", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "backupfs backupy ls [flags] DIR") {
		t.Errorf("help backupy ls: %d %q", r.code, r.stdout)
	}
	r = runCmd(t, nil, "help", "nosuch")
	if r.code != exitUsage || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, `no help topic "nosuch"`) {
		t.Errorf("help nosuch: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// Every flag of every command is GNU-style, and every flag that takes a
// value says its default (or that it is repeatable, with none).
func TestFlagsShowDefaults(t *testing.T) {
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }, log: slog.New(slog.DiscardHandler)}
	root := newRootCommand(e, newLogOutput(e.stderr, e.getenv))
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			n++
			if len(f.Name) < 2 {
				t.Errorf("%s: flag -%s has no long name", c.CommandPath(), f.Name)
			}
			if f.Value.Type() == "bool" || f.Value.Type() == "stringArray" && strings.Contains(f.Usage, "repeatable") {
				return
			}
			help := c.Flags().FlagUsages()
			line := ""
			for _, l := range strings.Split(help, "\n") {
				if strings.Contains(l, "--"+f.Name+" ") {
					line = l
				}
			}
			if !strings.Contains(line, "default") {
				t.Errorf("%s --%s: no default in its help line %q", c.CommandPath(), f.Name, line)
			}
		})
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	if n < 40 {
		t.Fatalf("only %d flags seen", n)
	}
	r := runCmd(t, nil, "mount", "--help")
	for _, want := range []string{"--cache-size SIZE ", "(default 256M)", "--xattrs MODE ", `(default "auto")`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("mount --help lacks %q", want)
		}
	}
	if r := runCmd(t, nil, "ls", "--help"); !strings.Contains(r.stdout, "--lock-wait DURATION ") || !strings.Contains(r.stdout, "(default 1m0s)") {
		t.Errorf("ls --help: %s", r.stdout)
	}
}

// A Go-style flag (-repo) is a usage error that names the GNU spelling;
// a mistyped command gets a suggestion; both in one line.
func TestCommandLineMistakes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "-repo", repo012}, "(long flags take two dashes: --repo)"},
		{[]string{"lst"}, `unknown command "lst" (did you mean list or ls?)`},
		{[]string{"--quiet", "--verbose", "list"}, "contradict"},
		{[]string{"backupy"}, "want a subcommand"},
		{[]string{"version", "extra"}, "version"},
		{[]string{"man", "extra"}, "man takes no arguments"},
	} {
		r := runCmd(t, nil, tt.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q, want one line with %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}

// --version, -version and version say the same, from the build info when
// no version was linked in.
func TestVersion(t *testing.T) {
	var first string
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		r := runCmd(t, nil, args...)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "backupfs ") || strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("%v: %d %q %q", args, r.code, r.stdout, r.stderr)
		}
		if first != "" && r.stdout != first {
			t.Errorf("%v says %q, --version %q", args, r.stdout, first)
		}
		first = r.stdout
	}
}

func TestDescribeBuild(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	bi := func(version string, settings ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Path: "github.com/backupfs/backupfs", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return b
	}
	for _, tt := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"", bi("v1.2.3"), "v1.2.3 (go"},
		{"", bi("v0.0.0-20261201120000-0123456789ab+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			"v0.0.0-20261201120000-0123456789ab+dirty (revision " + rev + ", modified; go"},
		{"", bi("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "(devel) (revision " + rev + "; go"},
		{"v9-3-gabc", bi("(devel)", "vcs.revision", rev), "v9-3-gabc (revision " + rev + "; go"},
		{"", nil, "(devel) (go"},
	} {
		if got := describeBuild(tt.ldflags, tt.bi); !strings.HasPrefix(got, tt.want) {
			t.Errorf("describeBuild(%q, %+v) = %q, want %q…", tt.ldflags, tt.bi, got, tt.want)
		}
	}
}

// Completion scripts for the shells people use; bash's parses.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := runCmd(t, nil, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "backupfs") || len(r.stdout) < 1000 {
			t.Fatalf("completion %s: %d %q", shell, r.code, r.stderr)
		}
		if shell == "bash" {
			script := filepath.Join(t.TempDir(), "backupfs.bash")
			os.WriteFile(script, []byte(r.stdout), 0o644)
			if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, out)
			}
		}
	}
	// The completion the scripts ask for: commands, then a command's flags.
	r := runCmd(t, nil, "__complete", "mo")
	if r.code != 0 || !strings.Contains(r.stdout, "mount\t") {
		t.Fatalf("__complete mo: %q", r.stdout)
	}
	r = runCmd(t, nil, "__complete", "mount", "--allow")
	if r.code != 0 || !strings.Contains(r.stdout, "--allow-other") {
		t.Fatalf("__complete mount --allow: %q", r.stdout)
	}
}

// The manual pages come from the same definitions as --help: every
// command has one, naming each of its flags, and man(1) renders them.
func TestManPages(t *testing.T) {
	r := runCmd(t, nil, "man")
	if r.code != 0 || !strings.HasPrefix(r.stdout, ".nh\n.TH \"BACKUPFS\" \"1\"") || !strings.Contains(r.stdout, "Exit status") {
		t.Fatalf("man: %d %.300q %q", r.code, r.stdout, r.stderr)
	}
	dir := t.TempDir()
	if r := runCmd(t, nil, "man", "--dir", dir); r.code != 0 {
		t.Fatalf("man --dir: %d %q", r.code, r.stderr)
	}
	for page, flags := range map[string][]string{
		"backupfs.1":             {"--quiet", "--verbose"},
		"backupfs-mount.1":       {"--allow-other", "--cache-size", "--backupy-token", "--xattrs"},
		"backupfs-ls.1":          {"--recursive", "--long", "--lock-wait"},
		"backupfs-backupy-cat.1": {"--token", "--zst"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flags {
			if !strings.Contains(string(b), `\fB`+f+`\fP`) {
				t.Errorf("%s lacks %s", page, f)
			}
		}
	}
	// Rendered as a reader sees it, where man(1) is installed.
	if _, err := exec.LookPath("man"); err != nil {
		t.Log("man(1) is not installed: the pages were checked as roff only")
		return
	}
	cmd := exec.Command("man", "-l", filepath.Join(dir, "backupfs-mount.1"))
	cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l: %v", err)
	}
	text := regexp.MustCompile(".\b").ReplaceAllString(string(out), "") // overstrikes
	for _, want := range []string{"NAME", "backupfs-mount - Mount repositories", "SYNOPSIS", "--allow-other", "OPTIONS INHERITED FROM PARENT COMMANDS", "--quiet"} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered page lacks %q:\n%s", want, text)
		}
	}
}

// ls is always long: -l (alone or in a cluster) is accepted and changes
// nothing.
func TestLsLong(t *testing.T) {
	plain := runCmd(t, nil, "ls", "--repo", repo012, "--key", primary012, "fdd75e29")
	long := runCmd(t, nil, "ls", "-l", "--repo", repo012, "--key", primary012, "fdd75e29")
	if plain.code != 0 || long.code != 0 || plain.stdout != long.stdout {
		t.Fatalf("ls -l differs from ls: %d %d %q", plain.code, long.code, long.stderr)
	}
	lr := runCmd(t, nil, "ls", "-lR", "--repo", repo012, "--key", primary012, "fdd75e29", "sub")
	if lr.code != 0 || !strings.Contains(lr.stdout, " nested/deeper/file.txt\n") {
		t.Fatalf("ls -lR: %d %q %q", lr.code, lr.stdout, lr.stderr)
	}
}

// --quiet keeps warnings out; --verbose lets notices in; both keep the one
// format.
func TestQuietAndVerbose(t *testing.T) {
	dir := copyRepo(t, repo012)
	b, err := os.ReadFile(filepath.Join(testdata, "bupstash-versions/v0.11.1/repo/items/2344665cf5b0c7a8cd4eee53844cd8bf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "items", "2344665cf5b0c7a8cd4eee53844cd8bf"), b, 0o644)
	r := runCmd(t, nil, "list", "--quiet", "--repo", dir, "--key", primary012)
	if r.code != 0 || r.stderr != "" || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("--quiet: %d %q", r.code, r.stderr)
	}
	r = runCmd(t, nil, "-q", "cat", "--repo", dir, "--key", primary012, "2344")
	if r.code != exitWrongKey || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("--quiet still says why it failed: %d %q", r.code, r.stderr)
	}
	r = runCmd(t, nil, "list", "--repo", dir, "--key", primary012)
	if !strings.HasPrefix(r.stderr, "backupfs: warning: skipped 1 of 8 items") {
		t.Fatalf("default: %q", r.stderr)
	}
}

// Under systemd, standard error is the journal: lines carry its priority
// prefixes instead of timestamps. A file given as JOURNAL_STREAM's
// device and inode stands in for the journal's socket.
func TestJournalFormat(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	dir := copyRepo(t, repo012)
	b, _ := os.ReadFile(filepath.Join(testdata, "bupstash-versions/v0.11.1/repo/items/2344665cf5b0c7a8cd4eee53844cd8bf"))
	os.WriteFile(filepath.Join(dir, "items", "2344665cf5b0c7a8cd4eee53844cd8bf"), b, 0o644)
	code := run(context.Background(), []string{"cat", "--repo", dir, "--key", primary012, "2344"}, &bytes.Buffer{}, f,
		func(k string) string { return map[string]string{"JOURNAL_STREAM": stream}[k] })
	code2 := run(context.Background(), []string{"list", "--repo", dir, "--key", primary012}, &bytes.Buffer{}, f,
		func(k string) string { return map[string]string{"JOURNAL_STREAM": stream}[k] })
	got, _ := os.ReadFile(f.Name())
	want := regexp.MustCompile(`^<3>backupfs cat: item 2344665cf5b0c7a8cd4eee53844cd8bf was made under primary key [0-9a-f]+; this key belongs to primary key [0-9a-f]+\n` +
		`<4>backupfs: warning: skipped 1 of 8 items: made under primary key [0-9a-f]+; this key belongs to primary key [0-9a-f]+\n$`)
	if code != exitWrongKey || code2 != 0 || !want.Match(got) {
		t.Fatalf("exit %d, %d; journal got %q", code, code2, got)
	}
	// Another stream (stderr redirected to a file by hand) is no journal.
	if isJournal(f, "1:2") || !isJournal(f, stream) || isJournal(&bytes.Buffer{}, stream) {
		t.Fatal("isJournal")
	}
}

func TestLogOutputStamps(t *testing.T) {
	var b bytes.Buffer
	o := &logOutput{w: &b, stamp: true}
	o.line(slog.LevelInfo, "mounted\nsecond")
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) mounted\\nsecond\n$`).MatchString(b.String()) {
		t.Fatalf("%q", b.String())
	}
}

// A writer holding the repository's lock past --lock-wait: status 11 and
// one line saying so. The lock is held by this test process; the command
// runs in its own, as fcntl locks do not exclude their own process.
func TestLockedRepository(t *testing.T) {
	dir := copyRepo(t, repo012)
	f, err := os.OpenFile(filepath.Join(dir, "tx.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(backupfsBinary(t), "list", "--lock-wait", "200ms", "--repo", dir, "--key", abs(t, primary012))
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitLocked || strings.Count(stderr.String(), "\n") != 1 ||
		!strings.Contains(stderr.String(), "locked by a writer") {
		t.Fatalf("exit %d after %v, stderr %q", code, time.Since(start), stderr.String())
	}
	// Released, the same command reads.
	lk.Type = syscall.F_UNLCK
	syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
	cmd = exec.Command(backupfsBinary(t), "list", "--lock-wait", "200ms", "--repo", dir, "--key", abs(t, primary012))
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), "\n") != 7 {
		t.Fatalf("after the writer: %v %s", err, out)
	}
}

// The exit statuses are told apart: each kind of failure has its own, and
// the help lists every one.
func TestExitStatuses(t *testing.T) {
	for code, args := range map[int][]string{
		exitUsage:        {"list", "--nope"},
		exitNoRepository: {"list", "--repo", "/nonexistent/repo", "--key", primary012},
		exitWrongKey:     {"list", "--repo", repo012, "--key", filepath.Join(testdata, "bupstash-versions/v0.11.1/primary.key")},
		exitFatal:        {"cat", "--repo", repo012, "--key", primary012, "0123abcd"},
	} {
		if r := runCmd(t, nil, args...); r.code != code {
			t.Errorf("%v: exit %d, want %d (%q)", args, r.code, code, r.stderr)
		}
	}
	r := runCmd(t, nil, "--help")
	for _, code := range []int{exitOK, exitFatal, exitUsage, exitDamaged, exitNoRepository, exitLocked, exitWrongKey, exitInterrupted} {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^ +%d +\S`, code)).MatchString(r.stdout) {
			t.Errorf("--help does not document exit status %d", code)
		}
	}
	// Backupy: a missing store, and an object with no key.
	f := newBkFixture(t)
	if _, _, err := runBk("ls", "--cache-dir", f.cache, "/nonexistent/dir"); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("exit status %d:", exitNoRepository)) {
		t.Errorf("backupy ls of a missing store: %v", err)
	}
	t.Setenv("BACKUPFS_BACKUPY_KEYRING", "")
	kat := filepath.Join(f.dir, "co_kat", "agt_1", "job_1", "run_run-kat1.enc")
	if _, _, err := runBk("cat", "--cache-dir", f.cache, kat); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("exit status %d:", exitWrongKey)) {
		t.Errorf("backupy cat without a key: %v", err)
	}
}

// A mount is a service: its notices are logged, with a timestamp on a
// terminal or in a file, with the journal's priority prefix and no
// timestamp of its own under systemd.
func TestMountLogFormat(t *testing.T) {
	dir := t.TempDir()
	p := startMount(t, nil, "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)
	stamped := regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) backupfs: mounted; unmount with Ctrl-C, umount or fusermount3 -u \(mountpoint ` +
		regexp.QuoteMeta(dir) + `, sources 1\)$`)
	if !stamped.MatchString(p.stderr.String()) {
		t.Errorf("no timestamped notice:\n%s", p.stderr)
	}

	journal, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	var st syscall.Stat_t
	syscall.Fstat(int(journal.Fd()), &st)
	cmd := exec.Command(backupfsBinary(t), "mount", "--repo", abs(t, repo012), "--key", abs(t, primary012), dir)
	cmd.Env = append(cleanEnv(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stderr = journal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(journal.Name()); bytes.Contains(b, []byte("mounted")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no notice in the journal after 15s")
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("mount did not exit on SIGTERM")
	}
	exited <- nil
	b, _ := os.ReadFile(journal.Name())
	want := "<6>backupfs: mounted; unmount with Ctrl-C, umount or fusermount3 -u (mountpoint " + dir + ", sources 1)\n" +
		"<6>backupfs: unmounted (mountpoint " + dir + ")\n"
	if string(b) != want {
		t.Fatalf("journal:\n%s\nwant:\n%s", b, want)
	}
}
