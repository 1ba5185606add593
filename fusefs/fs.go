package fusefs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// XattrMode says how extended attributes are served.
type XattrMode int

const (
	// XattrsAuto serves the saved xattrs. On a mount other users may
	// enter (AllowOther) the kernel also enforces the saved POSIX ACLs,
	// and caches them. Elsewhere it checks modes only: the one user who
	// may enter holds the key (and root reads everything anyway), while
	// enforcing ACLs costs a round trip (GETXATTR) for every file someone
	// other than its owner opens, which doubled what copying a tree of
	// small files cost once opening and reading them cost nothing.
	XattrsAuto XattrMode = iota
	// XattrsOn serves the saved xattrs; every query is a round trip.
	XattrsOn
	// XattrsOff answers ENOSYS once, after which the kernel stops asking:
	// the fastest ls -l, but no xattrs.
	XattrsOff
)

// ParseXattrMode parses "auto", "on" or "off".
func ParseXattrMode(s string) (XattrMode, error) {
	switch s {
	case "auto", "":
		return XattrsAuto, nil
	case "on":
		return XattrsOn, nil
	case "off":
		return XattrsOff, nil
	}
	return 0, fmt.Errorf("xattrs: want auto, on or off, not %q", s)
}

// Options configure a filesystem.
type Options struct {
	// UID and GID, when set, replace every file's owner, so a user can
	// read a backup of files that were not theirs.
	UID, GID *uint32
	// IndexMemory bounds the bytes of decoded indexes kept; least recently
	// used ones are dropped and decoded again when needed.
	IndexMemory int64
	// Refresh is how often, at most, a source's item list is re-read when
	// someone looks at it. Zero means one second.
	Refresh time.Duration
	Xattrs  XattrMode
	Logger  *slog.Logger
	// Select, when set, chooses the Bupstash items shown (see
	// ItemSelector); nil shows every item.
	Select ItemSelector
}

// DefaultIndexMemory is the default bound on decoded indexes.
const DefaultIndexMemory = 512 << 20

// blockSize is st_blksize: programs size their read buffers by it.
const blockSize = 128 << 10

// FS is a read-only filesystem over backup sources. It implements
// fuse.RawFileSystem.
type FS struct {
	fuse.RawFileSystem // ENOSYS for whatever is not overridden

	opts    Options
	log     *slog.Logger
	errs    *errorLog
	started time.Time
	owner   owner // of synthetic nodes

	server *fuse.Server // set by Init, for cache invalidations
	// noOpen: the kernel opens files without asking (see Open).
	noOpen atomic.Bool

	lastFileLookup atomic.Int64 // Unix ns; see statsFiles

	// opens, reads and getxattrs count the requests served, for the
	// tests of the round trips a file costs.
	opens, reads, getxattrs atomic.Int64

	nodes   *nodeTable
	items   itemTable
	trees   *treeCache
	handles handleTable // open directories
	readers *readerTable
	// volatileRead holds the synthetic files whose content may change at
	// any moment that were read since the kernel last asked for their
	// attributes (see GetAttr).
	volatileRead sync.Map // node ID → struct{}
	pushes       chan pushJob
	dropping     sync.Mutex   // see dropPagesAround
	pushPending  atomic.Int64 // pushes queued or running, for tests

	mu       sync.Mutex
	sources  []dirent // top-level directories, sorted by name
	names    map[string]bool
	watchers []func(context.Context) // run while mounted
}

// IndexBytes returns the memory the decoded indexes kept take.
func (f *FS) IndexBytes() int64 { return f.trees.size() }

// addWatcher registers a function run on its own goroutine while the
// filesystem is mounted; its context ends at unmount.
func (f *FS) addWatcher(w func(context.Context)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, w)
}

// New returns an empty filesystem; add sources before mounting it.
func New(opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.IndexMemory <= 0 {
		opts.IndexMemory = DefaultIndexMemory
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	f := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          opts,
		log:           opts.Logger,
		errs:          newErrorLog(opts.Logger),
		started:       time.Now(),
		owner:         owner{uint32(os.Getuid()), uint32(os.Getgid())},
		trees:         newTreeCache(opts.IndexMemory),
		names:         map[string]bool{},
		readers:       newReaderTable(),
		pushes:        make(chan pushJob, pushQueue),
	}
	if opts.UID != nil {
		f.owner.uid = *opts.UID
	}
	if opts.GID != nil {
		f.owner.gid = *opts.GID
	}
	f.nodes = newNodeTable(&staticDir{owner: f.owner, mtime: f.started, entries: f.listSources})
	f.addWatcher(f.closeIdleReaders)
	f.addWatcher(f.pushPages)
	return f
}

func (f *FS) listSources(context.Context) ([]dirent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sources, nil
}

// addSource registers a top-level directory. Names must be unique.
func (f *FS) addSource(name string, n synthNode) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || containsSlashOrNUL(name) {
		return fmt.Errorf("source name %q is not a valid file name", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names[name] {
		return fmt.Errorf("two sources are named %q; give one another name", name)
	}
	f.names[name] = true
	id := f.nodes.intern(name, func() synthNode { return n })
	f.sources = append(f.sources, dirent{name: name, id: id, mode: fuse.S_IFDIR})
	sort.Slice(f.sources, func(i, j int) bool { return f.sources[i].name < f.sources[j].name })
	return nil
}

func containsSlashOrNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' || s[i] == 0 {
			return true
		}
	}
	return false
}

// String names the filesystem for go-fuse.
func (f *FS) String() string { return "backupfs" }
