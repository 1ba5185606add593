// Package sealed keeps chunks fetched from a remote repository on disk,
// exactly as the server sent them (sealed: still encrypted, as stored),
// so that a second mount or a second read fetches nothing it already has.
//
// The cache is a directory of content-addressed files:
//
//	DIR/                   mode 0700
//	  <space>/<aa>/<addr>  one chunk, named by its address in hex
//	  <space>/tmp-*        a chunk being written (renamed into place)
//
// A space separates repositories (see Cache.Space), so that one
// repository's chunks are never offered to another. The cache holds
// nothing but what a server sent: it never decrypts, and a chunk that
// fails verification above it is removed (Space.Remove). Reading a chunk
// from the cache is trusted no more than reading it from the server: the
// caller verifies every byte against its address.
//
// The directory is bounded by bytes, least recently used chunks going
// first. Recency lives in the files' modification times (a hit touches
// its file), so several processes can share the directory: each counts
// what it writes, and when its count passes the bound it rescans the
// directory (holding an advisory lock, without waiting for it) and
// removes the oldest files until all of them fit 90% of it. Files are
// written under a temporary name and renamed into place, so a reader
// never sees half a chunk; a file removed by another process while it
// is read stays readable through the open descriptor.
package sealed

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/untrusted"
)

// Options configure Open.
type Options struct {
	// Dir is the cache directory; it is created (mode 0700) if missing.
	Dir string
	// MaxBytes bounds the bytes of chunks in the directory, across every
	// process using it.
	MaxBytes int64
	// MaxChunk bounds one chunk: a larger file in the cache is ignored
	// (and removed), a larger chunk is not stored.
	MaxChunk int64
	// Logger receives warnings (a chunk that could not be written).
	// Nil discards them.
	Logger *slog.Logger
}

// Cache is an open cache directory. It is safe for concurrent use, and
// for use by several processes at once.
type Cache struct {
	dir      string
	maxBytes int64
	maxChunk int64
	log      *slog.Logger

	mu       sync.Mutex
	counted  int64 // bytes on disk as of the last scan, plus those written since
	scanning bool
	warned   bool
	wg       sync.WaitGroup

	hits, misses, puts, putBytes, evicted, removed atomic.Int64
}

// Stats are the cache's counters since Open.
type Stats struct {
	Hits, Misses    int64 // Get found / did not find a chunk
	Puts, PutBytes  int64 // chunks written
	Evicted         int64 // files removed to stay within the bound
	Removed         int64 // chunks removed by Remove
	Counted, Budget int64 // bytes believed on disk, and the bound
}

// touchEvery is how stale a file's time may get before a hit refreshes
// it: recency to the minute is enough to choose what to evict.
const touchEvery = time.Minute

// lowWater is the share of the bound a rescan evicts down to, so that
// rescans stay rare.
const lowWater = 0.9

// staleTemp is the age after which a temporary file is a crashed
// writer's and removed by a scan.
const staleTemp = time.Hour

// Open opens (creating it if needed) the cache directory and counts what
// it holds in the background.
func Open(o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, errors.New("sealed: no cache directory")
	}
	if o.MaxBytes <= 0 {
		return nil, errors.New("sealed: the cache needs a positive size")
	}
	if o.MaxChunk <= 0 {
		o.MaxChunk = 1 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	c := &Cache{dir: dir, maxBytes: o.MaxBytes, maxChunk: o.MaxChunk, log: o.Logger, scanning: true}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.scan(false)
	}()
	return c, nil
}

// privateDir makes dir a directory only its owner (this user) can enter:
// the chunks are encrypted, but which chunks someone read is not for
// others to see.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if fi, err = os.Stat(dir); err != nil {
			return fmt.Errorf("chunk cache: %w", err)
		}
	}
	if !fi.IsDir() {
		return fmt.Errorf("chunk cache %s: not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("chunk cache %s: owned by another user (uid %d); choose another directory", dir, st.Uid)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chunk cache: %w", err)
		}
	}
	return nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Close waits for a scan under way. The cache keeps working after Close;
// it holds no other resources.
func (c *Cache) Close() error {
	c.wg.Wait()
	return nil
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	counted := c.counted
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Puts: c.puts.Load(), PutBytes: c.putBytes.Load(),
		Evicted: c.evicted.Load(), Removed: c.removed.Load(), Counted: counted, Budget: c.maxBytes,
	}
}

// Space is the part of the cache that holds one repository's chunks.
type Space struct {
	c   *Cache
	dir string
}

// Space returns the space named name (a repository's URL, say): the
// same name gives the same space, in this process and the next.
func (c *Cache) Space(name string) *Space {
	sum := sha256.Sum256([]byte(name))
	return &Space{c: c, dir: filepath.Join(c.dir, hex.EncodeToString(sum[:12]))}
}

func (s *Space) path(addr [32]byte) string {
	h := hex.EncodeToString(addr[:])
	return filepath.Join(s.dir, h[:2], h)
}

