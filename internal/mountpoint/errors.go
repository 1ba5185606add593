package mountpoint

import "errors"

// ErrNotEmpty reports a mountpoint with files in it, which the mount would
// hide (Prepare, unless told to allow it).
var ErrNotEmpty = errors.New("mountpoint is not empty")
