package backupy

import (
	"errors"
	"fmt"
)

// Sentinel errors. The FUSE layer maps ErrLocked to ENOKEY (EACCES where
// ENOKEY does not exist), ErrCorrupt and other integrity failures to EIO,
// ErrChanged to ESTALE, and context cancellation to EINTR.
var (
	// ErrLocked means no known key opens the object.
	ErrLocked = errors.New("no key for this encrypted object")
	// ErrCorrupt means the object failed an integrity check. Errors
	// reporting it are *CorruptError values naming the object and the cause.
	ErrCorrupt = errors.New("object is corrupt")
	// ErrChanged means the object's size or time changed since it was
	// listed; Refresh picks up the new version.
	ErrChanged = errors.New("object changed on disk since it was listed")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("store is closed")
)

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
