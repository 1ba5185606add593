package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// watchPeak samples a child process's peak RSS (VmHWM, its own address
// space's high-water mark) until the returned stop is called, and stop
// returns the most seen, in KiB.
//
// The rusage a wait reports (ProcessState.SysUsage's Maxrss) will not do:
// Go starts children with vfork, sharing the test process's address space
// until exec, and Linux keeps that space's high-water mark as the child's
// maxrss, so a child of a test binary grown to 250 MiB "peaks" at 250 MiB
// whatever it does.
func watchPeak(pid int) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if kb, ok := vmHWM(pid); ok {
				peak = max(peak, kb)
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

// vmHWM reads a live process's VmHWM in KiB.
func vmHWM(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}
