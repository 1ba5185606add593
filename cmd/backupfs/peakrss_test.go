package main

import (
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/procstat"
)

// watchPeak samples a child process's peak RSS (VmHWM, not the wait's
// rusage: see internal/procstat) until the returned stop is called, and
// stop returns the most seen, in KiB.
func watchPeak(pid int) (stop func() int64) {
	peak := procstat.Watch(pid, 2*time.Millisecond)
	return func() int64 { return peak() >> 10 }
}

// peakOf returns a live process's peak RSS (VmHWM) in bytes.
func peakOf(t testing.TB, pid int) int64 {
	t.Helper()
	v, err := procstat.PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// vmRSS returns a field of a live process's /proc status, in KiB.
func vmRSS(t *testing.T, pid int, field string) int64 {
	t.Helper()
	v, err := procstat.Field(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return v >> 10
}
