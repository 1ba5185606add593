package backupy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

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

// Options configure a Store. Only CacheDir is required.
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
	// CacheDir holds decoded dumps and the size index; it is required.
	// (The command line's default is $XDG_CACHE_HOME/backupfs/backupy:
	// this package reads no environment variables.)
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
	// ListTTL is how long a directory's listing is used before Dir reads
	// it again. Zero means one second.
	ListTTL time.Duration
	// Lazy makes Open list only the store's root; other directories are
	// listed when Dir first asks for them. Otherwise Open lists the whole
	// store, as Refresh does.
	Lazy bool
}

const (
	defaultChunkCache   = 64 << 20
	defaultCacheMax     = 10 << 30
	defaultStreamWindow = 16 << 20
	defaultListTTL      = time.Second
	// listWait is how long Dir waits for a directory being listed again
	// before it answers with the previous listing: a slow or unreachable
	// store delays the new listing, never the answer.
	listWait = 2 * time.Second
)

// Store is a set of Backupy objects, read through an ObjectStore and
// listed one directory at a time. It is safe for concurrent use.
type Store struct {
	objects ObjectStore
	only    string // if set, the one object key the store shows
	skip    string // key of the cache directory, if it lies inside the store
	opts    Options
	log     *slog.Logger
	chunks  *cache.ChunkCache
	disk    *diskCache

	// Background work of this store (decoding jobs, listings) runs under
	// ctx, counted by jobs; Close cancels it and waits.
	ctx    context.Context
	cancel context.CancelFunc
	jobs   sync.WaitGroup
	// diskClosed is set, under disk.mu, once Close has begun: no job of
	// this store starts afterwards.
	diskClosed bool

	mu      sync.RWMutex
	keys    *Keyring             // never changes
	dirs    map[string]*dirState // listed directories, by key prefix
	listing map[string]*listJob  // listings under way
	closed  bool
}

// dirState is one listed directory. It is replaced, never changed.
type dirState struct {
	listed  time.Time
	blobs   map[string]*Blob // by object key
	sorted  []*Blob          // by object key
	subdirs []string         // sorted
	failing bool             // the last listing failed (and was reported)
}

// listJob is a listing of one directory under way; done is closed when
// it has ended, with err set if it failed.
type listJob struct {
	done chan struct{}
	err  error
}

// OpenStore opens the directory dir as a store and lists it.
func OpenStore(ctx context.Context, dir string, opts Options) (*Store, error) {
	objects, err := NewLocalDir(dir)
	if err != nil {
		return nil, err
	}
	return Open(ctx, objects, opts)
}

// Open opens a store of the objects an ObjectStore holds and lists it
// (only its root with Options.Lazy).
func Open(ctx context.Context, objects ObjectStore, opts Options) (*Store, error) {
	return open(ctx, objects, "", opts)
}

// OpenFile opens a single object as a store of one blob, for commands that
// handle one downloaded file without listing its directory.
func OpenFile(ctx context.Context, file string, opts Options) (*Store, *Blob, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, nil, fmt.Errorf("backupy: %w", err)
	}
	objects, err := NewLocalDir(filepath.Dir(abs))
	if err != nil {
		return nil, nil, err
	}
	s, err := open(ctx, objects, filepath.Base(abs), opts)
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

// OpenObject opens one object of an ObjectStore, given by its key, as a
// store of that one blob.
func OpenObject(ctx context.Context, objects ObjectStore, key string, opts Options) (*Store, *Blob, error) {
	s, err := open(ctx, objects, key, opts)
	if err != nil {
		return nil, nil, err
	}
	b := s.Blob(key)
	if b == nil {
		s.Close()
		return nil, nil, fmt.Errorf("backupy: %s: no such object in %s: %w", key, objects.Name(), ErrNotFound)
	}
	return s, b, nil
}

