package fusefs

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// itemNode is one Bupstash item in the mount. Record 0 is the item's
// directory (ids/<id>); for a snapshot the records below it are its index
// records, for a raw item record 1 is its one file.
type itemNode struct {
	fs   *FS
	slot uint32
	src  *bupstashSource
	item *bupstash.Item
	open *bupstash.OpenItem

	removed atomic.Bool // gone from the repository

	root  atomic.Pointer[rootEntry] // the directory's attributes, once known
	load  sync.Mutex                // one index decode at a time per item
	zeros sync.Map                  // record → *holeMap, for sparse files

	// pages are the records whose pages the kernel may hold: those read
	// (or filled ahead of reads), which are dropped when the item is
	// removed. In no-open mode there are no open files to find them by.
	pages recordSet
}

// notePages records that the kernel may cache pages of a record.
func (n *itemNode) notePages(record uint32) { n.pages.add(record) }

// recordSet is a set of record numbers, one bit each.
type recordSet struct {
	mu   sync.Mutex
	bits []uint64
}

func (s *recordSet) add(r uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := int(r / 64)
	if i >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, i+1-len(s.bits))...)
	}
	s.bits[i] |= 1 << (r % 64)
}

func (s *recordSet) has(r uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := int(r / 64)
	return i < len(s.bits) && s.bits[i]&(1<<(r%64)) != 0
}

func (s *recordSet) all() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint32
	for i, w := range s.bits {
		for ; w != 0; w &= w - 1 {
			out = append(out, uint32(i*64+bits.TrailingZeros64(w)))
		}
	}
	return out
}

// rootEntry is what a snapshot's directory shows: the saved root
// directory, the index's "." entry.
type rootEntry struct {
	attr   bupstash.NodeAttr
	xattrs []bupstash.Xattr
}

const rawFileRecord = 1

// item returns the item in slot, or ESTALE once it has been removed from
// the repository: its files then fail rather than go on being read from
// a backup that is gone.
func (f *FS) item(slot uint32) (*itemNode, error) {
	n := f.items.get(slot)
	if n == nil || n.gone() {
		return nil, syscall.ESTALE
	}
	return n, nil
}

// invalidateItem drops the kernel's cached pages of n's files, so that
// their reads reach Read (and fail). It runs on its own goroutine: a
// notification may wait for requests in flight on the same file.
func (f *FS) invalidateItem(n *itemNode) {
	if f.server == nil {
		return
	}
	records := n.pages.all()
	go func() {
		for _, r := range records {
			f.server.InodeNotify(n.id(r), 0, 0)
		}
	}()
}

// gone reports whether the item has been removed from the repository
// (as the source's watcher or its last listing found).
func (n *itemNode) gone() bool { return n.removed.Load() }

// markRemoved records that the item has left the repository, drops its
// decoded index, and asks the kernel to forget what it cached of its open
// files, whose reads then reach this filesystem and fail.
func (n *itemNode) markRemoved() {
	if n.removed.Swap(true) {
		return
	}
	n.fs.trees.remove(n.slot)
	n.fs.log.Info("item removed from the repository; its files now fail with ESTALE", n.logAttrs("")...)
	n.fs.invalidateItem(n)
}

// showsContents reports whether the key may see what is inside the item:
// a list-only key shows items as empty directories.
func (n *itemNode) showsContents() bool { return n.src.repo.Key().CanListContents() }

// tree returns the item's decoded index, decoding it on first use. The
// decode is not abandoned when the request that started it is
// interrupted: others are likely to want the tree next.
func (n *itemNode) tree(ctx context.Context) (*bupstash.Tree, error) {
	if t, ok := n.fs.trees.get(n.slot); ok {
		return t, nil
	}
	n.load.Lock()
	defer n.load.Unlock()
	if t, ok := n.fs.trees.get(n.slot); ok {
		return t, nil
	}
	t, err := n.open.LoadTree(context.WithoutCancel(ctx))
	if err != nil {
		n.fs.errs.report(fmt.Sprintf("index %d", n.slot), "cannot read index", err, n.logAttrs("")...)
		return nil, err
	}
	n.fs.trees.add(n.slot, t)
	return t, nil
}

func (n *itemNode) logAttrs(path string) []any {
	a := []any{"source", n.src.name, "item", n.item.ID.String()}
	if path != "" {
		a = append(a, "path", path)
	}
	return a
}

