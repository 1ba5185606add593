package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Bupstash stores the holes of a sparse file as zeros, with a hint in the
// index that the source had holes. For such files the filesystem answers
// lseek SEEK_DATA/SEEK_HOLE and st_blocks from the file's leaves, so that
// cp --sparse, tar -S and rsync -S recreate the holes:
//
//   - a leaf of nothing but zeros is recognised from its address and its
//     recorded length, without decompressing it (bupstash.File.Extents):
//     a hole of any size costs a few small reads;
//   - the other leaves are data, in which runs of zero 4 KiB blocks are
//     holes too; finding those needs the leaf's bytes, decoded through the
//     chunk cache as a read would.
//
// What is learned is kept per file, leaf by leaf, and only as much is
// learned as a request needs: SEEK_DATA and SEEK_HOLE look at the leaves
// from their offset to the answer. st_blocks needs the whole file; a stat
// works it out when that is cheap (data leaves stored in at most
// statProbeBudget bytes, and decoded in at most statScanBudget bytes to
// find holes inside them), and otherwise claims every block of the data
// leaves, or every block if even that is too costly to find out. The
// answer a stat gives is final, so the kernel may cache it.

const holeGranularity = 4096

const (
	statProbeBudget = 256 << 20
	statScanBudget  = 64 << 20
)

// holeMap is what is known of one sparse file's holes.
type holeMap struct {
	file *bupstash.File

	mu      sync.Mutex
	leaves  []leafHoles // in file order, covering [0, covered)
	covered int64
	blocks  uint64 // st_blocks, once decided
	decided bool
}

// leafHoles is one leaf's part of the file.
type leafHoles struct {
	bupstash.LeafExtent
	scanned bool       // data holds the leaf's data extents
	data    [][2]int64 // file offsets [start, end) of non-zero blocks
}

// holes returns the hole map of a sparse file record.
func (n *itemNode) holes(ctx context.Context, record uint32) (*holeMap, error) {
	if v, ok := n.zeros.Load(record); ok {
		return v.(*holeMap), nil
	}
	f, _, err := n.file(ctx, record)
	if err != nil {
		return nil, err
	}
	v, _ := n.zeros.LoadOrStore(record, &holeMap{file: f})
	return v.(*holeMap), nil
}

// knownSparseBlocks returns a sparse record's st_blocks if a stat has
// decided it.
func (n *itemNode) knownSparseBlocks(record uint32) (uint64, bool) {
	v, ok := n.zeros.Load(record)
	if !ok {
		return 0, false
	}
	h := v.(*holeMap)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blocks, h.decided
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
		if b, err = h.stBlocks(ctx); err == nil {
			return b
		}
	}
	if !errors.Is(err, context.Canceled) {
		n.fs.errs.report(n.fileKey(record), "cannot map holes", err, n.logAttrs(t.Path(record))...)
	}
	return blocks(size)
}

// extend learns the leaves of the file up to (at least) offset off, or to
// the end; stop, when not nil, may end it early (for budgets).
func (h *holeMap) extend(ctx context.Context, off int64, stop func(bupstash.LeafExtent) bool) error {
	if h.covered > off || h.covered >= h.file.Size() {
		return nil
	}
	return h.file.Extents(ctx, h.covered, func(e bupstash.LeafExtent) bool {
		h.leaves = append(h.leaves, leafHoles{LeafExtent: e})
		h.covered = e.Off + e.Len
		if stop != nil && !stop(e) {
			return false
		}
		return h.covered <= off
	})
}

