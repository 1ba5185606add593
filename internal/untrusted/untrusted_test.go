package untrusted_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/untrusted"
)

// Every refusal must come at once: a test that would hang instead fails
// on its deadline.
func withDeadline(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("blocked")
	}
}

func TestRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zeroLink := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zeroLink); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, want string }{
		{fifo, "a FIFO"},
		{"/dev/zero", "a character device"},
		{zeroLink, "a character device"},
		{dir, "a directory"},
	} {
		withDeadline(t, func() {
			_, err := untrusted.ReadFile(tt.name, 1<<20)
			if !errors.Is(err, untrusted.ErrNotRegular) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.name) {
				t.Errorf("%s: %v, want %s named as %s", tt.name, err, untrusted.ErrNotRegular, tt.want)
			}
		})
	}
}

func TestRefusesLargeFilesBeforeReading(t *testing.T) {
	name := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	_, err = untrusted.ReadFile(name, 1<<20)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if !errors.Is(err, untrusted.ErrTooLarge) || !strings.Contains(err.Error(), "3 GiB") {
		t.Fatalf("got %v, want a refusal naming 3 GiB", err)
	}
	if grew := after.Maxrss - before.Maxrss; grew > 64<<10 { // KiB
		t.Fatalf("peak RSS grew by %d KiB refusing a file", grew)
	}
}

func TestReadsWithinTheLimit(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("x"), 1000)
	if err := os.WriteFile(name, want, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := untrusted.ReadFile(name, 1000)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if _, err := untrusted.ReadFile(name, 999); !errors.Is(err, untrusted.ErrTooLarge) {
		t.Fatalf("limit 999: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := untrusted.ReadFile(empty, 0); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %q, %v", got, err)
	}
}

// A stream without a size (a command's output) is cut at the limit.
func TestReadAllStopsAtTheLimit(t *testing.T) {
	f, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	withDeadline(t, func() {
		if _, err := untrusted.ReadAll(f, "output", 1<<20); !errors.Is(err, untrusted.ErrTooLarge) {
			t.Errorf("got %v", err)
		}
	})
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{17: "17 bytes", 1 << 10: "1 KiB", 3 << 30: "3 GiB", 1536: "1.5 KiB"} {
		if got := untrusted.FormatSize(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}
