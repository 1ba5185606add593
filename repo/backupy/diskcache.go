package backupy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// diskCache is the cache directory: decoded dumps ("<id>.dat") and the
// persistent index ("index.json") of what full passes found about each
// object version (decoded size, checksums, key fingerprint).
//
// A process opens each cache directory once: every store using the
// directory shares one diskCache (reference counted by openDiskCache and
// release), with one index holding the entries of all of them and one size
// budget. The entries are keyed by objectID, which includes the store's
// directory, so objects of different stores never collide.
//
// One process at a time owns the directory, through a lock file. A second
// process using the same directory reads the index (so it still lists
// exact sizes) but decodes into a private directory that it removes on
// close.
type diskCache struct {
	dir    string // where data files go
	shared string // the cache directory proper, and the registry key
	log    *slog.Logger
	owner  bool // holds the lock: may write the shared index and data
	unlock func()
	refs   int // stores using it; guarded by caches.mu

	mu       sync.Mutex
	maxBytes int64
	entries  map[string]*indexEntry
	jobs     map[string]*matJob
	closed   bool

	saveMu sync.Mutex

	privateOnce sync.Once
	privateErr  error
}

// caches holds the open cache directories of this process. Taking a lock
// file a second time would fail even inside one process (flock locks
// belong to open files), so stores share the diskCache instead.
var caches = struct {
	mu sync.Mutex
	m  map[string]*diskCache
}{m: map[string]*diskCache{}}