// scan finds the data extents inside a data leaf by reading it.
func (h *holeMap) scan(ctx context.Context, l *leafHoles) error {
	if l.scanned || l.Zero {
		return nil
	}
	r := h.file.NewReader()
	buf := make([]byte, min(l.Len, 1<<20))
	for off := l.Off; off < l.Off+l.Len; {
		n, err := r.ReadAtContext(ctx, buf[:min(int64(len(buf)), l.Off+l.Len-off)], off)
		if err != nil && err != io.EOF {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		// Blocks are aligned to the file, as the kernel's are.
		for b := 0; b < n; {
			blkEnd := min(int(((off+int64(b))/holeGranularity+1)*holeGranularity-off), n)
			if !allZero(buf[b:blkEnd]) {
				start, end := off+int64(b), off+int64(blkEnd)
				if k := len(l.data); k > 0 && l.data[k-1][1] == start {
					l.data[k-1][1] = end
				} else {
					l.data = append(l.data, [2]int64{start, end})
				}
			}
			b = blkEnd
		}
		off += int64(n)
	}
	l.scanned = true
	return nil
}

var zeroBlock [holeGranularity]byte

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// stBlocks decides the file's st_blocks (see the budgets above).
func (h *holeMap) stBlocks(ctx context.Context) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.decided {
		return h.blocks, nil
	}
	var stored int64
	overBudget := false
	err := h.extend(ctx, h.file.Size(), func(e bupstash.LeafExtent) bool {
		if !e.Zero {
			stored += max(e.Stored, e.Len)
		}
		overBudget = stored > statProbeBudget
		return !overBudget
	})
	if err != nil {
		return 0, err
	}
	if overBudget {
		h.blocks, h.decided = blocks(uint64(h.file.Size())), true
		return h.blocks, nil
	}
	var data int64
	for _, l := range h.leaves {
		if !l.Zero {
			data += l.Len
		}
	}
	var n int64
	for i := range h.leaves {
		l := &h.leaves[i]
		switch {
		case l.Zero:
		case data <= statScanBudget || l.scanned:
			if err := h.scan(ctx, l); err != nil {
				return 0, err
			}
			for _, d := range l.data {
				n += d[1] - d[0]
			}
		default:
			n += l.Len
		}
	}
	h.blocks, h.decided = uint64(n+511)/512, true
	return h.blocks, nil
}

// seek answers SEEK_DATA (data true) or SEEK_HOLE from off, looking at
// the leaves from off on until it finds the answer. The end of the file
// counts as a hole; SEEK_DATA past the last data is ENXIO.
func (h *holeMap) seek(ctx context.Context, off int64, data bool) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	size := h.file.Size()
	i := sort.Search(len(h.leaves), func(i int) bool { return h.leaves[i].Off+h.leaves[i].Len > off })
	for {
		if i == len(h.leaves) {
			if h.covered >= size {
				break
			}
			if err := h.extend(ctx, h.covered, nil); err != nil {
				return 0, err
			}
			if i == len(h.leaves) {
				return 0, fmt.Errorf("%w: the leaves of the file end at %d of its %d bytes", bupstash.ErrCorrupt, h.covered, size)
			}
			continue
		}
		l := &h.leaves[i]
		if l.Zero {
			if !data {
				return max(off, l.Off), nil
			}
			i++
			continue
		}
		if err := h.scan(ctx, l); err != nil {
			return 0, err
		}
		if at, ok := seekIn(l, off, data); ok {
			return at, nil
		}
		i++
	}
	if data {
		return 0, syscall.ENXIO
	}
	return size, nil
}

// seekIn looks for data (or a hole) at or after off within a scanned leaf.
func seekIn(l *leafHoles, off int64, data bool) (int64, bool) {
	pos := max(off, l.Off)
	end := l.Off + l.Len
	for _, d := range l.data {
		if d[1] <= pos {
			continue
		}
		if data {
			return max(pos, d[0]), true
		}
		if d[0] > pos {
			return pos, true // a hole before this extent
		}
		pos = d[1]
	}
	if !data && pos < end {
		return pos, true
	}
	return 0, false
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
// kernel handles the other whences itself).
func (f *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	const seekData, seekHole = 3, 4
	h, ok := f.handles.get(in.Fh).(*fileHandle)
	if !ok {
		return fuse.EBADF
	}
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.EINVAL
	}
	ctx := newContext(cancel)
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
		if at, err = m.seek(ctx, off, in.Whence == seekData); err == nil {
			out.Offset = uint64(at)
			return fuse.OK
		}
	}
	if !errors.Is(err, syscall.ENXIO) {
		f.errs.report(h.logKey, "cannot map holes", err, h.attrs...)
	}
	return status(err)
}
