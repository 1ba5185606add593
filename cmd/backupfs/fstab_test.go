package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/fusetest"
	"golang.org/x/sys/unix"
)

// Mounting as mount(8), /etc/fstab and systemd do: the command returns
// once the filesystem answers, and a daemon serves it in the background.
// The daemon is no child of the test (its parent exits), so the test
// process makes itself a subreaper: orphaned descendants become its
// children, and their exit statuses can be read.

var subreaper sync.Once

func becomeSubreaper(t *testing.T) {
	t.Helper()
	subreaper.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
		}
	})
}

// runHelper runs the binary with args as mount(8)'s helper would (and
// with a deadline), returning its status and stderr.
func runHelper(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, backupfsBinary(t), args...)
	cmd.Env = append(cleanEnv(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("backupfs %s did not return within 60s:\n%s", strings.Join(args, " "), stderr.String())
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// daemonOf returns the pid of the live process serving mnt, a child of
// this test process since its parent exited.
func daemonOf(t *testing.T, mnt string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(cmdline, []byte(mnt+"\x00")) || !bytes.Contains(cmdline, []byte("backupfs")) {
			continue
		}
		if ppid(pid) == os.Getpid() {
			return pid
		}
	}
	t.Fatalf("no daemon serves %s", mnt)
	return 0
}

func ppid(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// pid (comm) state ppid …; comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// waitDaemon reaps the daemon and returns its exit status.
func waitDaemon(t *testing.T, pid int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != nil {
			t.Fatalf("wait4 %d: %v", pid, err)
		}
		if got == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the daemon %d still runs after %v", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanupDaemon makes sure nothing is left mounted on mnt or serving it.
func cleanupDaemon(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if fusetest.Mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
}

// sourceOf returns the source and type /proc/self/mountinfo gives for
// the mount on dir.
func sourceOf(t *testing.T, mountinfo []byte, dir string) (source, fstype string) {
	t.Helper()
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != dir {
			continue
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) {
				fstype, source = f[i+1], f[i+2]
			}
		}
	}
	if fstype == "" {
		t.Fatalf("%s is not mounted:\n%s", dir, mountinfo)
	}
	return source, fstype
}

// backupfs SOURCE MOUNTPOINT -o OPTIONS, as mount.fuse runs it: returns
// once mounted (a read right after it succeeds), with mount(8)'s options
// among its own, names the repository in /proc/mounts, and leaves a
// daemon detached from the session and from its working directory, which
// exits 0 when unmounted.
func TestMountHelperFormServesInTheBackground(t *testing.T) {
	fusetest.RequireFUSE(t)
	becomeSubreaper(t)
	mnt := t.TempDir()
	cleanupDaemon(t, mnt)
	code, stderr := runHelper(t, nil, abs(t, repo012), mnt, "-o", "rw,key="+abs(t, primary012)+",allow_other,noatime,dev,suid")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "repo", "ids", "fdd75e29487490b4ef3eb1792242fc00", "sub", "s.txt"))
	if err != nil || string(b) != "sub file\n" {
		t.Fatalf("right after the command returned: %q %v", b, err)
	}
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if src, fstype := sourceOf(t, info, mnt); src != "backupfs:"+abs(t, repo012) || fstype != "fuse.backupfs" {
		t.Errorf("source %q type %q", src, fstype)
	}
	pid := daemonOf(t, mnt)
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("the daemon is not in a session of its own (sid %d)", sid)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != "/" {
		t.Errorf("the daemon's working directory is %q", cwd)
	}
	if in, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); in != os.DevNull {
		t.Errorf("the daemon's standard input is %q", in)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if code := waitDaemon(t, pid, 15*time.Second); code != 0 {
		t.Fatalf("the daemon exited %d after umount", code)
	}
}

// SIGTERM or SIGINT to the daemon while a reader is busy: nothing stays
// mounted, the daemon exits 0, the reader gets an error rather than a
// hang.
func TestBackgroundMountSignals(t *testing.T) {
	fusetest.RequireFUSE(t)
	becomeSubreaper(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			mnt := t.TempDir()
			cleanupDaemon(t, mnt)
			code, stderr := runHelper(t, nil, "mount", "--background", "--repo", abs(t, repo012), "--key", abs(t, primary012), mnt)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			pid := daemonOf(t, mnt)
			readerDone := busyReader(t, filepath.Join(mnt, "repo", "ids", "fdd75e29487490b4ef3eb1792242fc00", "big.txt"))
			syscall.Kill(pid, sig)
			if code := waitDaemon(t, pid, 20*time.Second); code != 0 {
				t.Fatalf("the daemon exited %d after %v", code, sig)
			}
			if fusetest.Mounted(mnt) {
				t.Fatal("still mounted")
			}
			select {
			case <-readerDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the reader hangs after the mount went away")
			}
		})
	}
}