func open(ctx context.Context, objects ObjectStore, only string, opts Options) (*Store, error) {
	s := &Store{objects: objects, only: only, opts: opts, keys: opts.Keys, dirs: map[string]*dirState{}, listing: map[string]*listJob{}}
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
	if s.opts.ListTTL <= 0 {
		s.opts.ListTTL = defaultListTTL
	}
	maxBytes := opts.CacheMaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultCacheMax
	}
	var err error
	if s.disk, err = openDiskCache(opts.CacheDir, maxBytes, s.log); err != nil {
		return nil, err
	}
	if l, ok := objects.(*LocalDir); ok {
		s.skip, _ = l.holds(s.disk.shared) // never list our own cache
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if opts.Lazy && only == "" {
		err = s.listNow(ctx, "")
	} else {
		err = s.Refresh(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Root returns the store's name: its absolute directory, or its URL.
func (s *Store) Root() string { return s.objects.Name() }

// CacheDir returns the directory holding decoded files and the size index.
func (s *Store) CacheDir() string { return s.disk.dir }

// readTuning returns how a pass reads an object from start to end.
func (s *Store) readTuning() (block int64, inFlight int) {
	if t, ok := s.objects.(ReadTuning); ok {
		return t.ReadTuning()
	}
	return 1 << 20, 1
}

// Dir returns the subdirectories and objects of directory dir ("" is the
// store's root), listing it if it was never listed or its listing is
// older than Options.ListTTL. Objects whose version is unchanged keep
// their Blob (and everything learnt about them), so listing again costs
// one listing of the directory plus three small reads per new or changed
// object. When a new listing takes long or fails, the previous one is
// returned (a failure is logged once); only a directory never listed
// waits for its listing, or fails with it. The slices are shared and must
// not be modified.
func (s *Store) Dir(ctx context.Context, dir string) ([]string, []*Blob, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, ErrClosed
	}
	d := s.dirs[dir]
	if d != nil && time.Since(d.listed) < s.opts.ListTTL {
		s.mu.Unlock()
		return d.subdirs, d.sorted, nil
	}
	job := s.startListLocked(dir)
	s.mu.Unlock()
	var stale <-chan time.Time
	if d != nil {
		t := time.NewTimer(listWait)
		defer t.Stop()
		stale = t.C
	}
	select {
	case <-job.done:
	case <-stale:
		return d.subdirs, d.sorted, nil
	case <-ctx.Done():
		return nil, nil, context.Cause(ctx)
	}
	s.mu.RLock()
	nd := s.dirs[dir]
	s.mu.RUnlock()
	switch {
	case job.err == nil && nd != nil:
		return nd.subdirs, nd.sorted, nil
	case job.err != nil && d != nil && !errors.Is(job.err, ErrNotFound):
		return d.subdirs, d.sorted, nil
	case job.err != nil:
		return nil, nil, job.err
	}
	return nil, nil, fmt.Errorf("backupy: %s: %w", dir, ErrNotFound)
}

// listNow lists directory dir (or joins a listing under way) and waits
// for it.
func (s *Store) listNow(ctx context.Context, dir string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	job := s.startListLocked(dir)
	s.mu.Unlock()
	select {
	case <-job.done:
		return job.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// startListLocked starts listing dir unless a listing is under way, and
// returns it. The caller holds s.mu. Listings run under the store's
// context: a caller that stops waiting does not stop them.
func (s *Store) startListLocked(dir string) *listJob {
	if job := s.listing[dir]; job != nil {
		return job
	}
	job := &listJob{done: make(chan struct{})}
	s.listing[dir] = job
	s.jobs.Add(1)
	go func() {
		defer s.jobs.Done()
		job.err = s.list(s.ctx, dir)
		s.mu.Lock()
		delete(s.listing, dir)
		s.mu.Unlock()
		close(job.done)
	}()
	return job
}

// list reads directory dir and installs its new state. Blobs the new
// listing no longer shows (removed, or replaced by another version) go
// stale, and so does every directory under one that is gone.
func (s *Store) list(ctx context.Context, dir string) error {
	l, err := s.objects.List(ctx, dir)
	s.mu.RLock()
	old := s.dirs[dir]
	s.mu.RUnlock()
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			s.mu.Lock()
			s.dropLocked(dir)
			s.mu.Unlock()
			return err
		}
		err = fmt.Errorf("backupy: listing %s: %w", path.Join(s.objects.Name(), dir), err)
		if old != nil {
			if !old.failing {
				s.log.Warn("backupy: cannot list the store; showing its last listing", "store", s.objects.Name(), "dir", dir, "err", err)
			}
			failed := *old
			failed.failing, failed.listed = true, time.Now()
			s.mu.Lock()
			if s.dirs[dir] == old {
				s.dirs[dir] = &failed
			}
			s.mu.Unlock()
		}
		return err
	}
	if old != nil && old.failing {
		s.log.Info("backupy: the store lists again", "store", s.objects.Name(), "dir", dir)
	}
	next := &dirState{listed: time.Now(), blobs: make(map[string]*Blob, len(l.Objects))}
	for _, sub := range l.Dirs {
		key := path.Join(dir, sub)
		if s.only != "" || (s.skip != "" && key == s.skip) {
			continue
		}
		next.subdirs = append(next.subdirs, sub)
	}
	slices.Sort(next.subdirs)
	var fresh []ObjectInfo
	for _, info := range l.Objects {
		if s.only != "" && info.Key != s.only {
			continue
		}
		if old != nil {
			if b, ok := old.blobs[info.Key]; ok && b.obj.sameVersion(info) {
				next.blobs[info.Key] = b
				continue
			}
		}
		fresh = append(fresh, info)
	}
	for i, b := range s.newBlobs(ctx, fresh) {
		if b != nil && !(b.Kind == KindForeign && s.opts.HideForeign) {
			next.blobs[fresh[i].Key] = b
		}
	}
	for _, b := range next.blobs {
		next.sorted = append(next.sorted, b)
	}
	slices.SortFunc(next.sorted, func(a, b *Blob) int { return strings.Compare(a.Path, b.Path) })

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if cur := s.dirs[dir]; cur != nil {
		for key, b := range cur.blobs {
			if next.blobs[key] != b {
				b.stale.Store(true)
			}
		}
		for _, sub := range cur.subdirs {
			if _, ok := slices.BinarySearch(next.subdirs, sub); !ok {
				s.dropLocked(path.Join(dir, sub))
			}
		}
	}
	s.dirs[dir] = next
	return nil
}

// newBlobs examines new objects, several at a time on stores where each
// read is a round trip. An object that cannot be read is reported and
// left out (nil).
func (s *Store) newBlobs(ctx context.Context, infos []ObjectInfo) []*Blob {
	out := make([]*Blob, len(infos))
	_, parallel := s.readTuning()
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, info := range infos {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			b, err := s.newBlob(ctx, info)
			if err != nil {
				s.log.Warn("backupy: skipping object", "store", s.objects.Name(), "object", info.Key, "err", err)
				return
			}
			if parallel > 1 {
				// Where each read is a round trip, match keys and sniff
				// here, several objects at a time, rather than one after
				// another as the directory is shown. A failure is
				// reported when the object's files are asked for.
				b.prepare(ctx)
			}
			out[i] = b
		}()
	}
	wg.Wait()
	return out
}

// dropLocked forgets directory dir and everything under it: their blobs
// go stale. The caller holds s.mu.
func (s *Store) dropLocked(dir string) {
	for key, d := range s.dirs {
		if key == dir || dir == "" || strings.HasPrefix(key, dir+"/") {
			for _, b := range d.blobs {
				b.stale.Store(true)
			}
			delete(s.dirs, key)
		}
	}
}

// Refresh lists the whole store again, every directory from the root
// down. A directory that cannot be read is reported and skipped; the
// root's failure is returned.
func (s *Store) Refresh(ctx context.Context) error {
	if err := s.listNow(ctx, ""); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("backupy: listing %s: %w", s.objects.Name(), err)
	}
	queue := []string{""}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		s.mu.RLock()
		d := s.dirs[dir]
		s.mu.RUnlock()
		if d == nil {
			continue
		}
		for _, sub := range d.subdirs {
			key := path.Join(dir, sub)
			if err := s.listNow(ctx, key); err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrClosed) {
					return err
				}
				s.log.Warn("backupy: skipping unreadable path", "store", s.objects.Name(), "path", key, "err", err)
				continue
			}
			queue = append(queue, key)
		}
	}
	return nil
}

// Blobs returns the objects of every directory listed so far, sorted by
// object key.
func (s *Store) Blobs() []*Blob {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Blob
	for _, d := range s.dirs {
		out = append(out, d.sorted...)
	}
	slices.SortFunc(out, func(a, b *Blob) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// Blob returns the object with the given key, if its directory has been
// listed, or nil.
func (s *Store) Blob(key string) *Blob {
	key = strings.TrimPrefix(key, "/")
	dir := path.Dir(key)
	if dir == "." {
		dir = ""
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.dirs[dir]; d != nil {
		return d.blobs[key]
	}
	return nil
}

func (s *Store) keyring() *Keyring {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys
}

// Close stops background decoding and listing, closes files and saves
// the size index. Handles still open fail afterwards.
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
