package fusefs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/mountpoint"
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
	// Source says what is mounted (a repository's location, say): the
	// mount's source in /proc/mounts, findmnt and df is
	// "backupfs:"+Source, or "backupfs" without one.
	Source string
	// Root, when set, is the directory of the filesystem shown at the
	// mount's root, as a slash-separated path from the filesystem's own
	// root ("repo/ids/<item-id>/etc"); the rest stays unreachable.
	Root string
	// NoExec forbids running programs from the mount (mount -o noexec).
	NoExec bool
}

// fsName is the mount's source field.
func (mo MountOptions) fsName() string {
	if mo.Source == "" {
		return "backupfs"
	}
	return "backupfs:" + mo.Source
}

// Mount is a mounted filesystem.
type Mount struct {
	fs     *FS
	server *fuse.Server
	dir    string
	done   chan struct{}
}

// Init implements fuse.RawFileSystem; it keeps the server for sending
// cache notifications, and learns whether the kernel can open files
// without asking (see Open).
func (f *FS) Init(server *fuse.Server) {
	f.server = server
	f.noOpen.Store(server.KernelSettings().Flags64()&fuse.CAP_NO_OPEN_SUPPORT != 0)
}

// Mount mounts the filesystem on dir and serves it until it is unmounted.
func (f *FS) Mount(dir string, mo MountOptions) (*Mount, error) {
	var served fuse.RawFileSystem = f
	if mo.Root != "" {
		root, err := f.resolve(mo.Root)
		if err != nil {
			return nil, fmt.Errorf("root %s: %w", mo.Root, err)
		}
		served = &subtree{FS: f, root: root}
	}
	opts := &fuse.MountOptions{
		AllowOther: mo.AllowOther,
		// The kernel checks permissions against the saved modes and owners.
		Options: []string{"default_permissions"},
		FsName:  mo.fsName(),
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
		// Saved POSIX ACLs are enforced (and cached) by the kernel where
		// other users may enter; see XattrsAuto for why not elsewhere.
		EnableAcl: f.opts.Xattrs == XattrsAuto && mo.AllowOther,
		Debug:     mo.Debug,
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
	if mo.NoExec {
		opts.DirectMountFlags |= syscall.MS_NOEXEC
	}
	if !opts.DirectMount {
		// fusermount3 mounts; it takes the read-only flag as an option.
		opts.Options = append(opts.Options, "ro", "nosuid", "nodev")
		if mo.NoExec {
			opts.Options = append(opts.Options, "noexec")
		}
		if _, err := mountpoint.Fusermount(); err != nil {
			return nil, fmt.Errorf("mounting as a non-root user: %w", err)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no FUSE device (/dev/fuse): load the fuse module or run where FUSE is available: %w", err)
	}
	var server *fuse.Server
	helperSaid, err := mountpoint.CaptureStderr(!opts.DirectMount, func() error {
		var err error
		server, err = fuse.NewServer(served, dir, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounting on %s: %w", dir, mountpoint.ExplainError(err, helperSaid))
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
	if err := mountpoint.SetReadahead(dir, mountpoint.KernelReadahead); err != nil {
		f.log.Debug("cannot raise the kernel's readahead; reads stay at its default size", "err", err)
	}
	return m, nil
}

func fuseLogLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelWarn
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
	if err := mountpoint.Detach(m.dir); err != nil {
		return fmt.Errorf("unmounting %s: %w", m.dir, err)
	}
	select {
	case <-m.done:
	case <-time.After(grace):
		m.fs.log.Warn("files were still open after unmounting; they now fail", "mountpoint", m.dir)
	}
	return nil
}
