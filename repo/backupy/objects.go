package backupy

import (
	"context"
	"io"
	"time"
)

// ObjectStore is where a Store's objects come from: a local directory of
// downloaded objects (LocalDir) or a bucket prefix of an object store.
// Keys are slash-separated and relative to the store; a directory is a
// key prefix without its trailing slash, "" being the store's root.
//
// Error contract, for every method: ErrNotFound (wrapped) when what was
// asked for does not exist (any more), ErrChanged (wrapped) when an object
// is now another version than the one named, the context's error when it
// ended, and any other error for a store that cannot be reached or read
// (the caller reports it and may retry later). Implementations must be
// safe for concurrent use.
type ObjectStore interface {
	// Name identifies the store in logs and in the cache's size index: an
	// absolute directory, or a URL such as s3://bucket/prefix.
	Name() string
	// List returns one level of the store: the objects directly in dir
	// and the names of its subdirectories, in no particular order.
	List(ctx context.Context, dir string) (Listing, error)
	// Open opens the version of an object that List described, for
	// reads. Reads of an Object never return bytes of another version.
	Open(ctx context.Context, obj ObjectInfo) (Object, error)
}

// ObjectInfo describes one version of an object, as listed.
type ObjectInfo struct {
	Key     string    // slash-separated, relative to the store
	Size    int64     // bytes
	ModTime time.Time // last modification (for S3: the upload's end)
	// ETag names the version where the store has such a thing; "" for
	// local files, whose version is their size and modification time.
	ETag string
}

// sameVersion reports whether o and p describe the same object version.
func (o ObjectInfo) sameVersion(p ObjectInfo) bool {
	if o.Size != p.Size || o.ETag != p.ETag {
		return false
	}
	return o.ETag != "" || o.ModTime.Equal(p.ModTime)
}

// Listing is one directory level of an ObjectStore.
type Listing struct {
	Objects []ObjectInfo
	Dirs    []string // subdirectory names, without slashes
}

// Object is an open object version, read at any offset. ReadAt follows
// io.ReaderAt (fewer than len(p) bytes only with an error, io.EOF at the
// end) and may be called concurrently.
type Object interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Close() error
}

// ReadTuning is implemented by object stores whose reads cost a round
// trip each: a Store then reads ahead when it goes through an object from
// start to end (a decode pass, a hash), Block bytes per read and InFlight
// reads at a time, and sizes block reads to whole frames.
type ReadTuning interface {
	ReadTuning() (block int64, inFlight int)
}

// objectReaderAt adapts an Object to io.ReaderAt for code that takes one
// (the frame layout scan).
type objectReaderAt struct {
	ctx context.Context
	obj Object
}

func (r objectReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.obj.ReadAt(r.ctx, p, off) }

var _ io.ReaderAt = objectReaderAt{}
