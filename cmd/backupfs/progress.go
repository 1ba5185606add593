package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Long work shows its progress on a status line of standard error (see
// logOutput): cat of a large item (bytes written, of how many, and how
// fast), a mount starting on a large repository (for how long). By
// default only on a terminal, and for cat only when its output is not
// that terminal too; --progress=always draws it wherever standard error
// goes (and at once), --progress=never nowhere.

// progressMode is --progress: auto, always or never.
type progressMode string

const (
	progressAuto   progressMode = "auto"
	progressAlways progressMode = "always"
	progressNever  progressMode = "never"
)

func (m *progressMode) String() string { return string(*m) }
func (m *progressMode) Type() string   { return "WHEN" }

func (m *progressMode) Set(s string) error {
	switch progressMode(s) {
	case progressAuto, progressAlways, progressNever:
		*m = progressMode(s)
		return nil
	}
	return fmt.Errorf("want auto, always or never, not %q", s)
}

// enabled reports whether progress is drawn on stderr, for work whose
// output goes to stdout (nil: no output).
func (m progressMode) enabled(stderr, stdout io.Writer) bool {
	switch m {
	case progressAlways:
		return true
	case progressNever:
		return false
	}
	return isTerminal(stderr) && (stdout == nil || !isTerminal(stdout))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

const (
	// progressDelay is how long work runs before its progress shows: a
	// quick command draws nothing.
	progressDelay = time.Second
	// progressEvery is how often the status line is redrawn.
	progressEvery = 250 * time.Millisecond
)

// progress draws one piece of work's status line until finished. A nil
// *progress draws nothing.
type progress struct {
	out   *logOutput
	what  string
	total int64 // bytes expected; < 0 when unknown
	bytes bool  // counts bytes; otherwise shows the time spent
	n     atomic.Int64
	start time.Time
	final bool // draw the final state before erasing it (--progress=always)
	stop  chan struct{}
	done  chan struct{}
}

// startProgress starts drawing the progress of what, if e's --progress
// and its outputs want it. total is the bytes expected (< 0: unknown, or
// no bytes are counted when countBytes is false); stdout is where the
// work's output goes (nil: none).
func (e *env) startProgress(what string, countBytes bool, total int64, stdout io.Writer) *progress {
	if e.out == nil || !e.progressMode.enabled(e.stderr, stdout) {
		return nil
	}
	if e.daemon != nil {
		// A background mount's standard error is the pipe to the command
		// that waits, which shows the progress itself.
		return nil
	}
	p := &progress{
		out: e.out, what: what, total: total, bytes: countBytes, start: time.Now(),
		final: e.progressMode == progressAlways,
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	delay := progressDelay
	if p.final {
		delay = 0
	}
	go p.run(delay)
	return p
}

func (p *progress) run(delay time.Duration) {
	defer close(p.done)
	first := time.NewTimer(delay)
	defer first.Stop()
	select {
	case <-first.C:
	case <-p.stop:
		return
	}
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		p.out.showStatus(p.text())
		select {
		case <-t.C:
		case <-p.stop:
			return
		}
	}
}

// add counts n more bytes done.
func (p *progress) add(n int) {
	if p != nil {
		p.n.Add(int64(n))
	}
}

// finish stops drawing and erases the status line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
	if p.final {
		p.out.showStatus(p.text())
	}
	p.out.clearStatus()
}

// text is the status line now.
func (p *progress) text() string {
	elapsed := time.Since(p.start)
	if !p.bytes {
		return fmt.Sprintf("backupfs: %s… %ds", p.what, int(elapsed.Seconds()))
	}
	n := p.n.Load()
	s := fmt.Sprintf("backupfs: %s: %s", p.what, humanBytes(uint64(n)))
	if p.total > 0 {
		s += fmt.Sprintf(" of %s (%d%%)", humanBytes(uint64(p.total)), n*100/p.total)
	}
	if secs := elapsed.Seconds(); secs > 0 {
		s += fmt.Sprintf(", %s/s", humanBytes(uint64(float64(n)/secs)))
	}
	return s
}

// writer returns w counting into p; w itself when p draws nothing.
func (p *progress) writer(w io.Writer) io.Writer {
	if p == nil {
		return w
	}
	return progressWriter{w, p}
}

// progressWriter counts what is written through it.
type progressWriter struct {
	w io.Writer
	p *progress
}

func (w progressWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.p.add(n)
	return n, err
}
