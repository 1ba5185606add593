package serve

import (
	"errors"
	"strings"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// Errors of this package. Callers test them with errors.Is; the text a
// user sees comes from the error wrapping them, which names the server's
// own words where it said any. Those that mean one of package bupstash's
// source errors are that error too (errors.Is(err,
// bupstash.ErrUnavailable) holds for a lost connection), so that readers
// of a Source need not know this package.
var (
	// ErrProtocol reports a response the protocol does not allow: a
	// wrong kind, a bad length, trailing bytes, an unexpected chunk.
	// The connection is ended.
	ErrProtocol = errors.New("protocol error")
	// ErrVersion reports a server speaking a protocol this package does
	// not know.
	ErrVersion = errors.New("unsupported bupstash serve protocol")
	// ErrPermission reports a request the server refuses for this client
	// (`bupstash serve --allow-…`): "server has disabled get for this
	// client" and the like.
	ErrPermission error = &subclass{"refused by the server", bupstash.ErrPermission}
	// ErrDisconnected reports a connection that ended: the server exited
	// (its stderr says why), ssh failed, or the connection was ended
	// after a stall. Retrying on a new connection may succeed.
	ErrDisconnected error = &subclass{"connection to the server lost", bupstash.ErrUnavailable}
	// ErrStalled reports a server that sent nothing for longer than the
	// stall timeout while an answer was due. It is an ErrDisconnected.
	ErrStalled error = &subclass{"server stalled (nothing received while an answer was due)", ErrDisconnected}
	// ErrClosed reports use of a connection after Close.
	ErrClosed = errors.New("connection closed")
	// ErrUnavailable reports a server that asked to be retried later
	// (an Abort with Bupstash's "server unavailable" code).
	ErrUnavailable error = &subclass{"server unavailable", bupstash.ErrUnavailable}
	// ErrNotFound reports an item or chunk the server does not have:
	// its stderr named a missing file, or it returned no metadata.
	ErrNotFound = errors.New("not found on the server")
	// ErrNoRepository reports a server that found no repository at the
	// path it was given.
	ErrNoRepository error = &subclass{"no repository there", bupstash.ErrNotRepository}
	// ErrNoPull reports a pull session asked of a server that has none
	// (protocol "11", Bupstash 0.10.x).
	ErrNoPull = errors.New("server has no pull sessions (bupstash 0.10.x)")
	// ErrBehindCursor reports a leaf requested behind a partial-data
	// cursor, which only moves forward.
	ErrBehindCursor = errors.New("leaf is behind the cursor")
)

// ServerError is the end of a connection: what the server (or ssh) last
// printed on stderr, which is the only place Bupstash reports errors, and
// how the process ended.
type ServerError struct {
	Line string // the last stderr line worth showing ("bupstash serve: …"), or ""
	Exit string // how the process ended ("exit status 1"), or ""
	Err  error  // the class: ErrDisconnected, ErrPermission, ErrNotFound, ErrStalled, ErrProtocol, …
}

func (e *ServerError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.Line != "" {
		b.WriteString(": ")
		b.WriteString(e.Line)
	} else if e.Exit != "" {
		b.WriteString(" (")
		b.WriteString(e.Exit)
		b.WriteString(")")
	}
	return b.String()
}

func (e *ServerError) Unwrap() error { return e.Err }

// classify maps the server's last stderr line to the error class it
// means. The texts are Bupstash's own (server.rs, repository.rs).
func classify(line string, fallback error) error {
	switch {
	case strings.Contains(line, "server has disabled"):
		return ErrPermission
	case strings.Contains(line, "protocol versions are incompatible"):
		return ErrVersion
	case strings.Contains(line, "unable to open repository"),
		strings.Contains(line, "is not an intialized repository"), // sic, in Bupstash
		strings.Contains(line, "is not an initialized repository"):
		return ErrNoRepository
	case strings.Contains(line, "No such file or directory"),
		strings.Contains(line, "missing item"),
		strings.Contains(line, "does not exist"):
		return ErrNotFound
	}
	return fallback
}

// subclass is a sentinel that is also another one.
type subclass struct {
	msg    string
	parent error
}

func (e *subclass) Error() string { return e.msg }
func (e *subclass) Unwrap() error { return e.parent }