// A background mount that fails says why in one line, with the status
// the failure has in the foreground, and leaves nothing behind.
func TestBackgroundMountFailures(t *testing.T) {
	fusetest.RequireFUSE(t)
	becomeSubreaper(t)
	keys := abs(t, filepath.Join(testdata, "bupstash-0.12.1/keys"))
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "notes.txt"), []byte("mine"), 0o600)
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"put-only key", []string{abs(t, repo012), t.TempDir(), "-o", "key=" + filepath.Join(keys, "put.key")}, exitWrongKey, "put-only"},
		{"no repository", []string{"/nonexistent/repo", t.TempDir(), "-o", "key=" + abs(t, primary012)}, exitNoRepository, "/nonexistent/repo"},
		{"non-empty mountpoint", []string{abs(t, repo012), full, "-o", "key=" + abs(t, primary012)}, 1, "notes.txt, which the mount would hide"},
		{"unknown option", []string{abs(t, repo012), t.TempDir(), "-o", "key=" + abs(t, primary012) + ",cahce_size=1G"}, exitUsage, "-o cahce_size: unknown mount option"},
		{"item not there", []string{"mount", "--background", "--repo", abs(t, repo012), "--key", abs(t, primary012), "fdd75e29:nope", t.TempDir()}, 1, "item fdd75e29487490b4ef3eb1792242fc00: nope: no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := runHelper(t, nil, tt.args...)
			msg := strings.TrimSpace(stderr)
			if code != tt.code || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Fatalf("exit %d, stderr %q; want %d and one line with %q", code, msg, tt.code, tt.want)
			}
			if mnt := tt.args[len(tt.args)-3]; tt.args[0] != "mount" && fusetest.Mounted(mnt) {
				t.Fatalf("%s is mounted", mnt)
			}
		})
	}
	// -o nonempty allows it; the files come back at umount.
	cleanupDaemon(t, full)
	code, stderr := runHelper(t, nil, abs(t, repo012), full, "-o", "key="+abs(t, primary012)+",nonempty")
	if code != 0 || stderr != "" {
		t.Fatalf("-o nonempty: exit %d %q", code, stderr)
	}
	pid := daemonOf(t, full)
	if _, err := os.Stat(filepath.Join(full, "notes.txt")); !os.IsNotExist(err) {
		t.Errorf("the mount does not hide the directory's files: %v", err)
	}
	syscall.Unmount(full, 0)
	waitDaemon(t, pid, 15*time.Second)
	if b, err := os.ReadFile(filepath.Join(full, "notes.txt")); err != nil || string(b) != "mine" {
		t.Errorf("after umount: %q %v", b, err)
	}
}

// The real thing: mount(8) with fuse3's mount.fuse, from the command line,
// from an fstab line (mount --fstab), and as a systemd mount unit runs it
// (mount WHAT WHERE -t TYPE -o OPTIONS). mount.fuse runs backupfs by name
// with no PATH of its own, so the shell's default path finds it: the test
// installs the binary in /usr/local/sbin, the first directory of that
// path, inside a private mount namespace, where the mounts happen too.
func TestMountThroughMount8(t *testing.T) {
	fusetest.RequireFUSE(t)
	becomeSubreaper(t)
	for _, tool := range []string{"mount", "umount", "unshare", "nsenter", "/sbin/mount.fuse"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (util-linux, fuse3): %v", tool, err)
		}
	}
	bin := t.TempDir()
	if err := os.Symlink(backupfsBinary(t), filepath.Join(bin, "backupfs")); err != nil {
		t.Fatal(err)
	}
	// A process holds the namespace while the steps run in it.
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	ns := strconv.Itoa(holder.Process.Pid)
	inNS := func(script string) string {
		t.Helper()
		cmd := exec.Command("nsenter", "-t", ns, "-m", "sh", "-ec", script)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in the namespace: %s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		self, _ := os.Readlink("/proc/self/ns/mnt")
		its, _ := os.Readlink("/proc/" + ns + "/ns/mnt")
		if its != "" && its != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare made no namespace")
		}
	}
	inNS("mount --bind " + bin + " /usr/local/sbin")

	repo, key, mnt := abs(t, repo012), abs(t, primary012), t.TempDir()
	fstab := filepath.Join(t.TempDir(), "fstab")
	// As README.md shows it: automounted by systemd, and not at boot.
	line := fmt.Sprintf("%s %s fuse.backupfs key=%s,allow_other,noauto,nofail,_netdev,x-systemd.automount,x-systemd.idle-timeout=10min 0 0\n", repo, mnt, key)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, mount string }{
		{"mount -t", fmt.Sprintf("mount -t fuse.backupfs -o key=%s,allow_other %s %s", key, repo, mnt)},
		{"fstab", fmt.Sprintf("mount --fstab %s %s", fstab, mnt)},
		{"mount unit", fmt.Sprintf("mount %s %s -t fuse.backupfs -o key=%s,allow_other", repo, mnt, key)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inNS(tt.mount)
			got := inNS("cat " + filepath.Join(mnt, "repo/ids/fdd75e29487490b4ef3eb1792242fc00/sub/s.txt") + "; cat /proc/self/mountinfo")
			if !strings.HasPrefix(got, "sub file\n") {
				t.Fatalf("through the mount: %q", got)
			}
			if src, fstype := sourceOf(t, []byte(got), mnt); src != "backupfs:"+repo || fstype != "fuse.backupfs" {
				t.Errorf("source %q type %q", src, fstype)
			}
			pid := daemonOf(t, mnt)
			inNS("umount " + mnt)
			if code := waitDaemon(t, pid, 15*time.Second); code != 0 {
				t.Fatalf("the daemon exited %d after umount", code)
			}
		})
	}
}
