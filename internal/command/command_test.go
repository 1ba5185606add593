package command

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/procstat"
)

// output runs line with a deadline on the test itself: a command that is
// not ended as it should be must fail the test, not hang it.
func output(t *testing.T, ctx context.Context, line string, o Options) ([]byte, time.Duration, error) {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, err := Output(ctx, line, o)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, time.Since(start), r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("%q still running after 30s", line)
		return nil, 0, nil
	}
}

func TestOutput(t *testing.T) {
	out, _, err := output(t, context.Background(), `printf 'a key\n'`, Options{Name: "KEY_COMMAND"})
	if err != nil || string(out) != "a key\n" {
		t.Fatalf("%q, %v", out, err)
	}
}

// Standard input is the program's own, so a command may prompt (gpg).
func TestStdinPassedThrough(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in")
	os.WriteFile(in, []byte("typed passphrase"), 0o600)
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, _, err := output(t, context.Background(), "cat", Options{Stdin: f})
	if err != nil || string(out) != "typed passphrase" {
		t.Fatalf("%q, %v", out, err)
	}
	// Without one, the command reads nothing rather than waiting.
	out, _, err = output(t, context.Background(), "cat", Options{})
	if err != nil || len(out) != 0 {
		t.Fatalf("no stdin: %q, %v", out, err)
	}
}

// Commands that never stop printing are killed as soon as their output
// passes the limit: `BUPSTASH_KEY_COMMAND='cat /dev/zero'` or 'yes' made
// the program grow to gigabytes.
func TestFloodIsCutOff(t *testing.T) {
	for _, line := range []string{"cat /dev/zero", "yes", "sh -c 'yes & yes'"} {
		out, took, err := output(t, context.Background(), line, Options{Name: "KEY_COMMAND", OutputLimit: 64 << 10})
		if !errors.Is(err, ErrTooMuchOutput) || out != nil {
			t.Errorf("%s: %d bytes, %v", line, len(out), err)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "KEY_COMMAND (") || !strings.Contains(msg, "more than 64 KiB") || strings.Contains(msg, "\n") {
			t.Errorf("%s: message %q", line, msg)
		}
		t.Logf("%s: %v after %v", line, err, took)
	}
}

// A failing command is one line: its status and the end of its stderr.
func TestFailureIsOneLine(t *testing.T) {
	_, _, err := output(t, context.Background(), `sh -c 'echo "gpg: decryption failed:" >&2; echo "  No secret key" >&2; exit 2'`, Options{Name: "BUPSTASH_KEY_COMMAND"})
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("err = %v", err)
	}
	want := "BUPSTASH_KEY_COMMAND (sh): failed (exit status 2): gpg: decryption failed:; No secret key"
	if err.Error() != want {
		t.Fatalf("message %q\nwant    %q", err, want)
	}
	_, _, err = output(t, context.Background(), "/nonexistent/program", Options{Name: "BUPSTASH_KEY_COMMAND"})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Fatalf("missing program: %v", err)
	}
	for _, line := range []string{"", "  # only a comment", "'unterminated"} {
		if _, _, err := output(t, context.Background(), line, Options{}); err == nil {
			t.Errorf("%q ran", line)
		}
	}
	if _, _, err := output(t, context.Background(), "", Options{}); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
}

// The program, not its arguments, is named: arguments may hold secrets.
func TestArgumentsAreNotShown(t *testing.T) {
	_, _, err := output(t, context.Background(), "sh -c 'exit 1' --passphrase=hunter2", Options{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
}

// pidsFrom reads the pids a test command wrote.
func pidsFrom(t *testing.T, file string) []int {
	t.Helper()
	var pids []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(file)
		if fields := strings.Fields(string(b)); len(fields) >= 2 {
			for _, f := range fields {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command did not start: %q", b)
		}
	}
}

// hanging starts a shell that starts a grandchild and both wait forever,
// writing their pids to a file.
func hanging(t *testing.T) (line, pidFile string) {
	pidFile = filepath.Join(t.TempDir(), "pids")
	return `sh -c 'sleep 1000 & echo $! $$ > ` + pidFile + `; wait'`, pidFile
}

// requireGone checks that the processes a hanging command started (their
// pids in pidFile) are gone, killing any that is not.
func requireGone(t *testing.T, pidFile string) {
	t.Helper()
	for _, pid := range pidsFrom(t, pidFile) {
		if !procstat.WaitGone(pid, 10*time.Second) {
			t.Errorf("process %d outlived its command", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// A command that does not finish is reported after the timeout, and it is
// killed with everything it started.
func TestHangingCommandTimesOut(t *testing.T) {
	line, pidFile := hanging(t)
	_, took, err := output(t, context.Background(), line, Options{Name: "KEY_COMMAND", Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrTimedOut) || !strings.Contains(err.Error(), "did not finish in time (300ms)") {
		t.Fatalf("err = %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("reported after %v", took)
	}
	requireGone(t, pidFile)
}

// The context (SIGINT, SIGTERM in the program) ends the wait at once, and
// the command with what it started.
func TestContextEndsTheWait(t *testing.T) {
	line, pidFile := hanging(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		pidsFrom(t, pidFile)
		cancel()
	}()
	_, took, err := output(t, ctx, line, Options{Name: "KEY_COMMAND"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("returned %v after the start", took)
	}
	requireGone(t, pidFile)
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("abc\n"))
	b.Write([]byte("defgh\x1b[31m"))
	if got := b.line(); got != "fgh[31m" {
		t.Fatalf("%q", got)
	}
	b.Write([]byte("0123456789\nxy"))
	if got := b.line(); got != "56789; xy" {
		t.Fatalf("%q", got)
	}
}
