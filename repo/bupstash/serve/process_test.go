package serve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processesMentioning returns the pids whose command line contains s.
func processesMentioning(s string) []string {
	var pids []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), s) {
			if st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie, already dead
			}
			pids = append(pids, d.Name())
		}
	}
	return pids
}

// TestKillEndsGroup: ending a connection ends everything its command
// started, not only the command itself.
func TestKillEndsGroup(t *testing.T) {
	p, err := startProcess([]string{"sh", "-c", "sleep 1000 & sleep 1000; wait"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pgid := p.cmd.Process.Pid
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(-pgid, 0); err != nil {
		t.Fatalf("group not running: %v", err)
	}
	p.kill()
	if exited, _ := p.awaitExit(10 * time.Second); !exited {
		t.Fatal("not ended after kill")
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("members of the group outlived the kill")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill() // reaped: must not signal anything
}

// TestDialCancelled: a server that never answers does not hold Dial
// past its context, and is ended.
func TestDialCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, Command{Argv: []string{"sh", "-c", "exec sleep 1000 # " + dir}, Name: "never"}, DialOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("dial took %v", d)
	}
	waitGone(t, dir)
}

func waitGone(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(processesMentioning(s)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes left: %v", processesMentioning(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNoServerLeft: after Close, and after a connection dies, no server
// process of ours is left, whether it exited politely or was killed.
func TestNoServerLeft(t *testing.T) {
	dir := copyRepo(t, fixtures[5].dir)
	ctx := testContext(t, time.Minute)
	c, err := Dial(ctx, serveCommand(t, "0.12.1", dir), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.BeginPull(ctx); err != nil {
		t.Fatal(err)
	}
	if len(processesMentioning(dir)) == 0 {
		t.Fatal("no server seen")
	}
	c.Close()
	waitGone(t, dir)
	if exited, status := c.t.awaitExit(0); !exited || status != nil {
		t.Errorf("polite close: exited %v, status %v", exited, status)
	}

	// A server wrapped in a shell that ignores SIGTERM is killed anyway.
	c, err = Dial(ctx, Command{Argv: []string{"sh", "-c", "trap '' TERM; " + serveCommand(t, "0.12.1", dir).Argv[0] + " serve " + dir + "; sleep 1000"}, Env: serverEnv(t), Name: "stubborn"}, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.fail(errors.New("test"))
	waitGone(t, dir)
}
