// Package fusetest mounts filesystems for tests: in a temporary
// directory, always unmounted when the test ends, and failing (never
// skipping) where FUSE is unavailable, so that CI cannot pass without
// having run the mount tests.
package fusetest

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/fusefs"
)

// RequireFUSE fails the test unless FUSE mounts can work here.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is unavailable (%v): mount tests cannot run; install fuse3 and run where /dev/fuse exists", err)
	}
}

// Mount mounts f on a fresh temporary directory and returns its path. The
// mount is removed when the test ends, lazily if files are still open.
func Mount(t testing.TB, f *fusefs.FS, opts fusefs.MountOptions) string {
	t.Helper()
	RequireFUSE(t)
	dir := t.TempDir()
	m, err := f.Mount(dir, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	// The test process reads the mount it serves.
	if err := m.PrepareSelfAccess(); err != nil {
		t.Fatalf("mount: %v", err)
	}
	// Registered after TempDir's cleanup, so it runs before the directory
	// is removed.
	t.Cleanup(func() {
		if err := m.Unmount(2 * time.Second); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if Mounted(dir) {
			t.Errorf("%s is still mounted after the test", dir)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// Mounted reports whether dir is a mountpoint.
func Mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// Run runs a command and returns its combined output, failing the test if
// it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
