package fs

import (
	"bytes"
	"context"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Bupstash stores the zeros of a sparse file like any other bytes, with a
// hint that the source had holes. For such files the filesystem finds
// where the data is (4 KiB blocks that are not all zero) by reading the
// file once, and then answers lseek SEEK_DATA/SEEK_HOLE and st_blocks from
// that map, so cp --sparse, tar -S and rsync -S recreate the holes.
//
// Until a file's map is known its st_blocks claims every block and the
// kernel is told not to cache its attributes; opening the file (or a stat,
// for files up to syncScanLimit) computes the map, after which st_blocks
// is exact. GNU cp decides whether to look for holes from the fstat right
// after open, so copies come out sparse.

const holeGranularity = 4096

// zeroMap lists a file's data extents; everything else reads as zeros.
type zeroMap struct {
	size int64
	data [][2]int64 // sorted, disjoint [start, end)
}

// zeroMapEntry computes a map once, however many callers want it.
type zeroMapEntry struct {
	once sync.Once
	z    atomic.Pointer[zeroMap] // published for getattr once computed
	err  error
}

// blocks is st_blocks: the data extents in 512-byte units.
func (z *zeroMap) blocks() uint64 {
	var n int64
	for _, e := range z.data {
		n += e[1] - e[0]
	}
	return uint64(n+511) / 512
}

// seekData returns the first data offset at or after off.
func (z *zeroMap) seekData(off int64) (int64, bool) {
	i := sort.Search(len(z.data), func(i int) bool { return z.data[i][1] > off })
	if i == len(z.data) {
		return 0, false
	}
	return max(off, z.data[i][0]), true
}

// seekHole returns the first hole offset at or after off; the end of the
// file counts as a hole.
func (z *zeroMap) seekHole(off int64) int64 {
	i := sort.Search(len(z.data), func(i int) bool { return z.data[i][1] > off })
	if i == len(z.data) || z.data[i][0] > off {
		return off
	}
	return z.data[i][1]
}

var zeroBlock [holeGranularity]byte

// scanZeros reads a file and maps its data extents.
func scanZeros(ctx context.Context, f *bupstash.File) (*zeroMap, error) {
	z := &zeroMap{size: f.Size()}
	r := f.NewReader()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < z.size; {
		n, err := r.ReadAtContext(ctx, buf, off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if n == 0 {
			return nil, io.ErrUnexpectedEOF
		}
		for b := 0; b < n; b += holeGranularity {
			blk := buf[b:min(b+holeGranularity, n)]
			if bytes.Equal(blk, zeroBlock[:len(blk)]) {
				continue
			}
			start, end := off+int64(b), off+int64(b+len(blk))
			if k := len(z.data); k > 0 && z.data[k-1][1] == start {
				z.data[k-1][1] = end
			} else {
				z.data = append(z.data, [2]int64{start, end})
			}
		}
		off += int64(n)
	}
	return z, nil
}

// syncScanLimit is the largest sparse file whose hole map a stat computes
// on the spot; larger ones get theirs when opened.
const syncScanLimit = 64 << 20

// zeroMap returns the data map of a sparse file record, computing it once.
// The computation outlives an interrupted request: the next one would
// start over otherwise.
func (n *itemNode) zeroMap(ctx context.Context, record uint32) (*zeroMap, error) {
	v, _ := n.zeros.LoadOrStore(record, &zeroMapEntry{})
	e := v.(*zeroMapEntry)
	e.once.Do(func() {
		var f *bupstash.File
		if f, _, e.err = n.file(ctx, record); e.err == nil {
			var z *zeroMap
			z, e.err = scanZeros(context.WithoutCancel(ctx), f)
			e.z.Store(z)
		}
	})
	if e.err != nil {
		n.zeros.CompareAndDelete(record, e) // let a later call retry
		return nil, e.err
	}
	return e.z.Load(), nil
}

// knownZeroMap returns a record's map if it has been computed.
func (n *itemNode) knownZeroMap(record uint32) (*zeroMap, bool) {
	v, ok := n.zeros.Load(record)
	if !ok {
		return nil, false
	}
	z := v.(*zeroMapEntry).z.Load()
	return z, z != nil
}

// isSparse reports whether a record is a file saved with the sparse hint.
func (n *itemNode) isSparse(record uint32) bool {
	if !n.item.HasIndex() {
		return false
	}
	t, ok := n.fs.trees.get(n.slot)
	return ok && int(record) < t.Len() && t.Attr(record).Sparse
}

// Lseek implements fuse.RawFileSystem for SEEK_DATA and SEEK_HOLE (the
// kernel handles the other whences itself).
func (f *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	const seekData, seekHole = 3, 4
	h, ok := f.handles.get(in.Fh).(*fileHandle)
	if !ok {
		return fuse.EBADF
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
	if h.item == nil || !h.item.isSparse(h.record) {
		switch in.Whence {
		case seekData:
			out.Offset = uint64(off)
		case seekHole:
			out.Offset = uint64(size)
		default:
			return fuse.EINVAL
		}
		return fuse.OK
	}
	z, err := h.item.zeroMap(ctx, h.record)
	if err != nil {
		f.errs.report(h.logKey, "cannot map holes", err, h.attrs...)
		return status(err)
	}
	switch in.Whence {
	case seekData:
		d, ok := z.seekData(off)
		if !ok {
			return fuse.Status(syscall.ENXIO)
		}
		out.Offset = uint64(d)
	case seekHole:
		out.Offset = uint64(z.seekHole(off))
	default:
		return fuse.EINVAL
	}
	return fuse.OK
}
