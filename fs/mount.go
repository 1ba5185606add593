package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions configure how the filesystem is mounted.
type MountOptions struct {
	// AllowOther lets users other than the mounting one in (needs
	// user_allow_other in /etc/fuse.conf for non-root users). Permissions
	// are checked by the kernel against the saved modes either way.
	AllowOther bool
	// Debug logs every FUSE request and reply.
	Debug bool
}

// Mount is a mounted filesystem.
type Mount struct {
	fs     *FS
	server *fuse.Server
	dir    string
	done   chan struct{}
}

// Init implements fuse.RawFileSystem; it keeps the server for sending
// cache invalidations.
func (f *FS) Init(server *fuse.Server) { f.server = server }

// Mount mounts the filesystem on dir and serves it until it is unmounted.
func (f *FS) Mount(dir string, mo MountOptions) (*Mount, error) {
	opts := &fuse.MountOptions{
		AllowOther: mo.AllowOther,
		// The kernel checks permissions against the saved modes and owners.
		Options: []string{"default_permissions"},
		FsName:  "backupfs",
		Name:    "backupfs",
		// Reads of up to 1 MiB, and up to 1 MiB of kernel readahead.
		MaxWrite:     1 << 20,
		MaxReadAhead: 1 << 20,
		// Room for many reads in flight: readahead of several files.
		MaxBackground: 64,
		// Without the setuid helper when running as root.
		DirectMount:      os.Geteuid() == 0,
		DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		// Contents never change: no invalidation on mtime.
		ExplicitDataCacheControl: true,
		EnableSymlinkCaching:     true,
		DisableXAttrs:            f.opts.Xattrs == XattrsOff,
		EnableAcl:                f.opts.Xattrs == XattrsAuto,
		Debug:                    mo.Debug,
		// Splicing only helps data read from a file descriptor; ours is
		// in memory, and a 1 MiB reply does not fit a default pipe.
		DisableSplice: true,
		// go-fuse's own messages go to the mount's log: request traces
		// with --debug, otherwise warnings.
		Logger: slog.NewLogLogger(f.log.Handler(), fuseLogLevel(mo.Debug)),
		PanicHandler: func(v any) fuse.Status {
			f.log.Error("internal error while serving a request; answered EIO", "panic", fmt.Sprint(v))
			return fuse.EIO
		},
	}
	if !opts.DirectMount {
		// fusermount3 mounts; it takes the read-only flag as an option.
		opts.Options = append(opts.Options, "ro", "nosuid", "nodev")
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err := exec.LookPath("fusermount"); err != nil {
				return nil, errors.New("mounting as a non-root user needs fusermount3: install the fuse3 package")
			}
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no FUSE device (/dev/fuse): load the fuse module or run where FUSE is available: %w", err)
	}
	var server *fuse.Server
	helperSaid, err := captureStderr(!opts.DirectMount, func() error {
		var err error
		server, err = fuse.NewServer(f, dir, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounting on %s: %w", dir, explainMountError(err, helperSaid))
	}
	// The mount is complete, INIT included, once NewServer returns, and
	// this process never touches it: a process killed while one of its own
	// threads waits on its own filesystem can never finish dying (the
	// request was already read, so only an answer or an aborted connection
	// releases it, and the connection lives until the process is gone).
	// Processes that do access their own mount call PrepareSelfAccess.
	m := &Mount{fs: f, server: server, dir: dir, done: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	f.mu.Lock()
	for _, w := range f.watchers {
		go w(ctx)
	}
	f.mu.Unlock()
	go func() {
		server.Serve()
		stop()
		close(m.done)
	}()
	if err := SetReadahead(dir, KernelReadahead); err != nil {
		f.log.Debug("cannot raise the kernel's readahead; reads stay at its default size", "err", err)
	}
	return m, nil
}

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
	dev, ok := mountDevice(dir)
	if !ok {
		return fmt.Errorf("%s is not in /proc/self/mountinfo", dir)
	}
	return os.WriteFile(filepath.Join("/sys/class/bdi", dev, "read_ahead_kb"), []byte(strconv.Itoa(bytes>>10)), 0)
}

// mountDevice returns the "major:minor" of the filesystem mounted on dir.
func mountDevice(dir string) (string, bool) {
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

func fuseLogLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// explainMountError says why a mount failed in one line: the error, what
// fusermount3 printed (helperSaid), and what to do.
func explainMountError(err error, helperSaid string) error {
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

// captureStderr runs fn and, when capture is set, returns what was
// written to the process's standard error meanwhile instead of letting it
// through: go-fuse runs fusermount3 with this process's stderr, and its
// message would otherwise be a second line beside backupfs's own. Nothing
// else writes while a mount is being set up.
func captureStderr(capture bool, fn func() error) (string, error) {
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

// PrepareSelfAccess must be called before the serving process opens files
// in its own mount (tests do; the backupfs command never does). It runs
// go-fuse's poll hack, which makes the kernel learn that the filesystem
// does not implement poll; otherwise the Go runtime registering such a
// file with its netpoller sends a poll request from inside epoll_ctl that
// deadlocks against this very process.
func (m *Mount) PrepareSelfAccess() error { return m.server.WaitMount() }

// Dir returns the mountpoint.
func (m *Mount) Dir() string { return m.dir }

// Done is closed when the filesystem is no longer served: it was
// unmounted, by Unmount or from outside (umount, fusermount3 -u).
func (m *Mount) Done() <-chan struct{} { return m.done }

// Unmount unmounts the filesystem. If files are still open it detaches
// the mount (a lazy unmount: it disappears from the namespace at once)
// and keeps serving the open files for up to grace, so nothing is left
// half-mounted.
func (m *Mount) Unmount(grace time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.server.Unmount(); err == nil {
		<-m.done
		return nil
	}
	if err := lazyUnmount(m.dir); err != nil {
		return fmt.Errorf("unmounting %s: %w", m.dir, err)
	}
	select {
	case <-m.done:
	case <-time.After(grace):
		m.fs.log.Warn("files were still open after unmounting; they now fail", "mountpoint", m.dir)
	}
	return nil
}

// lazyUnmount detaches a mount even while it is busy, or stale.
func lazyUnmount(dir string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return errors.New("no fusermount3 to unmount with")
		}
	}
	out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -u -z: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// PrepareMountpoint checks that dir can be mounted on: an existing
// directory, not already mounted, and neither inside nor above a source
// (a mount above a repository would hide the repository from the very
// process reading it). A stale mount left by a crashed run (its directory
// answers "transport endpoint is not connected") is detached first.
// It returns the cleaned absolute path.
func PrepareMountpoint(dir string, sources []string) (string, error) {
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
		if err := lazyUnmount(abs); err != nil {
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
	return abs, nil
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
	dev, ok := mountDevice(dir)
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
