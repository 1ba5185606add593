package bupstash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/untrusted"
)

// Dir is a repository in a local (or network-mounted) directory, as
// Bupstash's DirStore engine lays it out:
//
//	tx.lock, repo.lock        fcntl locks; readers of metadata take tx.lock shared
//	meta/schema_version       5 to 8
//	meta/storage_engine       "DirStore"
//	items/<id>                one file per live item: its metadata
//	items/<id>.removed        removed items, until bupstash gc
//	data/<address>            one file per chunk
//	tx.wal, rollback.journal  a transaction interrupted by a crash
//
// It never writes, never migrates and never repairs: a pending transaction
// is applied in memory (see txn.go). Every file is read through
// internal/untrusted, so a FIFO, a device or a huge file in the
// repository is refused at once rather than blocking or exhausting memory.
type Dir struct {
	dir    string
	schema int
	noLock bool
	// lockWait is DirOptions.LockWait.
	lockWait time.Duration
	log      *slog.Logger

	noticeMu sync.Mutex
	noticed  map[string]bool // notices already logged once
}

var (
	_ Source      = (*Dir)(nil)
	_ StoredSizer = (*Dir)(nil)
)

// DirOptions configure OpenDir.
type DirOptions struct {
	// NoLock skips the shared metadata lock, for media that cannot lock.
	NoLock bool
	// LockWait bounds the wait for a writer's lock before metadata is
	// read; past it the read fails with ErrLocked. Zero waits as long as
	// the context allows, as Bupstash does.
	LockWait time.Duration
	// Logger receives notices: an unfinished transaction read as if
	// recovered, a lock held by another process for long. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// OpenDir checks that dir holds a repository backupfs can read and
// returns it as a Source. It refuses what it cannot read with a message
// saying what to do.
func OpenDir(dir string, opts DirOptions) (*Dir, error) {
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
	d := &Dir{dir: dir, schema: schema, noLock: opts.NoLock, lockWait: opts.LockWait, log: opts.Logger, noticed: map[string]bool{}}
	if d.log == nil {
		d.log = slog.Default()
	}
	return d, nil
}

// String returns the directory.
func (d *Dir) String() string { return d.dir }

// Path returns the directory.
func (d *Dir) Path() string { return d.dir }

// Schema returns the repository's schema version (5 to 8).
func (d *Dir) Schema() int { return d.schema }

// Close does nothing: a directory holds no resources between calls.
func (d *Dir) Close() error { return nil }

// repositoryLayout says what a repository looks like, for messages about
// directories that are not one.
const repositoryLayout = "a repository is a directory holding tx.lock, meta/schema_version, items/ and data/, as `bupstash init` makes it"

// checkLayout tells a repository from other directories by the files
// Bupstash itself checks for: tx.lock and the schema version.
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
	b, err := untrusted.ReadFile(filepath.Join(dir, "meta", "schema_version"), untrusted.SchemaVersion)
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
	b, err := untrusted.ReadFile(filepath.Join(dir, "meta", "storage_engine"), untrusted.StorageEngine)
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

// notice logs a warning once per Dir and key.
func (d *Dir) notice(key, msg string, attrs ...any) {
	d.noticeMu.Lock()
	seen := d.noticed[key]
	d.noticed[key] = true
	d.noticeMu.Unlock()
	if !seen {
		d.log.Warn(msg, append([]any{"repo", d.dir}, attrs...)...)
	}
}

// Changed compares the modification time of items/, which every change
// of the item set (put, rm, recover-removed, gc) updates, with token. It
// takes no lock.
func (d *Dir) Changed(_ context.Context, token string) (bool, error) {
	return d.itemsStamp() != token, nil
}

// itemsStamp is the token of the current items/ directory.
func (d *Dir) itemsStamp() string {
	fi, err := os.Stat(filepath.Join(d.dir, "items"))
	if err != nil {
		return ""
	}
	return strconv.FormatInt(fi.ModTime().UnixNano(), 10)
}

// Items lists items/ (Bupstash keeps one file per live item there) and
// reads the files of items not known yet, under the shared transaction
// lock, which keeps writers out for the duration, with any pending
// transaction applied in memory. Reads run on several goroutines: each is
// a few system calls, and callers decrypt the metadata as it arrives.
func (d *Dir) Items(ctx context.Context, known func(Xid) bool) (*ItemSet, error) {
	// The stamp is taken before listing: a change during the listing
	// then shows as a change next time.
	set := &ItemSet{Token: d.itemsStamp()}
	err := d.readMeta(ctx, func(v *metaView) error {
		names, err := v.listDir("items")
		if err != nil {
			return fmt.Errorf("%s: listing items: %w", d.dir, err)
		}
		var fresh []int
		for _, n := range names {
			if !isHexName(n, 32) { // skips *.removed and strays
				continue
			}
			id, err := ParseXid(n)
			if err != nil {
				continue
			}
			set.Items = append(set.Items, RawItem{ID: id})
			if known == nil || !known(id) {
				fresh = append(fresh, len(set.Items)-1)
			}
		}
		return d.readItems(ctx, v, set, fresh)
	})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// readItems reads the metadata of set.Items[i] for every i in which. An
// item removed meanwhile leaves the set; one that cannot be read (not a
// regular file, too large, an I/O error) becomes a problem.
func (d *Dir) readItems(ctx context.Context, v *metaView, set *ItemSet, which []int) error {
	type result struct {
		i    int
		meta []byte
		err  error
	}
	work := make(chan int)
	results := make(chan result)
	var wg sync.WaitGroup
	for range min(len(which), 2*runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				b, err := v.readFile(path.Join("items", set.Items[i].ID.String()), untrusted.ItemFile)
				results <- result{i: i, meta: b, err: err}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, i := range which {
			select {
			case work <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	gone := map[int]bool{}
	for res := range results {
		switch {
		case errors.Is(res.err, fs.ErrNotExist):
			gone[res.i] = true // removed while listing
		case res.err != nil:
			gone[res.i] = true
			set.Problems = append(set.Problems, &ItemError{ID: set.Items[res.i].ID, Err: res.err})
		default:
			set.Items[res.i].Meta = res.meta
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(gone) > 0 {
		kept := set.Items[:0]
		for i, it := range set.Items {
			if !gone[i] {
				kept = append(kept, it)
			}
		}
		set.Items = kept
	}
	return nil
}

// ReadChunk reads data/<address>. Chunk files are written under a
// temporary name and renamed into place, so a file that exists is
// complete. Only the address is used: a directory reaches every chunk.
func (d *Dir) ReadChunk(ctx context.Context, ref ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, fi, err := untrusted.Open(filepath.Join(d.dir, "data", ref.Addr.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrChunkMissing
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > maxChunkFileSize {
		return nil, fmt.Errorf("%w: chunk file is %d bytes", ErrCorrupt, fi.Size())
	}
	// Admitted under the cache's bound before it is allocated: a reader
	// may wait here for room (see cache.BufferPool.Alloc).
	b, err := pool.Alloc(ctx, int(fi.Size()))
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f, b); err != nil {
		pool.Put(b)
		return nil, fmt.Errorf("reading chunk: %w", err)
	}
	return b, nil
}

// StoredSize returns the size of a chunk's file, or -1.
func (d *Dir) StoredSize(addr Address) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(d.dir, "data", addr.String()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return -1
	}
	return st.Size
}
