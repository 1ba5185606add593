package procstat

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestPeakRSSOfThisProcess(t *testing.T) {
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = 1
	}
	rss, err := Field(os.Getpid(), "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	// Read after VmRSS: the high-water mark only grows.
	peak, err := PeakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 64<<20 || peak < rss {
		t.Fatalf("VmRSS %d MiB after touching 64 MiB, VmHWM %d MiB", rss>>20, peak>>20)
	}
	_ = b[len(b)-1]
}

// A child's VmHWM is its own, not its parent's high-water mark, which the
// wait's rusage reports: this process has touched 64 MiB and more above.
func TestWatchSeesTheChildsOwnPeak(t *testing.T) {
	b := make([]byte, 96<<20)
	for i := range b {
		b[i] = 1
	}
	cmd := exec.Command("sleep", "0.2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := Watch(cmd.Process.Pid, time.Millisecond)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	peak := stop()
	if peak <= 0 || peak > 32<<20 {
		t.Fatalf("sleep peaked at %d KiB", peak>>10)
	}
	_ = b[len(b)-1]
}

func TestFieldOfAMissingProcess(t *testing.T) {
	if _, err := Field(1<<30, "VmHWM"); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
	if _, err := Field(os.Getpid(), "NoSuchField"); err == nil {
		t.Fatal("no error for a missing field")
	}
}

func TestStateAndWaitGone(t *testing.T) {
	// The main thread's state: running, or asleep while another runs.
	if st, err := State(os.Getpid()); err != nil || (st != 'R' && st != 'S') {
		t.Fatalf("this process's state %q, %v; want R or S", st, err)
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		st, err := State(pid)
		if err == nil && st == 'S' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep's state %q, %v; want S", st, err)
		}
	}
	if WaitGone(pid, 50*time.Millisecond) {
		t.Fatal("a sleeping process counted as gone")
	}
	cmd.Process.Kill()
	if !WaitGone(pid, 10*time.Second) { // a zombie until waited for
		t.Fatal("a killed process did not count as gone")
	}
	cmd.Wait()
	if !WaitGone(pid, 0) {
		t.Fatal("a reaped process did not count as gone")
	}
}
