// Package command runs a command the user configured (BUPSTASH_KEY_COMMAND,
// a key_command in the configuration file) and returns what it prints,
// treating it as untrusted: its output is capped, the wait for it is
// bounded and ends with the context (SIGINT, SIGTERM), and ending it kills
// the command and what it started. A failure is one line: the command's
// exit status and the last of what it wrote to stderr.
//
// The command line is split into words as a POSIX shell would (package
// shellwords) and run without a shell. Standard input is passed through,
// so a command may prompt for a passphrase (gpg).
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/shellwords"
	"github.com/backupfs/backupfs/internal/untrusted"
	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds a run when Options.Timeout is zero: long enough to
// type a passphrase, short enough that a command which will never finish
// is reported.
const DefaultTimeout = 5 * time.Minute

// stderrKept is how much of the command's stderr is kept for the message:
// the end, where the reason usually is.
const stderrKept = 4 << 10

// Options describe a run.
type Options struct {
	// Name names the command in messages ("BUPSTASH_KEY_COMMAND").
	Name string
	// Stdin is the command's standard input; nil means none (/dev/null).
	// A terminal is passed as it is, for prompts.
	Stdin *os.File
	// Env is the command's environment; nil means the program's own.
	Env []string
	// OutputLimit caps standard output (default untrusted.CommandOutput).
	// A command printing more is killed at once.
	OutputLimit int64
	// Timeout bounds the run (default DefaultTimeout).
	Timeout time.Duration
}

// Output runs the command line and returns its standard output. It
// returns when the command exits, when its output passes the limit, when
// the timeout passes, or when ctx ends; in the last three cases the
// command (with its process group, unless it runs on the terminal) is
// killed. An error from ctx is returned as ctx's cause, wrapped.
func Output(ctx context.Context, line string, o Options) ([]byte, error) {
	argv, err := shellwords.Split(line)
	if err == nil && len(argv) == 0 {
		err = ErrEmpty
	}
	if err != nil {
		return nil, &Error{Name: o.Name, Err: err}
	}
	return run(ctx, argv, o)
}

func run(parent context.Context, argv []string, o Options) ([]byte, error) {
	fail := func(err error, stderr string) error {
		return &Error{Name: o.Name, Program: argv[0], Err: err, Stderr: stderr}
	}
	limit := o.OutputLimit
	if limit <= 0 {
		limit = untrusted.CommandOutput
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	timer, stopTimer := context.WithTimeoutCause(parent, timeout, fmt.Errorf("%w (%v)", ErrTimedOut, timeout))
	defer stopTimer()
	ctx, kill := context.WithCancelCause(timer)
	defer kill(nil)

	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = o.Env
	if o.Stdin != nil {
		c.Stdin = o.Stdin
	}
	out := &cappedBuffer{limit: limit, full: func() { kill(fmt.Errorf("%w: more than %s", ErrTooMuchOutput, untrusted.FormatSize(limit))) }}
	errTail := &tailBuffer{max: stderrKept}
	c.Stdout, c.Stderr = out, errTail
	// On a terminal the command stays in the foreground process group,
	// where it can read a passphrase and where the terminal's Ctrl-C
	// reaches it too; elsewhere it gets a group of its own, so that
	// killing the group ends whatever it started.
	group := !isTerminal(o.Stdin)
	if group {
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	c.Cancel = func() error {
		if group {
			return syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
		return c.Process.Kill()
	}
	// Whatever it started may hold its output open: stop reading then.
	c.WaitDelay = time.Second

	if err := c.Start(); err != nil {
		return nil, fail(err, "")
	}
	err := c.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return nil, fail(cause, errTail.line())
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fail(fmt.Errorf("%w (%v)", ErrFailed, ee.ProcessState), errTail.line())
		}
		return nil, fail(err, errTail.line())
	}
	return out.buf.Bytes(), nil
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// cappedBuffer keeps what is written up to limit; past it, it calls full
// once and fails the write, which ends the copy from the command.
type cappedBuffer struct {
	buf   bytes.Buffer
	limit int64
	full  func()
	over  bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.over || int64(b.buf.Len())+int64(len(p)) > b.limit {
		if !b.over {
			b.over = true
			b.full()
		}
		return 0, ErrTooMuchOutput
	}
	return b.buf.Write(p)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.b = append(t.b[:0], p...)
		return n, nil
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

// line returns what was kept as one line: trimmed, lines joined with "; ",
// control characters dropped (a command's stderr is untrusted too).
func (t *tailBuffer) line() string {
	var parts []string
	for _, l := range strings.Split(string(bytes.ToValidUTF8(t.b, []byte("?"))), "\n") {
		l = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return -1
			}
			return r
		}, strings.TrimSpace(l))
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

var _ io.Writer = (*cappedBuffer)(nil)
