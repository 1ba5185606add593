package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/internal/untrusted"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/cobra"
)

// Exit statuses, as restic numbers its own where they mean the same, so
// that scripts can tell what went wrong without reading the message.
const (
	exitOK    = 0
	exitFatal = 1 // any other failure
	exitUsage = 2 // a wrong command line, or nothing to do
	// exitDamaged: the repository's data is damaged or missing (a chunk, an
	// item's metadata, a Backupy frame): what could be read was written,
	// the rest failed its checks. With the right primary key, a failed
	// authentication is damage: keys of other repositories are told apart
	// by their ids before anything is decrypted. So is a file of the
	// repository that is refused unread (a FIFO, a device or a directory
	// where an item's metadata or the schema should be, or a file far
	// larger than its kind can be): it is not what Bupstash wrote.
	exitDamaged = 3
	// exitNoRepository: no repository or store where the command was
	// pointed (no such directory, or not a Bupstash repository).
	exitNoRepository = 10
	// exitLocked: a writer (bupstash gc, put, rm) held the repository's
	// lock for longer than --lock-wait.
	exitLocked = 11
	// exitWrongKey: the key does not open what was asked: another
	// primary key's items, a sub-key without the rights the command needs
	// (put-only, list-only), or no key for an encrypted Backupy object.
	exitWrongKey = 12
	// exitInterrupted: SIGINT or SIGTERM ended the command (128 + SIGINT,
	// as shells report it).
	exitInterrupted = 130
)

// exitStatusHelp documents the statuses, in the root command's help and
// so in the man page.
const exitStatusHelp = `Exit status:

    0    success
    1    failure of any other kind
    2    wrong command line (unknown command or flag, missing argument)
    3    damaged or missing data (a chunk, an item, a Backupy frame)
    10   no repository or store at the location given
    11   the repository stayed locked by a writer (bupstash gc) for --lock-wait
    12   wrong key: another repository's, or a sub-key without the rights needed
    130  interrupted (SIGINT, SIGTERM)

diff answers as diff(1) does: 0 when the trees are the same, 1 when they
differ, 2 on trouble of any kind not listed above.`

// usageError is a command-line mistake, said in one line.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// answer is an exit status that answers the command rather than reports
// a failure (diff's 1: the trees differ): nothing is printed for it.
type answer int

func (a answer) Error() string { return fmt.Sprintf("exit status %d", int(a)) }

// isSilent reports an error that needs no line of its own: its
// explanation is printed already (the usage text, a background mount's
// line), or it is an answer.
func isSilent(err error) bool {
	var a answer
	return errors.Is(err, errUsageShown) || errors.Is(err, errReported) || errors.As(err, &a)
}

// codedError gives an error the exit status its origin implies, where the
// error alone cannot say (a missing directory is a missing repository only
// where a repository was opened).
type codedError struct {
	code int
	err  error
}

func (c *codedError) Error() string { return c.err.Error() }
func (c *codedError) Unwrap() error { return c.err }

// withCode marks err with an exit status; nil stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// repositoryError marks a failure to open a repository or store at a
// location: when there is none there, exit status 10.
func repositoryError(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, bupstash.ErrNotRepository) || errors.Is(err, location.ErrEmpty) {
		return withCode(exitNoRepository, err)
	}
	return err
}

// bupstashOpenError is repositoryError for a Bupstash repository, whose
// files refused unread (meta/, tx.wal) are damage.
func bupstashOpenError(err error) error {
	if refusedUnread(err) {
		return withCode(exitDamaged, err)
	}
	return repositoryError(err)
}

// refusedUnread reports a file refused before it was read (internal/
// untrusted): not a regular file, or too large for its kind.
func refusedUnread(err error) bool {
	return errors.Is(err, untrusted.ErrNotRegular) || errors.Is(err, untrusted.ErrTooLarge) || errors.Is(err, untrusted.ErrNotDir)
}

// exitCode is the exit status of a command that failed with err.
func exitCode(err error) int {
	var coded *codedError
	var a answer
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &a):
		return int(a)
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &coded):
		return coded.code
	case errors.Is(err, bupstash.ErrLocked):
		return exitLocked
	case errors.Is(err, bupstash.ErrOtherKey), errors.Is(err, bupstash.ErrPutOnlyKey),
		errors.Is(err, bupstash.ErrKeyCannotList), errors.Is(err, bupstash.ErrCannotListContents),
		errors.Is(err, bupstash.ErrCannotReadData), errors.Is(err, bupstash.ErrBadKey),
		errors.Is(err, backupy.ErrLocked):
		return exitWrongKey
	case errors.Is(err, bupstash.ErrCorrupt), errors.Is(err, bupstash.ErrChunkMissing),
		errors.Is(err, bupstash.ErrCompression), errors.Is(err, bupstash.ErrBadJournal),
		errors.Is(err, backupy.ErrCorrupt), errors.Is(err, box.ErrAuth):
		return exitDamaged
	case refusedUnread(err) && errors.As(err, new(*bupstash.ItemError)):
		// An item file that is no item file (a key or configuration file
		// refused the same way is the user's, not damage).
		return exitDamaged
	}
	return exitFatal
}

// errorLine is the one line a failed command prints: the command, and what
// went wrong; a usage mistake adds where help is.
func errorLine(cmd *cobra.Command, err error, code int) string {
	name := "backupfs"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	switch code {
	case exitInterrupted:
		return "backupfs: interrupted"
	case exitUsage:
		if !errors.Is(err, errUsage) {
			break // diff's trouble, which is not the command line's fault
		}
		msg := err.Error()
		if u := errUsage.Error() + ": "; len(msg) > len(u) && msg[:len(u)] == u {
			msg = msg[len(u):]
		}
		return fmt.Sprintf("%s: %s (see '%s --help')", name, msg, name)
	}
	return fmt.Sprintf("%s: %v", name, err)
}
