package backupy

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/backupfs/backupfs/cache"
)

// Views selects the optional files shown for an object.
type Views uint8

// View flags. The main view is always shown.
const (
	ViewZst  Views = 1 << iota // <base>.<ext>.zst: the decrypted zstd stream
	ViewMeta                   // <base>.meta.json: what is known about the object

	// DefaultViews is what a zero Options.Views means: the main file only
	// (docs/backupy-format.md §5.3).
	DefaultViews Views = 0
	// AllViews shows every view.
	AllViews = ViewZst | ViewMeta
)

// Options configure a Store. The zero value works.
type Options struct {
	// Logger receives warnings (token problems, corrupt objects). Nil
	// discards them.
	Logger *slog.Logger
	// Keys opens encrypted objects. Nil leaves every encrypted object
	// locked.
	Keys *Keyring
	// Chunks holds decrypted frames. Pass the mount's shared cache so that
	// all repositories share one memory budget; nil gives the store a
	// private 64 MiB cache.
	Chunks *cache.ChunkCache
	// CacheDir holds decoded dumps and the size index. Empty means
	// $XDG_CACHE_HOME/backupfs/backupy, or ~/.cache/backupfs/backupy.
	CacheDir string
	// CacheMaxBytes bounds the decoded files kept in CacheDir. Files of
	// objects with open handles are never evicted, so the bound can be
	// exceeded while they are in use. Zero means 10 GiB.
	CacheMaxBytes int64
	// Views adds optional views; see DefaultViews.
	Views Views
	// HideForeign hides objects that are not Backupy objects; otherwise
	// they are shown byte for byte under their own names.
	HideForeign bool
	// KeysGiven says the keys were given for these very objects, as when
	// a user names one object and its token (backupfs backupy cat): every
	// key is then bound to every object, like a token to the file
	// backupy-decrypt is given, so a key that does not open frame 0 means
	// a damaged object rather than a locked one, and the key's hash is
	// checked. Without it, keys no selector picks are only tried.
	KeysGiven bool
	// StreamWindow is how far behind its newest byte a streaming handle
	// still serves reads, to absorb out-of-order kernel readahead. Zero
	// means 16 MiB.
	StreamWindow int
}

const (
	defaultChunkCache   = 64 << 20
	defaultCacheMax     = 10 << 30
	defaultStreamWindow = 16 << 20
)

// Store is a directory of Backupy objects, listed recursively. It is safe
// for concurrent use.
type Store struct {
	root   string // absolute, cleaned
	only   string // if set, the one object key the store shows
	opts   Options
	log    *slog.Logger
	chunks *cache.ChunkCache
	disk   *diskCache

	// Background decoding jobs of this store run under ctx, counted by
	// jobs; Close cancels them and waits.
	ctx    context.Context
	cancel context.CancelFunc
	jobs   sync.WaitGroup
	// diskClosed is set, under disk.mu, once Close has begun: no job of
	// this store starts afterwards.
	diskClosed bool

	mu     sync.RWMutex
	keys   *Keyring         // never changes
	blobs  map[string]*Blob // by object key
	sorted []*Blob
	closed bool
}

// OpenStore opens the directory dir as a store and lists it.
func OpenStore(ctx context.Context, dir string, opts Options) (*Store, error) {
	return openStore(ctx, dir, "", opts)
}

// OpenFile opens a single object as a store of one blob, for commands that
// handle one downloaded file without listing its directory.
func OpenFile(ctx context.Context, file string, opts Options) (*Store, *Blob, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, nil, fmt.Errorf("backupy: %w", err)
	}
	s, err := openStore(ctx, filepath.Dir(abs), filepath.Base(abs), opts)
	if err != nil {
		return nil, nil, err
	}
	b := s.Blob(filepath.Base(abs))
	if b == nil {
		s.Close()
		return nil, nil, fmt.Errorf("backupy: %s: not a regular file", file)
	}
	return s, b, nil
}

func openStore(ctx context.Context, dir, only string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("backupy: store %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("backupy: store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("backupy: store %s: not a directory", dir)
	}
	s := &Store{root: abs, only: only, opts: opts, keys: opts.Keys, blobs: map[string]*Blob{}}
	s.log = opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.chunks = opts.Chunks
	if s.chunks == nil {
		s.chunks = cache.New(defaultChunkCache)
	}
	if s.opts.StreamWindow <= 0 {
		s.opts.StreamWindow = defaultStreamWindow
	}
	maxBytes := opts.CacheMaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultCacheMax
	}
	if s.disk, err = openDiskCache(opts.CacheDir, maxBytes, s.log); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.Refresh(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Root returns the store's absolute directory.
func (s *Store) Root() string { return s.root }

// CacheDir returns the directory holding decoded files and the size index.
func (s *Store) CacheDir() string { return s.disk.dir }

// Refresh lists the directory again. Objects whose size and modification
// time are unchanged keep their Blob (and everything learnt about them), so
// a refresh costs one stat per object plus three small reads per new or
// changed object.
func (s *Store) Refresh(ctx context.Context) error {
	type seen struct {
		rel string
		fi  fs.FileInfo
	}
	var found []seen
	cacheDir := s.disk.shared // never list our own cache, if it is inside the store
	walkErr := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == s.root {
				return err
			}
			s.log.Warn("backupy: skipping unreadable path", "path", p, "err", err)
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if d.IsDir() {
			if p == cacheDir || (s.only != "" && p != s.root) {
				return fs.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(s.root, p)
		rel = filepath.ToSlash(rel)
		if s.only != "" && rel != s.only {
			return nil
		}
		fi, err := os.Stat(p) // follows symbolic links to files
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		found = append(found, seen{rel, fi})
		return nil
	})
	if walkErr != nil {
		return fmt.Errorf("backupy: listing %s: %w", s.root, walkErr)
	}

	s.mu.RLock()
	old := s.blobs
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	next := make(map[string]*Blob, len(found))
	for _, f := range found {
		if b, ok := old[f.rel]; ok && b.Size == f.fi.Size() && b.ModTime.Equal(f.fi.ModTime()) {
			next[f.rel] = b
			continue
		}
		b, err := s.newBlob(f.rel, f.fi)
		if err != nil {
			s.log.Warn("backupy: skipping object", "object", f.rel, "err", err)
			continue
		}
		if b.Kind == KindForeign && s.opts.HideForeign {
			continue
		}
		next[f.rel] = b
	}
	sorted := make([]*Blob, 0, len(next))
	for _, b := range next {
		sorted = append(sorted, b)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })

	s.mu.Lock()
	s.blobs, s.sorted = next, sorted
	s.mu.Unlock()
	return nil
}

// Blobs returns the objects, sorted by object key. The slice is shared and
// must not be modified.
func (s *Store) Blobs() []*Blob {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sorted
}

// Blob returns the object with the given key, or nil.
func (s *Store) Blob(key string) *Blob {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.blobs[strings.TrimPrefix(key, "/")]
}

func (s *Store) keyring() *Keyring {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys
}

// Close stops background decoding, closes files and saves the size index.
// Handles still open fail afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.disk.closeStore(s)
	s.disk.release()
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// errIfClosed is checked by long operations.
func (s *Store) errIfClosed() error {
	if s.isClosed() {
		return ErrClosed
	}
	return nil
}
