package fs

import (
	"context"
	"fmt"
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

	removed atomic.Bool // gone from the repository since it was listed

	load  sync.Mutex // one index decode at a time per item
	zeros sync.Map   // record → *zeroMapEntry, for sparse files
}

const rawFileRecord = 1

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
	case record == 0:
		// The item directory: described by the item, so that listing
		// ids/ never decodes an index.
		setSynthAttr(a, syscall.S_IFDIR|0o555, n.fs.owner, ts)
		a.Nlink = 2
		a.Ino = n.id(0)
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
	if na := t.Attr(record); na.Sparse && na.Size <= syncScanLimit && n.src.repo.Key().CanReadData() {
		if _, ok := n.knownZeroMap(na.Inode); !ok {
			if _, err := n.zeroMap(ctx, na.Inode); err != nil {
				n.fs.errs.report(n.fileKey(na.Inode), "cannot map holes", err, n.logAttrs(t.Path(record))...)
			}
		}
	}
	return n.fillAttr(t, record, a), nil
}

func (n *itemNode) fileKey(record uint32) string {
	return n.src.name + "/" + n.item.ID.String() + "/" + strconv.FormatUint(uint64(record), 10)
}

// fillAttr fills a tree record's attributes and says how long they hold:
// for ever, except for a sparse file whose holes are not mapped yet.
func (n *itemNode) fillAttr(t *bupstash.Tree, record uint32, a *fuse.Attr) time.Duration {
	na := t.Attr(record)
	*a = fuse.Attr{
		Ino:       n.id(na.Inode),
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
		if na.Sparse {
			z, ok := n.knownZeroMap(na.Inode)
			if !ok {
				return 0
			}
			a.Blocks = z.blocks()
		}
	case syscall.S_IFLNK:
		a.Size = uint64(len(t.Link(record)))
	case syscall.S_IFCHR, syscall.S_IFBLK:
		a.Rdev = mkdev(na.DevMajor, na.DevMinor)
	}
	return stableTimeout
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
	return t.Attr(k).Inode, nil
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
