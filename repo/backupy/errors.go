package backupy

import (
	"errors"
	"fmt"
)

// Sentinel errors. The FUSE layer maps ErrLocked to ENOKEY (EACCES where
// ENOKEY does not exist), ErrCorrupt, ErrReplaced and other integrity
// failures to EIO, ErrChanged to ESTALE, and context cancellation to EINTR.
var (
	// ErrLocked means no known key opens the object.
	ErrLocked = errors.New("no key for this encrypted object")
	// ErrCorrupt means the object failed an integrity check. Errors
	// reporting it are *CorruptError values naming the object and the cause.
	ErrCorrupt = errors.New("object is corrupt")
	// ErrChanged means the object was changed or removed since it was
	// listed; Refresh (or the next listing) picks up the new version.
	ErrChanged = errors.New("object changed on disk since it was listed")
	// ErrReplaced means the object was replaced while a pass was reading
	// it from start to end: what the pass read so far is discarded rather
	// than mixed with the new version's bytes.
	ErrReplaced = errors.New("object was replaced while it was being read")
	// ErrNotFound is what an ObjectStore returns for an object or
	// directory that does not exist.
	ErrNotFound = errors.New("no such object")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("store is closed")
	// ErrToken is wrapped by every error about a malformed or unusable
	// decryption token.
	ErrToken = errors.New("invalid decryption token")
	// ErrKeyring is wrapped by every keyring syntax error.
	ErrKeyring = errors.New("invalid keyring")
)

// Integrity failures found by a full pass that are not frame errors.
var (
	errZstd         = errors.New("zstd stream does not decode")
	errHashMismatch = errors.New("ciphertext SHA-256 mismatch (the object is not the one the server recorded)")
)

// errCacheFull means a decode found the cache's disk full with nothing
// left to evict.
var errCacheFull = errors.New("the cache directory's disk is full and holds nothing more to evict; give --backupy-cache-dir a disk with room for the decoded dump")

// errLockBusy means another process owns the cache directory.
var errLockBusy = errors.New("cache directory locked by another process")

// CorruptError reports an integrity failure of one object. It matches
// ErrCorrupt with errors.Is and unwraps to the cause, typically a
// *gcmframe.FrameError naming the frame and its ciphertext offset.
type CorruptError struct {
	Object string // object key
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("backupy: %s: corrupt: %v", e.Object, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