// indexEntry is what is known about one object version. It holds no key
// material; KeyID is the key's fingerprint.
type indexEntry struct {
	Store   string `json:"store"`
	Object  string `json:"object"`
	Size    int64  `json:"size"`
	MTime   int64  `json:"mtime_ns"`
	Decoded *int64 `json:"decoded,omitempty"`
	// Sized is the decoded size a zstd header gave, confirmed by walking
	// the frame's block headers to the end of the layer (no pass yet).
	Sized  *int64 `json:"sized,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // computed over the ciphertext
	ZstdOK bool   `json:"zstd_ok,omitempty"`
	KeyID  string `json:"key_id,omitempty"`
	Ext    string `json:"ext,omitempty"`
	Cached int64  `json:"cached,omitempty"` // size of a complete data file, 0 if none
	Used   int64  `json:"used_ns"`          // Unix nanoseconds of last use

	// A corruption verdict that does not depend on what a token claims
	// (see Blob.persistable): the cause, the fingerprint of the key it was
	// found under ("" if it holds whatever the key), and where in the
	// compressed layer the damage starts. Whether the object is the one
	// the server recorded is never saved: SHA256 is, and each mount
	// compares it with the hash its own keys claim.
	Corrupt    string `json:"corrupt,omitempty"`
	CorruptKey string `json:"corrupt_key,omitempty"`
	CorruptAt  *int64 `json:"corrupt_at,omitempty"`

	// What sorting and sniffing found, so that a later mount lists the
	// object without reading it (on S3, a GET or two each): its kind,
	// saved only when its frame layout is clean and regular; what its
	// compressed layer holds; and the keys that by trial did not open
	// its frame 0.
	Kind    Kind          `json:"kind,omitempty"`
	Payload *savedPayload `json:"payload,omitempty"`
	Tried   []string      `json:"tried,omitempty"`
}

// savedPayload is a payload in the index.
type savedPayload struct {
	Zstd       bool   `json:"zstd"`
	Ext        string `json:"ext"`
	FCS        int64  `json:"fcs"`
	HeaderSize int    `json:"header_size,omitempty"`
	Checksum   bool   `json:"checksum,omitempty"`
}

func savePayload(p payload) *savedPayload {
	return &savedPayload{Zstd: p.zstd, Ext: p.ext, FCS: p.fcs, HeaderSize: p.headerSize, Checksum: p.hasChecksum}
}

func (p *savedPayload) payload() payload {
	return payload{zstd: p.Zstd, ext: p.Ext, fcs: p.FCS, headerSize: p.HeaderSize, hasChecksum: p.Checksum}
}

type indexFile struct {
	Version int                    `json:"version"`
	Entries map[string]*indexEntry `json:"entries"`
}

const (
	indexName = "index.json"
	// indexVersion 2 replaced version 1's saved "verified" flag and
	// key-dependent corruption verdicts; a version 1 index is read
	// without them.
	indexVersion = 2
	// maxIndexEntries bounds the index; the least recently used entries
	// beyond it are dropped (they only cost a decode pass to relearn).
	maxIndexEntries = 50000
)

// errNoCacheDir is an empty Options.CacheDir: the library reads no
// environment, so the default ($XDG_CACHE_HOME/…) is the caller's to
// work out (cmd/backupfs does).
var errNoCacheDir = errors.New("backupy: no cache directory given (Options.CacheDir)")

// openDiskCache returns the cache directory dir, opening it if this process has not yet. Each call must
// be paired with a release. The size budget is the largest any user asked
// for.
//
// Opening changes nothing in an existing directory but its lock file: a
// mount refused after its stores were opened leaves the directory as it
// was. Making it private (mode 0700) waits for the first write of
// decoded data (see private).
func openDiskCache(dir string, maxBytes int64, log *slog.Logger) (*diskCache, error) {
	if dir == "" {
		return nil, errNoCacheDir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("backupy: cache directory: %w", err)
	}
	// Decoded dumps are database contents: nobody else may read them.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backupy: cache directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("backupy: cache directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("backupy: cache directory %s: not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 && ownedByOther(fi) {
		// It could never be made private.
		return nil, fmt.Errorf("backupy: cache directory %s is mode %v and owned by another user; choose another", dir, fi.Mode().Perm())
	}
	// One diskCache per directory, however it is spelt.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}

	caches.mu.Lock()
	defer caches.mu.Unlock()
	if dc := caches.m[dir]; dc != nil {
		dc.refs++
		dc.mu.Lock()
		dc.maxBytes = max(dc.maxBytes, maxBytes)
		dc.mu.Unlock()
		return dc, nil
	}
	dc := &diskCache{dir: dir, shared: dir, maxBytes: maxBytes, log: log, refs: 1, entries: map[string]*indexEntry{}, jobs: map[string]*matJob{}}
	unlock, err := lockDir(filepath.Join(dir, "lock"))
	switch {
	case err == nil:
		dc.owner, dc.unlock = true, unlock
	case errors.Is(err, errLockBusy):
		private, err := os.MkdirTemp(dir, "private-")
		if err != nil {
			return nil, fmt.Errorf("backupy: cache directory: %w", err)
		}
		log.Info("backupy: cache directory in use by another process; decoding into a private directory", "dir", private)
		dc.dir = private
	default:
		return nil, fmt.Errorf("backupy: locking cache directory: %w", err)
	}
	dc.load()
	if dc.owner {
		dc.sweep()
	}
	caches.m[dir] = dc
	return dc, nil
}

func (dc *diskCache) load() {
	b, err := os.ReadFile(filepath.Join(dc.shared, indexName))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var f indexFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil || (f.Version != indexVersion && f.Version != 1) || f.Entries == nil {
		dc.log.Warn("backupy: ignoring unreadable size index", "file", filepath.Join(dc.shared, indexName), "err", err)
		return
	}
	for id, e := range f.Entries {
		if e == nil {
			continue
		}
		if f.Version == 1 {
			// Its verdicts may have come from a token's claim.
			e.Corrupt, e.CorruptKey, e.CorruptAt = "", "", nil
		}
		dc.entries[id] = e
	}
}

// sweep reconciles data files with the index: files the index does not
// know as complete (left by a crash) are removed, and entries whose file
// is gone forget it.
func (dc *diskCache) sweep() {
	ents, err := os.ReadDir(dc.dir)
	if err != nil {
		return
	}
	present := map[string]int64{}
	for _, de := range ents {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, "private-") && de.IsDir():
			// Left behind by a mount that did not close; no live process
			// can own it, as we hold the lock.
			os.RemoveAll(filepath.Join(dc.dir, name))
		case strings.HasSuffix(name, ".dat"):
			id := strings.TrimSuffix(name, ".dat")
			e := dc.entries[id]
			fi, err := de.Info()
			if e == nil || e.Cached == 0 || err != nil || fi.Size() != e.Cached {
				os.Remove(filepath.Join(dc.dir, name))
				continue
			}
			present[id] = fi.Size()
		case strings.HasPrefix(name, indexName+".tmp"):
			os.Remove(filepath.Join(dc.dir, name))
		}
	}
	for id, e := range dc.entries {
		if _, ok := present[id]; !ok {
			e.Cached = 0
		}
	}
	dc.mu.Lock()
	dc.evictLocked()
	dc.mu.Unlock()
	dc.save()
}

// private makes the cache directory mode 0700 before the first decoded
// data is written to it, and says whether it is.
func (dc *diskCache) private() error {
	dc.privateOnce.Do(func() {
		fi, err := os.Stat(dc.shared)
		if err != nil {
			dc.privateErr = fmt.Errorf("backupy: cache directory: %w", err)
			return
		}
		if fi.Mode().Perm() == 0o700 {
			return
		}
		if err := os.Chmod(dc.shared, 0o700); err != nil {
			dc.privateErr = fmt.Errorf("backupy: cache directory %s is mode %v and cannot be made 0700: %w", dc.shared, fi.Mode().Perm(), err)
			return
		}
		dc.log.Warn("backupy: cache directory was not private; set it to 0700", "dir", dc.shared, "was", fi.Mode().Perm().String())
	})
	return dc.privateErr
}

func (dc *diskCache) dataPath(id string) string { return filepath.Join(dc.dir, id+".dat") }

// lookup returns a copy of an object's entry.
func (dc *diskCache) lookup(id string) (indexEntry, bool) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	e, ok := dc.entries[id]
	if !ok {
		return indexEntry{}, false
	}
	return *e, true
}

// note changes an object's entry, creating it if needed, without saving
// the index: for facts learnt about every object a listing shows, which
// the next save (at the latest when the store closes) writes.
func (dc *diskCache) note(b *Blob, fn func(*indexEntry)) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if !dc.closed {
		fn(dc.entryLocked(b))
	}
}

// update changes an object's entry, creating it if needed, and saves the
// index.
func (dc *diskCache) update(b *Blob, fn func(*indexEntry)) {
	dc.mu.Lock()
	if dc.closed {
		dc.mu.Unlock()
		return
	}
	e := dc.entryLocked(b)
	fn(e)
	dc.mu.Unlock()
	dc.save()
}

func (dc *diskCache) entryLocked(b *Blob) *indexEntry {
	e, ok := dc.entries[b.id]
	if !ok {
		e = &indexEntry{Store: b.store.objects.Name(), Object: b.Path, Size: b.Size, MTime: b.ModTime.UnixNano()}
		dc.entries[b.id] = e
	}
	e.Used = time.Now().UnixNano()
	return e
}

// save writes the index atomically. Only the lock owner writes it.
func (dc *diskCache) save() {
	dc.saveMu.Lock()
	defer dc.saveMu.Unlock()
	if !dc.owner {
		return
	}
	dc.mu.Lock()
	if len(dc.entries) > maxIndexEntries {
		dc.pruneLocked()
	}
	b, err := json.Marshal(indexFile{Version: indexVersion, Entries: dc.entries})
	dc.mu.Unlock()
	if err != nil {
		dc.log.Warn("backupy: encoding size index", "err", err)
		return
	}
	tmp, err := os.CreateTemp(dc.shared, indexName+".tmp*")
	if err != nil {
		dc.log.Warn("backupy: saving size index", "err", err)
		return
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr == nil && cerr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dc.shared, indexName))
	}
	if werr != nil || cerr != nil {
		os.Remove(tmp.Name())
		dc.log.Warn("backupy: saving size index", "err", errors.Join(werr, cerr))
	}
}

// pruneLocked drops the least recently used entries without data files.
func (dc *diskCache) pruneLocked() {
	ids := make([]string, 0, len(dc.entries))
	for id, e := range dc.entries {
		if e.Cached == 0 && dc.jobs[id] == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return dc.entries[ids[i]].Used < dc.entries[ids[j]].Used })
	for _, id := range ids {
		if len(dc.entries) <= maxIndexEntries*9/10 {
			break
		}
		delete(dc.entries, id)
	}
}

// evictLocked removes the least recently used complete data files of
// objects without open handles or running jobs until the total fits.
func (dc *diskCache) evictLocked() bool {
	var total int64
	var idle []string
	for id, e := range dc.entries {
		total += e.Cached
		if e.Cached > 0 && dc.jobs[id] == nil {
			idle = append(idle, id)
		}
	}
	if total <= dc.maxBytes {
		return false
	}
	sort.Slice(idle, func(i, j int) bool { return dc.entries[idle[i]].Used < dc.entries[idle[j]].Used })
	changed := false
	for _, id := range idle {
		if total <= dc.maxBytes {
			break
		}
		e := dc.entries[id]
		if err := os.Remove(dc.dataPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			dc.log.Warn("backupy: evicting decoded file", "object", e.Object, "err", err)
			continue
		}
		total -= e.Cached
		e.Cached = 0
		changed = true
	}
	return changed
}

// evictOne removes the least recently used complete data file that no
// handle or job uses, other than the one of id, to make room on a full
// disk. It reports whether it removed one.
func (dc *diskCache) evictOne(except string) bool {
	dc.mu.Lock()
	var victim string
	for id, e := range dc.entries {
		if id != except && e.Cached > 0 && dc.jobs[id] == nil && (victim == "" || e.Used < dc.entries[victim].Used) {
			victim = id
		}
	}
	if victim == "" {
		dc.mu.Unlock()
		return false
	}
	e := dc.entries[victim]
	err := os.Remove(dc.dataPath(victim))
	if err == nil || errors.Is(err, os.ErrNotExist) {
		e.Cached = 0
	}
	dc.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		dc.log.Warn("backupy: evicting decoded file", "object", e.Object, "err", err)
		return false
	}
	dc.save()
	return true
}

func (dc *diskCache) evict() {
	dc.mu.Lock()
	if dc.closed {
		dc.mu.Unlock()
		return
	}
	changed := dc.evictLocked()
	dc.mu.Unlock()
	if changed {
		dc.save()
	}
}

// closeStore stops the jobs of a closing store, closes their files (an
// incomplete one is removed) and saves the index. Jobs of other stores go
// on. Handles of the store still open fail afterwards: their reads find the
// store closed, and their jobs are no longer in the table.
func (dc *diskCache) closeStore(s *Store) {
	dc.mu.Lock()
	s.diskClosed = true // no job of s starts from now on
	var mine []*matJob
	for id, j := range dc.jobs {
		if j.b.store == s {
			mine = append(mine, j)
			delete(dc.jobs, id)
		}
	}
	dc.mu.Unlock()
	s.cancel()
	s.jobs.Wait()
	for _, j := range mine {
		j.closeFile()
		if !j.isDone() {
			os.Remove(dc.dataPath(j.id))
		}
	}
	dc.save()
}

// release drops one user. The last one closes the directory: it saves the
// index and gives up the lock (or removes its private directory).
func (dc *diskCache) release() {
	caches.mu.Lock()
	dc.refs--
	last := dc.refs == 0
	if last && caches.m[dc.shared] == dc {
		delete(caches.m, dc.shared)
	}
	caches.mu.Unlock()
	if !last {
		return
	}
	dc.mu.Lock()
	dc.closed = true
	jobs := dc.jobs
	dc.jobs = map[string]*matJob{}
	dc.mu.Unlock()
	for id, j := range jobs { // only jobs of stores that were never closed
		j.closeFile()
		if !j.isDone() {
			os.Remove(dc.dataPath(id))
		}
	}
	if dc.owner {
		dc.save()
		// Handles closed later must not write to a directory whose lock
		// is released.
		dc.saveMu.Lock()
		dc.owner = false
		dc.saveMu.Unlock()
		dc.unlock()
	} else {
		os.RemoveAll(dc.dir)
	}
}
