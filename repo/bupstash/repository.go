package bupstash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
)

// DefaultCacheSize is the chunk cache size used when Options.Cache is nil.
const DefaultCacheSize = 256 << 20

// Errors reported by Open and by readers. Callers test them with errors.Is.
var (
	ErrNotRepository = errors.New("not a bupstash repository")
	// ErrRemote reports a repository reached over ssh (bupstash serve).
	ErrRemote            = errors.New("remote repositories (ssh://) are not supported yet; use a local or network-mounted repository directory")
	ErrUnsupportedSchema = errors.New("unsupported repository schema")
	ErrUnsupportedStore  = errors.New("unsupported storage engine")
	ErrPutOnlyKey        = errors.New("put-only key: it can neither list nor read items")
	ErrKeyCannotList     = errors.New("this key cannot decrypt item metadata")
	// ErrCannotListContents means the key may list items but not their file
	// trees (a list-only sub key).
	ErrCannotListContents = errors.New("this key cannot read item contents (list-only key)")
	// ErrCannotReadData means the key may see file trees but not file data
	// (a list-contents sub key); only primary keys decrypt data.
	ErrCannotReadData = errors.New("this key cannot decrypt file data (only primary keys can)")
	// ErrOtherKey means an item was made under another primary key.
	ErrOtherKey = errors.New("item belongs to another primary key")
)

// Options configure Open.
type Options struct {
	// Cache holds decoded chunks; several repositories may share one. Nil
	// means a private cache of DefaultCacheSize bytes.
	Cache *cache.ChunkCache
	// Logger receives warnings (skipped items, lock problems). Nil means
	// slog.Default().
	Logger *slog.Logger
	// NoLock skips the shared metadata lock, for media that cannot lock.
	NoLock bool
}

// Repository is an open Bupstash repository. It is safe for concurrent use.
type Repository struct {
	dir    string
	schema int
	key    *Key
	log    *slog.Logger
	cache  *cache.ChunkCache
	store  chunkStore
	noLock bool

	metaOpener, idxOpener, dataOpener *box.Opener

	nodeSpace uint64 // cache space of interior nodes (unkeyed, shared by all items)

	mu       sync.Mutex
	spaces   map[[32]byte]uint64 // leaf hash key → cache space
	items    map[Xid]*Item       // decoded metadata of item files seen so far
	foreign  map[Xid]Xid         // items made under another primary key → that key's id
	reported map[Xid]bool        // items already reported as skipped
}

// Open opens the repository in dir for reading with key. It never writes to
// the repository, never migrates it, and refuses what it cannot read with a
// message saying what to do.
func Open(ctx context.Context, dir string, key *Key, opts Options) (*Repository, error) {
	if key == nil {
		return nil, ErrNoKey
	}
	if !key.CanListItems() {
		return nil, fmt.Errorf("%s: %w", dir, ErrPutOnlyKey)
	}
	if strings.HasPrefix(dir, "ssh://") {
		return nil, fmt.Errorf("%s: %w", dir, ErrRemote)
	}
	if err := checkLayout(dir); err != nil {
		return nil, err
	}
	schema, err := readSchema(dir)
	if err != nil {
		return nil, err
	}
	if err := checkStorageEngine(dir); err != nil {
		return nil, err
	}
	r := &Repository{
		dir:        dir,
		schema:     schema,
		key:        key,
		log:        opts.Logger,
		cache:      opts.Cache,
		store:      dirStore{dir: filepath.Join(dir, "data")},
		noLock:     opts.NoLock,
		metaOpener: key.metadataOpener(),
		nodeSpace:  cache.NewSpace(),
		spaces:     make(map[[32]byte]uint64),
		items:      make(map[Xid]*Item),
		foreign:    make(map[Xid]Xid),
		reported:   make(map[Xid]bool),
	}
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

// repositoryLayout says what a repository looks like, for messages about
// directories that are not one.
const repositoryLayout = "a repository is a directory holding tx.lock, meta/schema_version, items/ and data/, as `bupstash init` makes it"

// checkLayout tells a repository from other directories by the files
// Bupstash itself checks for: tx.lock (§2.1) and the schema version.
func checkLayout(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("repository %w", err) // "repository stat DIR: no such file or directory"
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: %w: not a directory", dir, ErrNotRepository)
	}
	for _, name := range []string{"tx.lock", "meta/schema_version"} {
		_, err := os.Stat(filepath.Join(dir, name))
		switch {
		case err == nil:
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s: %w", dir, err)
		}
		if _, serr := os.Stat(filepath.Join(dir, "bupstash.sqlite3")); serr == nil {
			return fmt.Errorf("%s: %w: this repository is from bupstash 0.8 or older; open it once with bupstash 0.10.x to migrate it, then try again", dir, ErrUnsupportedSchema)
		}
		return fmt.Errorf("%s: %w: it has no %s (%s)", dir, ErrNotRepository, name, repositoryLayout)
	}
	return nil
}

func readSchema(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta", "schema_version"))
	if err != nil {
		return 0, fmt.Errorf("%s: reading schema version: %w", dir, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w: meta/schema_version is %q", dir, ErrUnsupportedSchema, b)
	}
	switch {
	case v <= 4:
		return 0, fmt.Errorf("%s: %w %d (bupstash 0.8 or older); open it once with bupstash 0.10.x to migrate it, then try again", dir, ErrUnsupportedSchema, v)
	case v > 8:
		return 0, fmt.Errorf("%s: %w %d: made by a bupstash newer than 0.12; backupfs reads schemas 5 to 8", dir, ErrUnsupportedSchema, v)
	}
	return v, nil
}

func checkStorageEngine(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "meta", "storage_engine"))
	if err != nil {
		return fmt.Errorf("%s: reading storage engine: %w", dir, err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("%s: %w: meta/storage_engine is not JSON: %w", dir, ErrUnsupportedStore, err)
	}
	switch v := v.(type) {
	case string:
		if v == "DirStore" {
			return nil
		}
		return fmt.Errorf("%s: %w %q", dir, ErrUnsupportedStore, v)
	case map[string]any:
		for name := range v {
			if name == "ExternalStore" {
				return fmt.Errorf("%s: %w: chunks live in an external storage plugin; backupfs reads only repositories that keep chunks in data/", dir, ErrUnsupportedStore)
			}
			return fmt.Errorf("%s: %w %q", dir, ErrUnsupportedStore, name)
		}
	}
	return fmt.Errorf("%s: %w: %s", dir, ErrUnsupportedStore, b)
}

// Dir returns the repository's directory.
func (r *Repository) Dir() string { return r.dir }

// Schema returns the repository's schema version (5 to 8).
func (r *Repository) Schema() int { return r.schema }

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
