// Package mountpoint keeps a FUSE mountpoint healthy: it checks a
// directory before mounting on it (not mounted already, not inside or
// above a source), detaches stale mounts left by crashed servers and
// aborts their connections, finds the fusermount3 helper, captures what
// that helper prints, and tunes the kernel's readahead for a mount. It
// reads /proc/self/mountinfo rather than stat'ing mountpoints, since a
// stat of a FUSE mount is a request to its (possibly dead, possibly this
// very) server.
package mountpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// KernelReadahead is the readahead asked of the kernel for the mount. The
// kernel offers FUSE servers 128 KiB at most when mounting; with 1 MiB the
// same sequential read takes an eighth of the requests (cat of 1 GiB here:
// 384 -> 617 MB/s).
const KernelReadahead = 1 << 20

// SetReadahead sets the readahead of the FUSE mount on dir: its backing
// device's, in sysfs (root only). Mount does it for backupfs's own
// mounts. The device number comes from /proc/self/mountinfo: a stat of
// the mountpoint would be a request to this very process.
func SetReadahead(dir string, bytes int) error {
	dev, ok := Device(dir)
	if !ok {
		return fmt.Errorf("%s is not in /proc/self/mountinfo", dir)
	}
	return os.WriteFile(filepath.Join("/sys/class/bdi", dev, "read_ahead_kb"), []byte(strconv.Itoa(bytes>>10)), 0)
}

// Device returns the "major:minor" of the filesystem mounted on dir.
func Device(dir string) (string, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	dev := ""
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && unescapeMountinfo(fields[4]) == dir {
			dev = fields[2] // the last one mounted on dir wins
		}
	}
	return dev, dev != ""
}

// ExplainError says why a mount failed in one line: the error, what
// fusermount3 printed (helperSaid), and what to do.
func ExplainError(err error, helperSaid string) error {
	if said := strings.Join(strings.Fields(helperSaid), " "); said != "" {
		// go-fuse only reports the helper's exit status.
		return fmt.Errorf("%s (fusermount3 exited with an error)", said)
	}
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w (not allowed: mount as root, or install fuse3 for fusermount3)", err)
	case errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("%w (the kernel has no FUSE support loaded)", err)
	}
	return errors.New(strings.TrimSpace(err.Error()))
}

// CaptureStderr runs fn and, when capture is set, returns what was
// written to the process's standard error meanwhile instead of letting it
// through: go-fuse runs fusermount3 with this process's stderr, and its
// message would otherwise be a second line beside backupfs's own. Nothing
// else writes while a mount is being set up.
func CaptureStderr(capture bool, fn func() error) (string, error) {
	if !capture {
		return "", fn()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", fn()
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		r.Close()
		w.Close()
		return "", fn()
	}
	_ = syscall.Dup3(int(w.Fd()), 2, 0)
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 4096))
		_, _ = io.Copy(io.Discard, r)
		done <- string(b)
	}()
	ferr := fn()
	_ = syscall.Dup3(saved, 2, 0)
	syscall.Close(saved)
	w.Close()
	said := <-done
	r.Close()
	return said, ferr
}

// Fusermount returns the path of the fusermount3 helper (or the older
// fusermount), which mounts and unmounts for users other than root.
func Fusermount() (string, error) {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return "", errors.New("no fusermount3: install the fuse3 package")
		}
	}
	return bin, nil
}

// Detach detaches a mount even while it is busy, or stale.
func Detach(dir string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	bin, err := Fusermount()
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -u -z: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Prepare checks that dir can be mounted on: an existing
// directory, not already mounted, empty unless allowNonEmpty (the mount
// would hide its files until unmounted, and a directory with files is
// more often a mistyped path than a mountpoint), and neither inside nor
// above a source (a mount above a repository would hide the repository
// from the very process reading it). A stale mount left by a crashed run
// (its directory answers "transport endpoint is not connected") is
// detached first. It returns the cleaned absolute path.
func Prepare(dir string, sources []string, allowNonEmpty bool) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	// statfs always reaches a FUSE server, where a stat could be answered
	// from the kernel's cache; a dead one answers ENOTCONN.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(abs, &sfs); errors.Is(err, syscall.ENOTCONN) {
		// Abort the dead connection too: a process stuck on a request to it
		// (the crashed server itself, or a reader) is released at once.
		abortConnection(abs)
		if err := Detach(abs); err != nil {
			return "", fmt.Errorf("%s holds a stale mount that cannot be removed: %w", abs, err)
		}
	}
	_, err = os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint: %w", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	if mounted, fstype := isMountpoint(abs); mounted {
		return "", fmt.Errorf("%s is already a mountpoint (%s); unmount it first", abs, fstype)
	}
	for _, s := range sources {
		src, err := filepath.Abs(s)
		if err != nil {
			continue
		}
		if real, err := filepath.EvalSymlinks(src); err == nil {
			src = real
		}
		if within(abs, src) {
			return "", fmt.Errorf("mountpoint %s is inside the source %s: choose a directory outside it", abs, src)
		}
		if within(src, abs) {
			return "", fmt.Errorf("mountpoint %s contains the source %s: mounting there would hide it", abs, src)
		}
	}
	if !allowNonEmpty {
		if name, ok := firstEntry(abs); ok {
			return "", fmt.Errorf("%w: %s holds %s, which the mount would hide: use an empty directory, or --allow-non-empty (-o nonempty)", ErrNotEmpty, abs, name)
		}
	}
	return abs, nil
}

// firstEntry returns the name of one entry of dir, if it has any. A
// directory that cannot be read is taken as empty: the mount itself will
// say what is wrong with it.
func firstEntry(dir string) (string, bool) {
	f, err := os.Open(dir)
	if err != nil {
		return "", false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil || len(names) == 0 {
		return "", false
	}
	return names[0], true
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// abortConnection aborts the FUSE connection mounted on dir, through
// /sys/fs/fuse/connections/<device minor>/abort, mounting the fusectl
// filesystem there first if needed (root only; best effort).
func abortConnection(dir string) {
	const ctl = "/sys/fs/fuse/connections"
	if ents, err := os.ReadDir(ctl); err == nil && len(ents) == 0 && os.Geteuid() == 0 {
		_ = syscall.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	dev, ok := Device(dir)
	if !ok {
		return
	}
	if _, minor, ok := strings.Cut(dev, ":"); ok {
		_ = os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
	}
}

// isMountpoint looks dir up in /proc/self/mountinfo.
func isMountpoint(dir string) (bool, string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if unescapeMountinfo(fields[4]) != dir {
			continue
		}
		fstype := ""
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
			}
		}
		return true, fstype
	}
	return false, ""
}

// unescapeMountinfo undoes the octal escapes (\040 for space, …) of
// /proc/self/mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