func (n *itemNode) id(record uint32) uint64 { return itemNodeID(n.slot, record) }

// attr fills the attributes of a record and says how long they hold.
func (n *itemNode) attr(ctx context.Context, record uint32, a *fuse.Attr) (time.Duration, error) {
	ts := n.item.Timestamp
	switch {
	case record == 0 && (!n.item.HasIndex() || !n.showsContents()):
		// A raw item's directory, or one whose index this key cannot
		// read: described by the item.
		setSynthAttr(a, syscall.S_IFDIR|0o555, n.fs.owner, ts)
		a.Nlink = 2
		a.Ino = n.id(0)
		return stableTimeout, nil
	case record == 0:
		r, err := n.rootEntry(ctx)
		if err != nil {
			return 0, err
		}
		n.fillNodeAttr(r.attr, 0, nil, a)
		return stableTimeout, nil
	case !n.item.HasIndex():
		if record != rawFileRecord || !n.src.repo.Key().CanListContents() {
			return 0, syscall.ENOENT
		}
		setSynthAttr(a, syscall.S_IFREG|0o444, n.fs.owner, ts)
		a.Size = n.item.DataSize
		a.Blocks = blocks(a.Size)
		a.Ino = n.id(rawFileRecord)
		return stableTimeout, nil
	}
	t, err := n.tree(ctx)
	if err != nil {
		return 0, err
	}
	if int(record) >= t.Len() {
		return 0, syscall.ENOENT
	}
	na := t.Attr(record)
	n.fillNodeAttr(na, na.InodeRecord, t.Link(record), a)
	if na.Mode&syscall.S_IFMT == syscall.S_IFREG && na.Sparse {
		a.Blocks = n.sparseBlocks(ctx, t, record)
	}
	return stableTimeout, nil
}

// rootEntry returns the attributes of a snapshot's root directory. They
// come from the first entry of the index, so that a stat of ids/<id>
// costs one index leaf rather than the whole index; once known they stay
// for the life of the mount, whatever happens to the decoded tree, so the
// kernel never sees them change.
func (n *itemNode) rootEntry(ctx context.Context) (*rootEntry, error) {
	if r := n.root.Load(); r != nil {
		return r, nil
	}
	if t, ok := n.fs.trees.get(n.slot); ok {
		return n.rootFromTree(t), nil
	}
	a, xattrs, found, err := n.open.RootAttr(ctx)
	switch {
	case err == nil && found:
		return n.setRoot(&rootEntry{attr: a, xattrs: xattrs}), nil
	case err == nil:
		// No "." entry: the root is implied, as the tree builds it.
		t, err := n.tree(ctx)
		if err != nil {
			return nil, err
		}
		return n.rootFromTree(t), nil
	}
	n.fs.errs.report(fmt.Sprintf("index %d", n.slot), "cannot read index", err, n.logAttrs("")...)
	return nil, err
}

// rootFromTree returns the root's attributes, taking them from the
// decoded tree if they are not known yet.
func (n *itemNode) rootFromTree(t *bupstash.Tree) *rootEntry {
	if r := n.root.Load(); r != nil {
		return r
	}
	a, xattrs := t.RootAttr()
	return n.setRoot(&rootEntry{attr: a, xattrs: xattrs})
}

// setRoot publishes the root's attributes; the first to be published
// wins.
func (n *itemNode) setRoot(r *rootEntry) *rootEntry {
	if !n.root.CompareAndSwap(nil, r) {
		return n.root.Load()
	}
	return r
}

// rootKnown reports whether the item directory's attributes cost nothing.
func (n *itemNode) rootKnown() bool {
	return !n.item.HasIndex() || !n.showsContents() || n.root.Load() != nil
}

func (n *itemNode) fileKey(record uint32) string {
	return n.src.name + "/" + n.item.ID.String() + "/" + strconv.FormatUint(uint64(record), 10)
}

