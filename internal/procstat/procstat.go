// Package procstat reads a live process's memory figures from
// /proc/PID/status, for tests and benchmarks that hold a memory bound.
//
// The rusage a wait reports (os.ProcessState.SysUsage's Maxrss) will not
// do for a child of a Go program: Go starts children with vfork, sharing
// the parent's address space until exec, and Linux keeps that space's
// high-water mark as the child's maxrss. A child of a benchmark runner
// grown to 200 MiB "peaks" at 200 MiB whatever it does. VmHWM is the
// high-water mark of the child's own address space.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Field returns a field of /proc/PID/status that the kernel gives in kB
// (VmHWM, VmRSS, …), in bytes.
func Field(pid int, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		v, ok := bytes.CutPrefix(line, []byte(name+":"))
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, name, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, name)
}

// PeakRSS returns a live process's peak resident memory (VmHWM), in bytes.
func PeakRSS(pid int) (int64, error) { return Field(pid, "VmHWM") }

// Watch samples the peak RSS of process pid every interval until the
// returned stop is called; stop returns the most seen, in bytes. Call stop
// after the process has been waited for: what it reached in its last
// interval may be missed, nothing before.
func Watch(pid int, every time.Duration) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := PeakRSS(pid); err == nil {
				peak = max(peak, v)
			}
			select {
			case <-done:
				result <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}

// State returns a live process's state letter from /proc/PID/stat (R,
// S, D, Z, …).
func State(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the state is the field after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("/proc/%d/stat: no state in %q", pid, b)
	}
	return b[i+2], nil
}

// WaitGone waits up to within for process pid to be gone, or a zombie
// its parent has not reaped yet, and reports whether it was.
func WaitGone(pid int, within time.Duration) bool {
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if st, err := State(pid); err != nil || st == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
