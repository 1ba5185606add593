// Command backupfs shows backups as ordinary files: it mounts Bupstash
// repositories and Backupy blob stores as a read-only FUSE filesystem, and
// offers the same readers as plain commands (list, ls, cat) where FUSE is
// not available.
//
// The command line is built with cobra (cli.go): help, usage, shell
// completion and the man page all come from the same command and flag
// definitions. Exit statuses are in exitcode.go, the one log format in
// log.go.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// env is what a command may touch, so that tests can run commands in
// process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// log takes the readers' warnings and the mount's notices, in the one
	// format of log.go; the global --quiet/--verbose set its level.
	log *slog.Logger
	// level is the log's level, which --quiet, --verbose and mount's
	// --debug set; nil when a test builds an env with a fixed logger.
	level *slog.LevelVar
	// out is the log's output (nil when a test builds an env with a
	// fixed logger): lines held back while a command runs, the status
	// line of progress.go.
	out *logOutput
	// args are the command line's arguments, which a mount going to the
	// background starts itself again with.
	args []string
	// progressMode is --progress.
	progressMode progressMode
	// daemon is set in a mount serving in the background (daemon.go).
	daemon *daemonChild
	// stopProfiling stops what BACKUPFS_PPROF and BACKUPFS_CPUPROFILE
	// started, before a mount starts its daemon (which starts its own).
	stopProfiling func()
	// exit are run when the command is over (atExit).
	exit []func()
}

// atExit runs f when the command is over, last registered first: what
// must not outlive it (a remote repository's server processes).
func (e *env) atExit(f func()) { e.exit = append(e.exit, f) }

func (e *env) runAtExit() {
	for i := len(e.exit) - 1; i >= 0; i-- {
		e.exit[i]()
	}
	e.exit = nil
}

// warn prints one notice line on stderr.
func (e *env) warn(format string, args ...any) {
	e.log.Warn(fmt.Sprintf(format, args...))
}

func main() {
	daemon := daemonFromEnv()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runAs(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv, daemon)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status. Every failure
// becomes one line on stderr; a panic is reported the same way rather than
// as a trace.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (code int) {
	return runAs(ctx, args, stdout, stderr, getenv, nil)
}

// runAs is run, in a mount's daemon when daemon is set.
func runAs(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, daemon *daemonChild) (code int) {
	out := newLogOutput(stderr, getenv)
	if daemon != nil && daemon.kind == logJournal {
		// Standard error is the pipe to the command that waits, whose own
		// is the journal.
		out.journal = true
	}
	e := &env{
		stdout:       stdout,
		stderr:       stderr,
		getenv:       getenv,
		log:          slog.New(newLogHandler(out, &out.level)),
		level:        &out.level,
		out:          out,
		args:         args,
		progressMode: progressAuto,
		daemon:       daemon,
	}
	defer func() {
		if r := recover(); r != nil {
			out.discard()
			out.line(slog.LevelError, fmt.Sprintf("backupfs: internal error: %v", r))
			code = exitFatal
		}
	}()
	// Profiling for any command, from the environment: BACKUPFS_PPROF=ADDR
	// serves net/http/pprof, BACKUPFS_CPUPROFILE=FILE records a CPU profile.
	stopProfiling, err := startProfiling(getenv("BACKUPFS_PPROF"), getenv("BACKUPFS_CPUPROFILE"), e.log)
	e.stopProfiling = stopProfiling
	defer func() { e.stopProfiling() }()
	if err != nil {
		out.line(slog.LevelError, fmt.Sprintf("backupfs: %v", err))
		return exitFatal
	}
	root := newRootCommand(e, out)
	root.SetArgs(mountHelperArgs(root, goStyleArgs(args)))
	cmd, err := root.ExecuteContextC(ctx)
	e.runAtExit()
	out.clearStatus()
	if err == nil {
		// A command that succeeded says what it warned about.
		out.release()
		return exitOK
	}
	// One that failed says only why.
	out.discard()
	code = exitCode(err)
	if ctx.Err() != nil && code != exitUsage && !isSilent(err) {
		// Whatever failed failed because of SIGINT or SIGTERM (a key
		// command killed by the terminal's Ctrl-C, say).
		code, err = exitInterrupted, ctx.Err()
	}
	if !isSilent(err) {
		out.line(slog.LevelError, errorLine(cmd, err, code))
	}
	return code
}
