package fusefs

import (
	"context"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Node IDs: the high 32 bits name an item slot (0 for synthetic nodes); the
// low 32 bits are a record number of the item's index plus one.
const rootID = fuse.FUSE_ROOT_ID

func itemNodeID(slot, record uint32) uint64 { return uint64(slot)<<32 | (uint64(record) + 1) }

func splitNodeID(id uint64) (slot, record uint32, inItem bool) {
	slot = uint32(id >> 32)
	if slot == 0 || uint32(id) == 0 {
		return 0, 0, false
	}
	return slot, uint32(id) - 1, true
}

// Kernel cache lifetimes. Inside an item nothing ever changes; the lists of
// items change as backups are made and removed.
const (
	stableTimeout = time.Hour
	listTimeout   = time.Second
)

// synthNode is a node of the views above the items.
type synthNode interface {
	// attr fills the node's attributes (but not Ino).
	attr(ctx context.Context, a *fuse.Attr) error
}

// synthDir is a synthetic directory.
type synthDir interface {
	synthNode
	// list returns the directory's entries, sorted by name.
	list(ctx context.Context) ([]dirent, error)
}

// synthFile is a synthetic regular file (a view of a Backupy object).
type synthFile interface {
	synthNode
	// open returns a reader for one open of the file and the FOPEN flags
	// to answer with.
	open(ctx context.Context) (fileReader, uint32, error)
}

// fileReader reads one open file.
type fileReader interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size(ctx context.Context) (int64, error)
	Close() error
}

// attrTimer is a synthetic node whose attributes hold for a different time
// than listTimeout.
type attrTimer interface {
	attrTimeout() time.Duration
}

// quickAttr is a synthetic node whose attributes can be expensive (a
// decode pass); quickAttr fills them only if that costs nothing, so that
// listing a directory never waits.
type quickAttr interface {
	quickAttr(a *fuse.Attr) bool
}

// xattrNode is a synthetic node with extended attributes.
type xattrNode interface {
	xattrs() []xattr
}

type xattr struct {
	name  string
	value []byte
}

// synthLink is a synthetic symlink.
type synthLink interface {
	synthNode
	target() string
}

type dirent struct {
	name string
	id   uint64
	mode uint32
}

func lookupDirent(ents []dirent, name string) (dirent, bool) {
	i := sort.Search(len(ents), func(i int) bool { return ents[i].name >= name })
	if i < len(ents) && ents[i].name == name {
		return ents[i], true
	}
	return dirent{}, false
}

// nodeTable holds the synthetic nodes. Nodes are interned by a key that
// describes them (a view path), so that the same view always gets the
// same ID, and they are never forgotten: there are few of them.
type nodeTable struct {
	mu    sync.RWMutex
	nodes map[uint64]synthNode
	byKey map[string]uint64
	next  uint64
}

func newNodeTable(root synthNode) *nodeTable {
	return &nodeTable{
		nodes: map[uint64]synthNode{rootID: root},
		byKey: map[string]uint64{"": rootID},
		next:  rootID,
	}
}

func (t *nodeTable) get(id uint64) (synthNode, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n, ok := t.nodes[id]
	return n, ok
}

// intern returns the ID of the node with the given key, creating it with
// make on first use.
func (t *nodeTable) intern(key string, make func() synthNode) uint64 {
	t.mu.RLock()
	id, ok := t.byKey[key]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.byKey[key]; ok {
		return id
	}
	t.next++
	t.byKey[key] = t.next
	t.nodes[t.next] = make()
	return t.next
}

// owner is who synthetic nodes belong to: the mounting user, or the owner
// the --uid/--gid options force on everything.
type owner struct{ uid, gid uint32 }

// staticDir is a directory with a fixed or computed entry list.
type staticDir struct {
	owner
	mtime   time.Time
	entries func(ctx context.Context) ([]dirent, error)
}

func (d *staticDir) attr(_ context.Context, a *fuse.Attr) error {
	setSynthAttr(a, syscall.S_IFDIR|0o555, d.owner, d.mtime)
	a.Nlink = 2
	return nil
}

func (d *staticDir) list(ctx context.Context) ([]dirent, error) { return d.entries(ctx) }

// symlink is a synthetic symbolic link.
type symlink struct {
	owner
	mtime time.Time
	to    string
}

func (l *symlink) attr(_ context.Context, a *fuse.Attr) error {
	setSynthAttr(a, syscall.S_IFLNK|0o777, l.owner, l.mtime)
	a.Size = uint64(len(l.to))
	return nil
}

func (l *symlink) target() string { return l.to }

func setSynthAttr(a *fuse.Attr, mode uint32, o owner, t time.Time) {
	a.Mode = mode
	a.Nlink = 1
	a.Owner = fuse.Owner{Uid: o.uid, Gid: o.gid}
	sec, nsec := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Atime, a.Mtime, a.Ctime = sec, sec, sec
	a.Atimensec, a.Mtimensec, a.Ctimensec = nsec, nsec, nsec
	a.Blksize = blockSize
}
