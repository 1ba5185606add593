// Command backupfs shows backups as ordinary files: it mounts Bupstash
// repositories and Backupy blob stores as a read-only FUSE filesystem, and
// offers the same readers as plain commands (list, ls, cat) where FUSE is
// not available.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: backupfs <command> [flags] [arguments]

Commands:
  mount   mount repositories and blob stores as a read-only filesystem
  list    list the items of a Bupstash repository
  ls      list the files of an item, like ls -l
  cat     write an item's data, or a file inside it, to standard output
  backupy read Backupy blob stores without mounting (ls, cat, import-token)
  version print the version

Run 'backupfs <command> -h' for a command's flags. The repository and key
default to $BUPSTASH_REPOSITORY and $BUPSTASH_KEY (or $BUPSTASH_KEY_COMMAND).
`

// errUsage marks errors in how the command was called (exit status 2).
var errUsage = errors.New("usage")

type command struct {
	run func(ctx context.Context, env *env, args []string) error
}

var commands = map[string]command{
	"mount": {runMount},
	"list":  {runList},
	"backupy": {func(ctx context.Context, e *env, args []string) error {
		return runBackupy(ctx, args, e.stdout, e.stderr)
	}},
	"ls":  {runLs},
	"cat": {runCat},
	"version": {func(_ context.Context, e *env, _ []string) error {
		fmt.Fprintln(e.stdout, "backupfs", version)
		return nil
	}},
}

// env is what a command may touch, so that tests can run commands in
// process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// log takes the readers' warnings. The short commands print each as
	// one plain line (see lineHandler); mount replaces it with slog text,
	// for a long-running process whose log is kept.
	log *slog.Logger
}

// warn prints one notice line on stderr.
func (e *env) warn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "backupfs: warning: %s\n", oneLine(fmt.Sprintf(format, args...)))
}

// oneLine keeps a message on one line, escaping line breaks.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

// lineHandler writes log records as the short commands' notices: one line
// each, "backupfs: warning: message: err (key value, …)", without the
// timestamps and key=value syntax a kept log needs.
type lineHandler struct {
	w     io.Writer
	mu    *sync.Mutex
	level slog.Level
	attrs []slog.Attr
	group string
}

func newLineHandler(w io.Writer, level slog.Level) *lineHandler {
	return &lineHandler{w: w, mu: new(sync.Mutex), level: level}
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

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
	line := oneLine(b.String()) + "\n"
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line)
	return err
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status. Every failure
// becomes one line on stderr; a panic is reported the same way rather than
// as a trace.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (code int) {
	e := &env{
		stdout: stdout,
		stderr: stderr,
		getenv: getenv,
		log:    slog.New(newLineHandler(stderr, slog.LevelWarn)),
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "backupfs: internal error: %v\n", r)
			code = 1
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "backupfs: unknown command %q (run 'backupfs help' for the list)\n", args[0])
		return 2
	}
	// Profiling for any command, from the environment: BACKUPFS_PPROF=ADDR
	// serves net/http/pprof, BACKUPFS_CPUPROFILE=FILE records a CPU profile.
	stopProfiling, err := startProfiling(getenv("BACKUPFS_PPROF"), getenv("BACKUPFS_CPUPROFILE"), e.log)
	defer stopProfiling()
	if err != nil {
		fmt.Fprintf(stderr, "backupfs: %v\n", err)
		return 1
	}
	err = cmd.run(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "backupfs %s: %v\n", args[0], strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "backupfs: interrupted")
		return 130
	default:
		fmt.Fprintf(stderr, "backupfs %s: %v\n", args[0], err)
		return 1
	}
}

// parseInterleaved parses flags that may appear before, between or after
// positional arguments, which the flag package alone does not allow. A bad
// flag is one line of error, not the usage text (which -h prints).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v (-h for help)", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// newFlagSet returns a flag set whose -h prints usage text to stderr.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: backupfs %s %s\n\nFlags:\n", name, synopsis)
		fs.SetOutput(e.stderr)
		fs.PrintDefaults()
	}
	return fs
}

// helpRequested reports -h/--help, which parseInterleaved hands back as
// flag.ErrHelp after the flag set has printed nothing (output discarded).
func helpRequested(fs *flag.FlagSet, err error) error {
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
	}
	return err
}
