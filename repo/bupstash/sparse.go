package bupstash

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
)

// Bupstash stores the holes of a sparse file as zeros, with a hint in the
// index that the source had holes. For such files a HoleMap answers
// lseek SEEK_DATA/SEEK_HOLE and st_blocks from the file's leaves, so that
// cp --sparse, tar -S and rsync -S recreate the holes:
//
//   - a leaf of nothing but zeros is recognised from its address and its
//     recorded length, without decompressing it (File.Extents):
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

// NewHoleMap returns a map of f's holes, empty until asked.
func NewHoleMap(f *File) *HoleMap { return &HoleMap{file: f} }

// KnownBlocks returns st_blocks if Blocks has decided it.
func (h *HoleMap) KnownBlocks() (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blocks, h.decided
}

const holeGranularity = 4096

const (
	statProbeBudget = 256 << 20
	statScanBudget  = 64 << 20
)

// A HoleMap is what is known of one sparse file's holes. It learns only
// as much as each question needs, and keeps it. It is safe for
// concurrent use.
type HoleMap struct {
	file *File

	mu      sync.Mutex
	leaves  []leafHoles // in file order, covering [0, covered)
	covered int64
	blocks  uint64 // st_blocks, once decided
	decided bool
}

// leafHoles is one leaf's part of the file.
type leafHoles struct {
	LeafExtent
	scanned bool       // data holds the leaf's data extents
	data    [][2]int64 // file offsets [start, end) of non-zero blocks
}

// extend learns the leaves of the file up to (at least) offset off, or to
// the end; stop, when not nil, may end it early (for budgets).
func (h *HoleMap) extend(ctx context.Context, off int64, stop func(LeafExtent) bool) error {
	if h.covered > off || h.covered >= h.file.Size() {
		return nil
	}
	return h.file.Extents(ctx, h.covered, func(e LeafExtent) bool {
		h.leaves = append(h.leaves, leafHoles{LeafExtent: e})
		h.covered = e.Off + e.Len
		if stop != nil && !stop(e) {
			return false
		}
		return h.covered <= off
	})
}

// scan finds the data extents inside a data leaf by reading it.
func (h *HoleMap) scan(ctx context.Context, l *leafHoles) error {
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

// Blocks returns the file's st_blocks: the 512-byte blocks its data
// would take with its holes left out (see the budgets above). The answer
// is final.
func (h *HoleMap) Blocks(ctx context.Context) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.decided {
		return h.blocks, nil
	}
	var stored int64
	overBudget := false
	err := h.extend(ctx, h.file.Size(), func(e LeafExtent) bool {
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
		h.blocks, h.decided = (uint64(h.file.Size())+511)/512, true
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

// Seek answers SEEK_DATA (data true) or SEEK_HOLE from off, looking at
// the leaves from off on until it finds the answer. The end of the file
// counts as a hole; SEEK_DATA past the last data is ErrNoMoreData.
func (h *HoleMap) Seek(ctx context.Context, off int64, data bool) (int64, error) {
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
				return 0, fmt.Errorf("%w: the leaves of the file end at %d of its %d bytes", ErrCorrupt, h.covered, size)
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
		return 0, ErrNoMoreData
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
