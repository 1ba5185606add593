package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/procstat"
)

// A Run is what one finished process cost.
type Run struct {
	Wall time.Duration
	// First is when the first byte of output arrived (output is counted,
	// not kept; zero when it was sent to /dev/null).
	First time.Duration
	Out   int64 // bytes written to stdout
	Lines int64 // lines written to stdout
	// MaxRSS is the process's peak resident memory (its VmHWM), in
	// bytes, sampled while it ran (see internal/procstat for why not
	// the wait's rusage).
	MaxRSS    int64
	User, Sys time.Duration
}

func finished(ps *os.ProcessState, wall time.Duration, maxRSS int64) Run {
	return Run{Wall: wall, User: ps.UserTime(), Sys: ps.SystemTime(), MaxRSS: maxRSS}
}

// rssEvery is how often a running tool's peak RSS is sampled: rarely
// enough to cost the timed run nothing measurable (a read of its /proc
// status a 10 ms), and the high-water mark only grows, so only what a
// tool adds in its last 10 ms can be missed.
const rssEvery = 10 * time.Millisecond

// runTool runs a command in dir and counts its output; a non-zero exit is
// an error quoting its stderr.
func runTool(ctx context.Context, dir string, argv ...string) (Run, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Run{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Run{}, err
	}
	peak := procstat.Watch(cmd.Process.Pid, rssEvery)
	var first time.Duration
	var n, lines int64
	buf := make([]byte, 1<<20)
	for {
		k, err := out.Read(buf)
		if k > 0 {
			if n == 0 {
				first = time.Since(start)
			}
			n += int64(k)
			lines += int64(bytes.Count(buf[:k], []byte{'\n'}))
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	r := finished(cmd.ProcessState, time.Since(start), peak())
	r.First, r.Out, r.Lines = first, n, lines
	if err != nil {
		return r, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, firstLine(stderr.String()))
	}
	return r, nil
}

// runToNull runs a command with its output going to /dev/null.
func runToNull(ctx context.Context, dir string, argv ...string) (Run, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return Run{}, err
	}
	defer null.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = null
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Run{}, err
	}
	peak := procstat.Watch(cmd.Process.Pid, rssEvery)
	err = cmd.Wait()
	r := finished(cmd.ProcessState, time.Since(start), peak())
	if err != nil {
		return r, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, firstLine(stderr.String()))
	}
	return r, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// A Server is a running FUSE server process: backupfs mount or ceilingfs.
type Server struct {
	Dir string
	// Ready is how long after starting the process the mountpoint
	// answered a stat.
	Ready time.Duration

	cmd    *exec.Cmd
	start  time.Time
	stderr *bytes.Buffer
	exited chan struct{}
}

// startServer starts a FUSE server on a fresh mountpoint below work and
// waits until the mount answers.
func startServer(ctx context.Context, work string, argv ...string) (*Server, error) {
	return startServerLogging(ctx, work, nil, argv...)
}

// startServerLogging is startServer with the server's stderr also written
// to log, as it comes; only its first 64 KiB are kept for Log.
func startServerLogging(ctx context.Context, work string, log io.Writer, argv ...string) (*Server, error) {
	dir, err := os.MkdirTemp(work, "mnt-")
	if err != nil {
		return nil, err
	}
	argv = append(argv, dir)
	cmd := exec.Command(argv[0], argv[1:]...)
	s := &Server{Dir: dir, cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = s.stderr
	if log != nil {
		cmd.Stderr = io.MultiWriter(&headBuffer{b: s.stderr, max: 64 << 10}, log)
	}
	s.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	// Poll the mount table (which does not touch the filesystem), then
	// stat the mountpoint, which the server answers.
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before mounting: %s", filepath.Base(argv[0]), firstLine(s.stderr.String()))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(500 * time.Microsecond):
		}
		if time.Since(s.start) > 2*time.Minute {
			s.Stop()
			return nil, fmt.Errorf("%s did not mount within 2 minutes", filepath.Base(argv[0]))
		}
		if !inMountTable(dir) {
			continue
		}
		if _, err := os.Stat(dir); err == nil {
			s.Ready = time.Since(s.start)
			return s, nil
		}
	}
}

// Stop unmounts by SIGTERM, as a user's Ctrl-C would, and returns what
// the server process cost over its whole life; its peak RSS is read just
// before, when the work measured is over.
func (s *Server) Stop() (Run, error) {
	peak, _ := procstat.PeakRSS(s.cmd.Process.Pid)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		_ = syscall.Unmount(s.Dir, syscall.MNT_DETACH)
		return Run{}, errors.New("the server did not stop within 30 s of SIGTERM")
	}
	r := finished(s.cmd.ProcessState, time.Since(s.start), peak)
	if inMountTable(s.Dir) {
		_ = syscall.Unmount(s.Dir, syscall.MNT_DETACH)
		return r, fmt.Errorf("%s was still mounted after the server exited", s.Dir)
	}
	_ = os.Remove(s.Dir)
	if !s.cmd.ProcessState.Success() {
		return r, fmt.Errorf("the server exited with %v: %s", s.cmd.ProcessState, firstLine(s.stderr.String()))
	}
	return r, nil
}

// headBuffer keeps the first max bytes written to it and discards the
// rest.
type headBuffer struct {
	b   *bytes.Buffer
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.b.Len(); room > 0 {
		h.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Log is what the server wrote to stderr.
func (s *Server) Log() string { return s.stderr.String() }

// inMountTable reports whether dir is in this process's mount table.
func inMountTable(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && fields[4] == dir {
			return true
		}
	}
	return false
}

// warmFiles reads every file below dir into the page cache, so that runs
// measure decoding rather than the disk.
func warmFiles(dir string) error {
	buf := make([]byte, 1<<20)
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		return err
	})
}
