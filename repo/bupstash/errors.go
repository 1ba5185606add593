package bupstash

import (
	"errors"

	"github.com/backupfs/backupfs/internal/bupstashkey"
)

// Errors reported by this package, tested with errors.Is. Most come
// wrapped in context (the repository, the item, the file and chunk) or
// inside one of the error types: *ItemError, *ChunkError, *FileError,
// *OtherKeyError.
var (
	// Opening.
	ErrNotRepository     = errors.New("not a bupstash repository")
	ErrUnsupportedSchema = errors.New("unsupported repository schema")
	ErrUnsupportedStore  = errors.New("unsupported storage engine")
	// ErrRemote reports an ssh:// URL given where a directory is
	// expected: remote repositories are read through a server (package
	// serve, reached through package location).
	ErrRemote = errors.New("an ssh:// repository is not a directory: open it through its server (package location)")
	// ErrBadJournal reports a hot transaction log that cannot be parsed.
	ErrBadJournal = errors.New("unreadable transaction log; run `bupstash list` once to recover the repository")

	// Keys.
	// ErrNoKey reports a repository opened without a key.
	ErrNoKey = errors.New("no key given")
	// ErrBadKey reports a key file that cannot be parsed.
	ErrBadKey     = bupstashkey.ErrBadKey
	ErrPutOnlyKey = errors.New("put-only key: it can neither list nor read items")
	// ErrKeyCannotList means the key cannot decrypt item metadata.
	ErrKeyCannotList = errors.New("this key cannot decrypt item metadata")
	// ErrCannotListContents means the key may list items but not their file
	// trees (a list-only sub key).
	ErrCannotListContents = errors.New("this key cannot read item contents (list-only key)")
	// ErrCannotReadData means the key may see file trees but not file data
	// (a list-contents sub key); only primary keys decrypt data.
	ErrCannotReadData = errors.New("this key cannot decrypt file data (only primary keys can)")
	// ErrOtherKey means an item was made under another primary key.
	ErrOtherKey = errors.New("item belongs to another primary key")

	// Items and their contents.
	ErrNoItem        = errors.New("no such item")
	ErrAmbiguousItem = errors.New("item id prefix is ambiguous")
	// ErrNoIndex reports an attempt to read the file tree of a raw item.
	ErrNoIndex = errors.New("item has no file tree (raw data item)")
	// ErrTooLarge reports an index with more entries than a Tree can number.
	ErrTooLarge = errors.New("snapshot has too many entries")
	// ErrNoMoreData reports a SEEK_DATA past a sparse file's last data.
	ErrNoMoreData = errors.New("no data after this offset")
	// ErrNotRegular reports an attempt to read something other than a
	// regular file's content.
	ErrNotRegular = errors.New("not a regular file")

	// Damage: data that fails an integrity check (Bupstash's "corrupt or
	// tampered"), a payload that does not decompress as its footer says,
	// a chunk the source does not hold (one deleted by bupstash gc after
	// its item was removed, say).
	ErrCorrupt      = errors.New("corrupt or tampered data")
	ErrCompression  = errors.New("bad compressed payload")
	ErrChunkMissing = errors.New("chunk missing from the repository")

	// Sources.
	// ErrUnavailable reports a source that cannot be reached now (a
	// server down, a connection lost): a later attempt may succeed.
	ErrUnavailable = errors.New("repository unavailable")
	// ErrPermission reports a source that refuses an operation (a server
	// that does not allow this client to read data).
	ErrPermission = errors.New("not permitted by the repository's server")
	// ErrLocked means a writer (bupstash put, rm or gc) held a directory's
	// transaction lock for longer than DirOptions.LockWait.
	ErrLocked = errors.New("repository is locked by a writer (bupstash put, rm or gc)")
)
