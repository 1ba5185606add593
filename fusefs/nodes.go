package fusefs

import (
	"context"
	"sort"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

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

// logDescriber is a synthetic node that says what it is in log lines,
// as key-value pairs (a Backupy object: its store and path).
type logDescriber interface {
	logAttrs() []any
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
