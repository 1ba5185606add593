package serve

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// process is a running server: `ssh … bupstash serve PATH`, or the
// command of BUPSTASH_REPOSITORY_COMMAND.
//
// It runs in a process group of its own, so that the terminal's Ctrl-C
// reaches backupfs only, which then ends the group: ssh, and whatever ssh
// or the command started (a ProxyCommand, a wrapper script). The group is
// signalled only while its leader has not been reaped: until then its id
// cannot be reused.
type process struct {
	cmd    *exec.Cmd
	stdin  *os.File // the server's stdin
	stdout *os.File // the server's stdout
	stderr *stderrRing

	mu     sync.Mutex
	reaped bool
	exited chan struct{} // closed once reaped
	status error         // the exit status, once reaped
	killed bool
}

// answerPipeSize is the size asked for the pipe the server answers on.
const answerPipeSize = 1 << 20

// killGrace is how long a server has to exit after SIGTERM before SIGKILL.
const killGrace = 2 * time.Second

func startProcess(argv []string, env []string, onLine func(string)) (*process, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty server command")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	// A larger pipe for the answers: chunks arrive in fewer, larger
	// reads (fewer wakeups of the reader for the same bytes). Best
	// effort: the kernel may refuse.
	_, _ = unix.FcntlInt(outR.Fd(), unix.F_SETPIPE_SZ, answerPipeSize)
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// Files, not io.Writers: exec then copies nothing itself, so Wait
	// does not wait for grandchildren that keep a pipe open.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, err
	}
	p := &process{cmd: cmd, stdin: inW, stdout: outR, stderr: newStderrRing(onLine), exited: make(chan struct{})}
	go p.stderr.drain(errR)
	go p.wait()
	return p, nil
}

// wait reaps the process. It first waits without reaping and then reaps
// under the lock kill takes, so that kill never signals a group whose
// leader was reaped (its id could then be another's). Members that outlive
// the leader are left alone: ssh's ControlPersist master is one.
func (p *process) wait() {
	pid := p.cmd.Process.Pid
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	p.status = p.cmd.Wait()
	p.reaped = true
	p.mu.Unlock()
	close(p.exited)
}

// kill ends the server's process group: SIGTERM, then SIGKILL if it has
// not exited after killGrace. It does not wait.
func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped || p.killed {
		return
	}
	p.killed = true
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	go func() {
		select {
		case <-p.exited:
		case <-time.After(killGrace):
			p.mu.Lock()
			if !p.reaped {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
			p.mu.Unlock()
		}
	}()
}

// awaitExit waits up to d for the process to exit and returns its exit
// status, or nil if it is still running.
func (p *process) awaitExit(d time.Duration) (exited bool, status error) {
	select {
	case <-p.exited:
		return true, p.status
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true, p.status
	case <-t.C:
		return false, nil
	}
}

// stderrRing keeps the end of what a server prints on stderr (bounded),
// and passes each line, shortened, to onLine.
type stderrRing struct {
	onLine func(string)

	mu    sync.Mutex
	lines []string // the last maxLines lines
	done  chan struct{}
}

const (
	maxStderrLines = 16
	maxLineLen     = 512
	maxShownLen    = 300
)

func newStderrRing(onLine func(string)) *stderrRing {
	return &stderrRing{onLine: onLine, done: make(chan struct{})}
}

func (s *stderrRing) drain(r io.ReadCloser) {
	defer close(s.done)
	defer r.Close()
	buf := make([]byte, 4096)
	var line []byte
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c == '\n' {
				s.add(string(line))
				line = line[:0]
				continue
			}
			if len(line) < maxLineLen {
				line = append(line, c)
			}
		}
		if err != nil {
			if len(line) > 0 {
				s.add(string(line))
			}
			return
		}
	}
}

func (s *stderrRing) add(line string) {
	line = strings.TrimRight(line, "\r ")
	if line == "" {
		return
	}
	s.mu.Lock()
	if len(s.lines) == maxStderrLines {
		copy(s.lines, s.lines[1:])
		s.lines = s.lines[:maxStderrLines-1]
	}
	s.lines = append(s.lines, line)
	onLine := s.onLine
	s.mu.Unlock()
	if onLine != nil {
		onLine(quoteLine(line))
	}
}

// silence waits up to wait for stderr to be drained, then stops passing
// lines on: nothing is logged for a connection after it was closed (a
// grandchild such as ssh's ControlPersist master may keep stderr open).
func (s *stderrRing) silence(wait time.Duration) {
	select {
	case <-s.done:
	case <-time.After(wait):
	}
	s.mu.Lock()
	s.onLine = nil
	s.mu.Unlock()
}

// line returns the line to show for the server's end: Bupstash's own
// "bupstash serve: …" line if there is one, else the last line (ssh's
// own messages: "Permission denied", "Could not resolve hostname").
// It waits briefly for stderr to be drained.
func (s *stderrRing) line(wait time.Duration) string {
	select {
	case <-s.done:
	case <-time.After(wait):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(s.lines[i], "bupstash serve:") {
			return quoteLine(s.lines[i])
		}
	}
	if len(s.lines) == 0 {
		return ""
	}
	return quoteLine(s.lines[len(s.lines)-1])
}

// quoteLine makes a line from a server safe to show on one line of a
// terminal or log: control characters and invalid UTF-8 are escaped,
// and it is shortened.
func quoteLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxShownLen; {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	if b.Len() >= maxShownLen {
		b.WriteString("…")
	}
	return b.String()
}
