package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Sparse files (saved with Bupstash's sparse hint) answer lseek
// SEEK_DATA/SEEK_HOLE and st_blocks from a bupstash.HoleMap, kept per
// record for the life of the mount.

// holes returns the hole map of a sparse file record.
func (n *itemNode) holes(ctx context.Context, record uint32) (*bupstash.HoleMap, error) {
	if v, ok := n.zeros.Load(record); ok {
		return v.(*bupstash.HoleMap), nil
	}
	f, _, err := n.file(ctx, record)
	if err != nil {
		return nil, err
	}
	v, _ := n.zeros.LoadOrStore(record, bupstash.NewHoleMap(f))
	return v.(*bupstash.HoleMap), nil
}

// knownSparseBlocks returns a sparse record's st_blocks if a stat has
// decided it.
func (n *itemNode) knownSparseBlocks(record uint32) (uint64, bool) {
	v, ok := n.zeros.Load(record)
	if !ok {
		return 0, false
	}
	return v.(*bupstash.HoleMap).KnownBlocks()
}

// sparseBlocks returns st_blocks for a sparse file record. Without the
// key to read data, or when the map cannot be made, every block is
// claimed.
func (n *itemNode) sparseBlocks(ctx context.Context, t *bupstash.Tree, record uint32) uint64 {
	size := t.Attr(record).Size
	if !n.src.repo.Key().CanReadData() {
		return blocks(size)
	}
	h, err := n.holes(ctx, record)
	if err == nil {
		var b uint64
		if b, err = h.Blocks(ctx); err == nil {
			return b
		}
	}
	if !errors.Is(err, context.Canceled) {
		n.fs.errs.report(n.fileKey(record), "cannot map holes", err, n.logAttrs(t.Path(record))...)
	}
	return blocks(size)
}

// isSparse reports whether a record is a file saved with the sparse hint.
func (n *itemNode) isSparse(ctx context.Context, record uint32) (bool, error) {
	if !n.item.HasIndex() {
		return false, nil
	}
	t, err := n.tree(ctx)
	if err != nil {
		return false, err
	}
	return int(record) < t.Len() && t.Attr(record).Sparse, nil
}

// Lseek implements fuse.RawFileSystem for SEEK_DATA and SEEK_HOLE (the
// kernel handles the other whences itself). Like a read, it names the
// node, not an open file (see Open).
func (f *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	const seekData, seekHole = 3, 4
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.EINVAL
	}
	ctx := newContext(cancel)
	h, err := f.reader(ctx, in.NodeId)
	if err != nil {
		return status(err)
	}
	defer f.readers.release(h, f.logCloseError)
	size, err := h.r.Size(ctx)
	if err != nil {
		return status(err)
	}
	off := int64(in.Offset)
	if off < 0 || off >= size {
		return fuse.Status(syscall.ENXIO)
	}
	sparse := false
	if h.item != nil && h.item.src.repo.Key().CanReadData() {
		if sparse, err = h.item.isSparse(ctx, h.record); err != nil {
			return status(err)
		}
	}
	if !sparse {
		if in.Whence == seekData {
			out.Offset = uint64(off)
		} else {
			out.Offset = uint64(size)
		}
		return fuse.OK
	}
	m, err := h.item.holes(ctx, h.record)
	if err == nil {
		var at int64
		if at, err = m.Seek(ctx, off, in.Whence == seekData); err == nil {
			out.Offset = uint64(at)
			return fuse.OK
		}
	}
	if errors.Is(err, bupstash.ErrNoMoreData) {
		return fuse.Status(syscall.ENXIO)
	}
	if !errors.Is(err, syscall.ENXIO) {
		f.errs.report(h.logKey, "cannot map holes", err, h.attrs...)
	}
	return status(err)
}