// fillAttr fills a tree record's attributes as a listing shows them:
// everything but the st_blocks of a sparse file whose holes are not mapped
// yet, which claims every block until they are (and says so by holding
// for no time).
func (n *itemNode) fillAttr(t *bupstash.Tree, record uint32, a *fuse.Attr) time.Duration {
	if record == 0 {
		n.fillNodeAttr(n.rootFromTree(t).attr, 0, nil, a)
		return stableTimeout
	}
	na := t.Attr(record)
	n.fillNodeAttr(na, na.InodeRecord, t.Link(record), a)
	if na.Mode&syscall.S_IFMT == syscall.S_IFREG && na.Sparse {
		b, ok := n.knownSparseBlocks(record)
		if !ok {
			return 0
		}
		a.Blocks = b
	}
	return stableTimeout
}

// fillNodeAttr fills attributes from a record's; inode is the record
// number the inode number derives from.
func (n *itemNode) fillNodeAttr(na bupstash.NodeAttr, inode uint32, link []byte, a *fuse.Attr) {
	*a = fuse.Attr{
		Ino:       n.id(inode),
		Size:      na.Size,
		Mode:      na.Mode,
		Nlink:     na.Nlink,
		Owner:     fuse.Owner{Uid: na.UID, Gid: na.GID},
		Mtime:     uint64(na.Mtime),
		Mtimensec: na.MtimeNsec,
		Ctime:     uint64(na.Ctime),
		Ctimensec: na.CtimeNsec,
		// Access times are not saved; the modification time is the
		// honest stand-in.
		Atime:     uint64(na.Mtime),
		Atimensec: na.MtimeNsec,
		Blksize:   blockSize,
	}
	if n.fs.opts.UID != nil {
		a.Uid = *n.fs.opts.UID
	}
	if n.fs.opts.GID != nil {
		a.Gid = *n.fs.opts.GID
	}
	switch na.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		a.Blocks = blocks(na.Size)
	case syscall.S_IFLNK:
		a.Size = uint64(len(link))
	case syscall.S_IFCHR, syscall.S_IFBLK:
		a.Rdev = mkdev(na.DevMajor, na.DevMinor)
	}
}

// blocks is st_blocks for a file stored whole: 512-byte units.
func blocks(size uint64) uint64 { return (size + 511) / 512 }

// mkdev encodes a device number as the kernel's 32-bit new_encode_dev.
func mkdev(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

// lookup finds name in a directory record and returns the record to
// present (for hard links, the first name of the group).
func (n *itemNode) lookup(ctx context.Context, dir uint32, name string) (uint32, error) {
	if !n.showsContents() {
		return 0, syscall.ENOENT
	}
	if !n.item.HasIndex() {
		if dir == 0 && name == n.item.FileName() {
			return rawFileRecord, nil
		}
		return 0, syscall.ENOENT
	}
	t, err := n.tree(ctx)
	if err != nil {
		return 0, err
	}
	if int(dir) >= t.Len() || !t.IsDir(dir) {
		return 0, syscall.ENOTDIR
	}
	k, ok := t.Lookup(dir, []byte(name))
	if !ok {
		return 0, syscall.ENOENT
	}
	return t.Attr(k).InodeRecord, nil
}

// isDir reports whether a record is a directory.
func (n *itemNode) isDir(ctx context.Context, record uint32) (bool, error) {
	if record == 0 {
		return true, nil
	}
	if !n.item.HasIndex() {
		return false, nil
	}
	t, err := n.tree(ctx)
	if err != nil {
		return false, err
	}
	return int(record) < t.Len() && t.IsDir(record), nil
}

// readlink returns a symlink record's target.
func (n *itemNode) readlink(ctx context.Context, record uint32) ([]byte, error) {
	if record == 0 || !n.item.HasIndex() {
		return nil, syscall.EINVAL
	}
	t, err := n.tree(ctx)
	if err != nil {
		return nil, err
	}
	if int(record) >= t.Len() || t.Attr(record).Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return t.Link(record), nil
}

// file opens the content of a regular file record.
func (n *itemNode) file(ctx context.Context, record uint32) (*bupstash.File, string, error) {
	if !n.item.HasIndex() {
		if record != rawFileRecord {
			return nil, "", syscall.EISDIR
		}
		f, err := n.open.Data()
		return f, n.item.FileName(), err
	}
	t, err := n.tree(ctx)
	if err != nil {
		return nil, "", err
	}
	if int(record) >= t.Len() {
		return nil, "", syscall.ENOENT
	}
	if t.IsDir(record) {
		return nil, "", syscall.EISDIR
	}
	f, err := t.File(n.open, record)
	return f, t.Path(record), err
}
