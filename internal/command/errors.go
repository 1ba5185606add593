package command

import (
	"errors"
	"fmt"
	"strings"
)

// Errors, wrapped in an *Error naming the command.
var (
	// ErrEmpty reports a command line with no words.
	ErrEmpty = errors.New("empty command")
	// ErrTooMuchOutput reports a command that printed more than its limit.
	ErrTooMuchOutput = errors.New("printed too much")
	// ErrTimedOut reports a command that did not finish in time.
	ErrTimedOut = errors.New("did not finish in time")
	// ErrFailed reports a command that ran and failed (exit status, or a
	// signal).
	ErrFailed = errors.New("failed")
)

// Error reports a command that could not be run, failed, or was ended.
type Error struct {
	Name    string // what the command is (Options.Name)
	Program string // the program run, without its arguments (which may hold secrets)
	Err     error
	Stderr  string // the end of what it wrote to stderr, on one line
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Name)
	if e.Name != "" && e.Program != "" {
		b.WriteByte(' ')
	}
	if e.Program != "" {
		fmt.Fprintf(&b, "(%s)", e.Program)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	if e.Stderr != "" {
		fmt.Fprintf(&b, ": %s", e.Stderr)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }
