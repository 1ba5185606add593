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
}

// warn prints one notice line on stderr.
func (e *env) warn(format string, args ...any) {
	e.log.Warn(fmt.Sprintf(format, args...))
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
	out := newLogOutput(stderr, getenv)
	e := &env{
		stdout: stdout,
		stderr: stderr,
		getenv: getenv,
		log:    slog.New(newLogHandler(out, &out.level)),
		level:  &out.level,
	}
	defer func() {
		if r := recover(); r != nil {
			out.line(slog.LevelError, fmt.Sprintf("backupfs: internal error: %v", r))
			code = exitFatal
		}
	}()
	// Profiling for any command, from the environment: BACKUPFS_PPROF=ADDR
	// serves net/http/pprof, BACKUPFS_CPUPROFILE=FILE records a CPU profile.
	stopProfiling, err := startProfiling(getenv("BACKUPFS_PPROF"), getenv("BACKUPFS_CPUPROFILE"), e.log)
	defer stopProfiling()
	if err != nil {
		out.line(slog.LevelError, fmt.Sprintf("backupfs: %v", err))
		return exitFatal
	}
	root := newRootCommand(e, out)
	root.SetArgs(goStyleArgs(args))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code = exitCode(err)
	if !isSilent(err) {
		out.line(slog.LevelError, errorLine(cmd, err, code))
	}
	return code
}
