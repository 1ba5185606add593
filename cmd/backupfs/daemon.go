package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// A mount started by mount(8) (or with --background) returns once the
// filesystem is mounted and keeps serving in the background, as sshfs and
// borgfs do: mount(8), and systemd's mount units, wait for the command to
// return and take its exit status as the mount's.
//
// A Go program cannot fork once its runtime has started threads, so the
// command starts itself again (the daemon) with the same arguments and
// waits on a pipe, which is the daemon's standard error until the mount is
// ready: every line the daemon logs while starting is printed by the
// command that waits, and the daemon's exit status becomes its own. Once
// mounted, the daemon moves its standard error to where its log goes
// from then on (see logDestination), writes readyMarker on the pipe,
// closes it, leaves the terminal's session and its working directory, and
// the waiting command exits 0.
//
// The daemon learns that it is one from daemonEnv, which it removes from
// its environment before anything else runs. It finds its log's final
// destination as file descriptor 3 and the pipe as 4 (and 2).

const (
	// daemonEnv carries the log destination's kind (a logKind) to the
	// daemon.
	daemonEnv = "_BACKUPFS_DAEMON"
	// readyMarker on the pipe says the mount is ready. No log line starts
	// with a NUL.
	readyMarker = "\x00ready"
	// daemonLogFD and daemonPipeFD are the daemon's descriptors for its
	// final log destination and the pipe.
	daemonLogFD  = 3
	daemonPipeFD = 4
)

// logKind says where a background mount's log goes once it is mounted.
type logKind string

const (
	logJournal logKind = "journal" // the journal: systemd started mount(8)
	logFile    logKind = "file"    // --log-file
	logSyslog  logKind = "syslog"  // /dev/log
	logNowhere logKind = "none"    // none of those
)

// daemonChild is the daemon's side: what it must do once mounted.
type daemonChild struct {
	kind logKind
	done bool
}

// daemonFromEnv returns the daemon's side if this process is a daemon,
// and removes the variable that says so from the environment (programs
// the daemon runs, key commands, must not see it).
func daemonFromEnv() *daemonChild {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(daemonEnv)
	// A write to the pipe after the waiting command is gone must fail,
	// not kill the daemon with SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	return &daemonChild{kind: logKind(v)}
}

// ready is called once the filesystem is mounted: the log moves to its
// final destination, the waiting command is told, and the daemon
// detaches from the terminal. Lines held back must have been released
// (they go to the waiting command).
func (d *daemonChild) ready(out *logOutput) error {
	if d == nil || d.done {
		return nil
	}
	d.done = true
	out.mu.Lock()
	err := syscall.Dup3(daemonLogFD, 2, 0)
	switch d.kind {
	case logJournal:
		out.journal, out.stamp, out.syslog = true, false, false
	case logSyslog:
		out.journal, out.stamp, out.syslog = false, false, true
	default:
		out.journal, out.stamp, out.syslog = false, true, false
	}
	out.status = ""
	out.mu.Unlock()
	syscall.Close(daemonLogFD)
	if err != nil {
		return fmt.Errorf("background: moving the log: %w", err)
	}
	pipe := os.NewFile(daemonPipeFD, "ready pipe")
	_, err = io.WriteString(pipe, readyMarker+"\n")
	pipe.Close()
	if err != nil {
		// The command that waited is gone (killed); the mount is up and
		// serves all the same.
		out.line(slog.LevelWarn, fmt.Sprintf("backupfs: warning: could not report that the mount is ready: %v", err))
	}
	if null, err := os.Open(os.DevNull); err == nil {
		_ = syscall.Dup3(int(null.Fd()), 0, 0)
		null.Close()
	}
	// A session of its own: no terminal's hangup or Ctrl-C reaches the
	// daemon; and no directory is kept busy by its working directory
	// (every path it uses was made absolute when the mount was planned).
	_, _ = syscall.Setsid()
	_ = os.Chdir("/")
	return nil
}

// logDestination opens where a background mount's log goes once mounted:
// the journal if standard error is it (systemd started mount(8)), else
// logPath if given, else syslog's socket if there is one, else nowhere.
func logDestination(stderr *os.File, journalStream, logPath string) (*os.File, logKind, error) {
	if stderr != nil && isJournal(stderr, journalStream) {
		f, err := dupFile(stderr)
		return f, logJournal, err
	}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, "", fmt.Errorf("--log-file: %w", err)
		}
		return f, logFile, nil
	}
	if c, err := net.Dial("unixgram", "/dev/log"); err == nil {
		f, err := c.(*net.UnixConn).File()
		c.Close()
		if err == nil {
			return f, logSyslog, nil
		}
	}
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	return f, logNowhere, err
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// startDaemon starts the daemon and waits until it reports the mount
// ready (nil) or exits (its status). SIGINT and SIGTERM while waiting are
// passed on: the daemon stops starting, and its status says so.
func startDaemon(ctx context.Context, e *env, mnt, logPath string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("background: %w", err)
	}
	stderrFile, _ := e.stderr.(*os.File)
	dest, kind, err := logDestination(stderrFile, e.getenv("JOURNAL_STREAM"), logPath)
	if err != nil {
		return err
	}
	defer dest.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("background: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command(exe, e.args...)
	cmd.Env = append(os.Environ(), daemonEnv+"="+string(kind))
	cmd.Stdin = os.Stdin // a token on standard input (-) is read by the daemon
	cmd.Stderr = pw
	cmd.ExtraFiles = []*os.File{dest, pw} // 3, 4
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("background: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()

	lines := make(chan string)
	go relayLines(pr, lines)
	// While it starts, a terminal shows for how long.
	var tick <-chan time.Time
	if e.progressMode.enabled(e.stderr, nil) {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	defer e.out.clearStatus()
	started := time.Now()
	signalled := false
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-exited
				return daemonFailure(cmd.ProcessState)
			}
			if line == readyMarker {
				return nil
			}
			e.out.raw(line + "\n")
		case <-tick:
			e.out.showStatus(fmt.Sprintf("backupfs: mounting on %s… %ds", mnt, int(time.Since(started).Seconds())))
		case <-ctx.Done():
			if !signalled {
				signalled = true
				cmd.Process.Signal(syscall.SIGTERM)
			}
			ctx = context.Background() // wait for its report
		}
	}
}

// maxRelayedLine bounds a line relayed from the daemon.
const maxRelayedLine = 16 << 10

// relayLines sends each line read from r, cut at maxRelayedLine, and
// closes lines at the end.
func relayLines(r io.Reader, lines chan<- string) {
	defer close(lines)
	br := bufio.NewReaderSize(r, maxRelayedLine)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			s := strings.TrimSuffix(string(b), "\n")
			if errors.Is(err, bufio.ErrBufferFull) {
				s += "…"
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
			}
			lines <- s
		}
		if err != nil {
			return
		}
	}
}

// daemonFailure is the waiting command's result when the daemon exited
// before the mount was ready: its status, its error line already relayed.
func daemonFailure(ps *os.ProcessState) error {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("background: the mount process was killed by %v before the mount was ready", ws.Signal())
	}
	code := ps.ExitCode()
	if code == 0 {
		// It ended without an error and without mounting (unmounted
		// at once from outside): nothing is mounted.
		return errors.New("background: the mount process ended before the mount was ready")
	}
	return withCode(code, errReported)
}