// Get returns the chunk at addr in a buffer from pool (which the caller
// then owns), or false when the cache does not hold it.
func (s *Space) Get(addr [32]byte, pool *cache.BufferPool) ([]byte, bool) {
	p := s.path(addr)
	f, fi, err := untrusted.Open(p)
	if err != nil {
		s.c.misses.Add(1)
		return nil, false
	}
	defer f.Close()
	if fi.Size() > s.c.maxChunk || fi.Size() == 0 {
		s.c.misses.Add(1)
		s.Remove(addr)
		return nil, false
	}
	b := pool.Get(int(fi.Size()))
	if _, err := io.ReadFull(f, b); err != nil {
		pool.Put(b)
		s.c.misses.Add(1)
		return nil, false
	}
	s.c.hits.Add(1)
	if now := time.Now(); now.Sub(fi.ModTime()) > touchEvery {
		_ = os.Chtimes(p, now, now)
	}
	return b, true
}

// Contains reports whether the cache holds addr, without reading it.
func (s *Space) Contains(addr [32]byte) bool {
	fi, err := os.Stat(s.path(addr))
	return err == nil && fi.Mode().IsRegular()
}

// Put stores a chunk as the server sent it. Failures (a full disk) are
// logged once and otherwise ignored: the cache is an optimisation.
func (s *Space) Put(addr [32]byte, b []byte) {
	if len(b) == 0 || int64(len(b)) > s.c.maxChunk || int64(len(b)) > s.c.maxBytes/4 {
		return
	}
	p := s.path(addr)
	if _, err := os.Lstat(p); err == nil {
		return // another reader (or process) stored it
	}
	if err := s.write(p, b); err != nil {
		s.c.mu.Lock()
		warn := !s.c.warned
		s.c.warned = true
		s.c.mu.Unlock()
		if warn {
			s.c.log.Warn("cannot write to the chunk cache; going on without it for such chunks", "dir", s.c.dir, "err", err)
		}
		return
	}
	s.c.puts.Add(1)
	s.c.putBytes.Add(int64(len(b)))
	s.c.mu.Lock()
	s.c.counted += int64(len(b))
	over := s.c.counted > s.c.maxBytes && !s.c.scanning
	if over {
		s.c.scanning = true
	}
	s.c.mu.Unlock()
	if over {
		s.c.wg.Add(1)
		go func() {
			defer s.c.wg.Done()
			s.c.scan(true)
		}()
	}
}

func (s *Space) write(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, "tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Remove drops the chunk at addr: it failed verification, and must not
// be offered again.
func (s *Space) Remove(addr [32]byte) {
	p := s.path(addr)
	fi, err := os.Lstat(p)
	if err != nil {
		return
	}
	if os.Remove(p) == nil {
		s.c.removed.Add(1)
		s.c.mu.Lock()
		s.c.counted = max(s.c.counted-fi.Size(), 0)
		s.c.mu.Unlock()
	}
}

// cachedFile is a chunk file found by a scan.
type cachedFile struct {
	path  string
	size  int64
	mtime time.Time
}

// scan counts the directory's chunks and, when evict is set or they pass
// the bound, removes the least recently used until they fit lowWater of
// it. Only one process scans at a time (an advisory lock, not waited
// for: if another process holds it, it is doing this very work).
func (c *Cache) scan(evict bool) {
	defer func() {
		c.mu.Lock()
		c.scanning = false
		c.mu.Unlock()
	}()
	unlock, err := lockFile(filepath.Join(c.dir, "lock"))
	if err != nil {
		return
	}
	defer unlock()
	// Chunks written during a pass may be missed by its listing: they are
	// counted on top, and another pass runs if they tip the count over.
	for range 3 {
		before := c.putBytes.Load()
		total := c.scanOnce(evict)
		c.mu.Lock()
		c.counted = total + c.putBytes.Load() - before
		over := c.counted > c.maxBytes
		c.mu.Unlock()
		if !over {
			return
		}
		evict = true
	}
}

// scanOnce is one pass of scan; it returns the bytes left on disk.
func (c *Cache) scanOnce(evict bool) int64 {
	var files []cachedFile
	var total int64
	now := time.Now()
	spaces, _ := os.ReadDir(c.dir)
	for _, sp := range spaces {
		if !sp.IsDir() {
			continue
		}
		spDir := filepath.Join(c.dir, sp.Name())
		subs, _ := os.ReadDir(spDir)
		for _, sub := range subs {
			p := filepath.Join(spDir, sub.Name())
			if strings.HasPrefix(sub.Name(), "tmp-") {
				if fi, err := sub.Info(); err == nil && now.Sub(fi.ModTime()) > staleTemp {
					os.Remove(p)
				}
				continue
			}
			if !sub.IsDir() {
				continue
			}
			ents, _ := os.ReadDir(p)
			for _, e := range ents {
				fi, err := e.Info()
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				files = append(files, cachedFile{filepath.Join(p, e.Name()), fi.Size(), fi.ModTime()})
				total += fi.Size()
			}
		}
	}
	if evict || total > c.maxBytes {
		sort.Slice(files, func(i, j int) bool { return files[i].mtime.Before(files[j].mtime) })
		target := int64(float64(c.maxBytes) * lowWater)
		for _, f := range files {
			if total <= target {
				break
			}
			if err := os.Remove(f.path); err == nil || errors.Is(err, fs.ErrNotExist) {
				total -= f.size
				if err == nil {
					c.evicted.Add(1)
				}
			}
		}
	}
	return total
}

// lockFile takes an exclusive advisory lock on path without waiting.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
