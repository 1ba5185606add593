package bupstash

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
)

// DefaultCacheSize is the chunk cache size used when Options.Cache is nil.
const DefaultCacheSize = 256 << 20

// Options configure a Repository.
type Options struct {
	// Cache holds decoded chunks; several repositories may share one. Nil
	// means a private cache of DefaultCacheSize bytes.
	Cache *cache.ChunkCache
	// Logger receives warnings (skipped items, lock problems). Nil means
	// slog.Default().
	Logger *slog.Logger
	// NoLock skips the shared metadata lock of a directory (Open), for
	// media that cannot lock.
	NoLock bool
	// LockWait is DirOptions.LockWait for a directory (Open).
	LockWait time.Duration
}

// Repository is an open Bupstash repository: item metadata, file trees
// and data read from a Source with a key, verified, and decoded through a
// chunk cache. It is safe for concurrent use.
type Repository struct {
	src Source
	// prefetcher is src when it is far away (see ChunkPrefetcher), else nil.
	prefetcher ChunkPrefetcher
	key        *Key
	log        *slog.Logger
	cache      *cache.ChunkCache

	metaOpener, idxOpener, dataOpener *box.Opener

	nodeSpace uint64 // cache space of interior nodes (unkeyed, shared by all items)

	mu       sync.Mutex
	spaces   map[[32]byte]uint64 // leaf hash key → cache space
	items    map[Xid]*Item       // decoded metadata of the items seen so far
	foreign  map[Xid]Xid         // items made under another primary key → that key's id
	reported map[Xid]bool        // items already reported as skipped
	// hiddenReported holds the items whose indexes were reported to hide
	// entries (see entryrule.go).
	hiddenReported sync.Map
	token          string // the item set's token when last listed
}

// Open opens the repository in the directory dir for reading with key.
// It never writes to the repository, never migrates it, and refuses what
// it cannot read with a message saying what to do.
func Open(ctx context.Context, dir string, key *Key, opts Options) (*Repository, error) {
	if err := checkKey(dir, key); err != nil {
		return nil, err
	}
	src, err := OpenDir(dir, DirOptions{NoLock: opts.NoLock, LockWait: opts.LockWait, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	return New(src, key, opts)
}

func checkKey(where string, key *Key) error {
	if key == nil {
		return ErrNoKey
	}
	if !key.CanListItems() {
		return fmt.Errorf("%s: %w", where, ErrPutOnlyKey)
	}
	return nil
}

// New returns the repository src holds, read with key. It reads nothing
// yet; the Repository closes src when it is closed.
func New(src Source, key *Key, opts Options) (*Repository, error) {
	if err := checkKey(src.String(), key); err != nil {
		return nil, err
	}
	r := &Repository{
		src:        src,
		key:        key,
		log:        opts.Logger,
		cache:      opts.Cache,
		metaOpener: key.metadataOpener(),
		nodeSpace:  cache.NewSpace(),
		spaces:     make(map[[32]byte]uint64),
		items:      make(map[Xid]*Item),
		foreign:    make(map[Xid]Xid),
		reported:   make(map[Xid]bool),
	}
	r.prefetcher, _ = src.(ChunkPrefetcher)
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.cache == nil {
		r.cache = cache.New(DefaultCacheSize)
	}
	if key.CanListContents() {
		r.idxOpener = key.indexOpener()
	}
	if key.CanReadData() {
		r.dataOpener = key.dataOpener()
	}
	return r, nil
}

// String names the repository in messages: its directory or URL.
func (r *Repository) String() string { return r.src.String() }

// Source returns what the repository is read from.
func (r *Repository) Source() Source { return r.src }

// Close closes the repository's source.
func (r *Repository) Close() error { return r.src.Close() }

// Schema returns the schema version (5 to 8) of a repository in a
// directory, or 0 when the source does not tell (a server).
func (r *Repository) Schema() int {
	if d, ok := r.src.(*Dir); ok {
		return d.Schema()
	}
	return 0
}

// Key returns the key the repository was opened with.
func (r *Repository) Key() *Key { return r.key }

// Cache returns the chunk cache the repository reads through.
func (r *Repository) Cache() *cache.ChunkCache { return r.cache }

// Logger returns the repository's logger.
func (r *Repository) Logger() *slog.Logger { return r.log }

// leafSpace returns the cache space for leaves verified under hashKey, so
// that a chunk verified under one hash key is never served to a reader
// expecting another.
func (r *Repository) leafSpace(hashKey [32]byte) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.spaces[hashKey]
	if !ok {
		s = cache.NewSpace()
		r.spaces[hashKey] = s
	}
	return s
}
