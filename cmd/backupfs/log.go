package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every command logs in one format, one line per record:
//
//	[TIME ]backupfs: [warning: |error: ]message: err (key value, …)
//
// without the key=value syntax of a machine log. Long-running commands
// (mount) put a timestamp first, except when standard error is the
// systemd journal, which has its own: there each line starts with the
// journal's priority prefix (<3> error, <4> warning, <6> info, <7> debug)
// instead, so that journalctl -p works. A mount serving in the background
// with no journal and no --log-file logs to syslog (/dev/log), each line a
// datagram with the daemon facility's priority. The final error of a
// failed command is a line of the same output.
//
// A command prints one line when it fails, and only its warnings when it
// succeeds: what was logged while a command runs (or while a mount
// starts) is held back, printed when it succeeds (is mounted), dropped
// when it fails, the error line saying what went wrong. --verbose holds
// nothing back.
//
// On a terminal, the last line may be a status line (progress.go): drawn
// over with carriage returns, and erased before any log line is written.

// logOutput is standard error as the log sees it.
type logOutput struct {
	w  io.Writer
	mu sync.Mutex
	// journal is set when standard error is the systemd journal.
	journal bool
	// stamp puts a timestamp first (never with journal).
	stamp bool
	// syslog writes each line as a syslog datagram (never with journal or
	// stamp).
	syslog bool
	// level is the least level logged; --quiet and --verbose move it.
	level slog.LevelVar

	// holding keeps lines in held instead of writing them.
	holding bool
	held    []string
	dropped int // lines beyond maxHeld
	// status is the status line shown, "" for none.
	status string
}

// maxHeld bounds the lines held back; what is beyond is counted.
const maxHeld = 64

func newLogOutput(w io.Writer, getenv func(string) string) *logOutput {
	o := &logOutput{w: w, journal: isJournal(w, getenv("JOURNAL_STREAM"))}
	o.level.Set(slog.LevelWarn)
	return o
}

// isJournal reports whether w is the journal's stream: systemd sets
// JOURNAL_STREAM to the device and inode of the stream it connects
// standard error to, so that a process can tell that it writes to the
// journal and not to a file or terminal it was redirected to.
func isJournal(w io.Writer, journalStream string) bool {
	f, ok := w.(*os.File)
	if !ok || journalStream == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return journalStream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// line writes one line of text at level, with the prefix the output
// wants. Line breaks inside text are escaped.
func (o *logOutput) line(level slog.Level, text string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	switch {
	case o.journal:
		fmt.Fprintf(&b, "<%d>", journalPriority(level))
	case o.syslog:
		fmt.Fprintf(&b, "<%d>", syslogDaemon+journalPriority(level))
	case o.stamp:
		b.WriteString(time.Now().Format("2006-01-02T15:04:05.000Z07:00 "))
	}
	b.WriteString(oneLine(text))
	b.WriteByte('\n')
	if o.holding {
		if len(o.held) < maxHeld {
			o.held = append(o.held, b.String())
		} else {
			o.dropped++
		}
		return nil
	}
	return o.writeLocked(b.String())
}

// syslogDaemon is the daemon facility (3) as a syslog priority's high
// bits.
const syslogDaemon = 3 << 3

// writeLocked writes whole lines, erasing the status line first.
func (o *logOutput) writeLocked(lines string) error {
	if o.status != "" {
		lines = clearLine + lines
		o.status = ""
	}
	_, err := io.WriteString(o.w, lines)
	return err
}

// raw writes lines formatted elsewhere (a background mount's, relayed).
func (o *logOutput) raw(lines string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writeLocked(lines)
}

// hold starts holding lines back.
func (o *logOutput) hold() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holding = true
}

// release writes the lines held back, and stops holding.
func (o *logOutput) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	lines := strings.Join(o.held, "")
	if o.dropped > 0 {
		lines += fmt.Sprintf("backupfs: warning: %d more warnings were not shown\n", o.dropped)
	}
	o.holding, o.held, o.dropped = false, nil, 0
	if lines != "" {
		_ = o.writeLocked(lines)
	}
}

// discard drops the lines held back, and stops holding.
func (o *logOutput) discard() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holding, o.held, o.dropped = false, nil, 0
}

// clearLine returns to the start of the line and erases it.
const clearLine = "\r\x1b[K"

// showStatus draws text as the status line, over the last one.
func (o *logOutput) showStatus(text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if text == o.status {
		return
	}
	_, _ = io.WriteString(o.w, clearLine+text)
	o.status = text
}

// clearStatus erases the status line, if one is shown.
func (o *logOutput) clearStatus() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status != "" {
		_, _ = io.WriteString(o.w, clearLine)
		o.status = ""
	}
}

// journalPriority maps a level to syslog's priorities, as sd-daemon(3)'s
// prefixes use them.
func journalPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// oneLine keeps a message on one line, escaping line breaks.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

// lineHandler is the slog.Handler of the one format.
type lineHandler struct {
	out   *logOutput
	level slog.Leveler
	attrs []slog.Attr
	group string
}

func newLogHandler(out *logOutput, level slog.Leveler) *lineHandler {
	return &lineHandler{out: out, level: level}
}

// newLineHandler is a handler writing to w at a fixed level, with neither
// timestamps nor journal prefixes.
func newLineHandler(w io.Writer, level slog.Level) *lineHandler {
	return newLogHandler(&logOutput{w: w}, level)
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("backupfs: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	var errText string
	var rest []string
	add := func(a slog.Attr, group string) {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			return
		}
		if a.Key == "err" && group == "" && errText == "" {
			errText = a.Value.String()
			return
		}
		if group != "" {
			a.Key = group + "." + a.Key
		}
		rest = append(rest, a.Key+" "+a.Value.String())
	}
	for _, a := range h.attrs {
		add(a, "") // qualified when added
	}
	r.Attrs(func(a slog.Attr) bool { add(a, h.group); return true })
	if errText != "" {
		b.WriteString(": " + errText)
	}
	if len(rest) > 0 {
		b.WriteString(" (" + strings.Join(rest, ", ") + ")")
	}
	return h.out.line(r.Level, b.String())
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
