package bupstash

import (
	"context"
	"sync"

	"github.com/backupfs/backupfs/crypto/blake3"
)

// Bupstash stores the holes of a sparse file as zeros, and a run of zeros
// as leaves of nothing but zeros (the rolling hash never cuts inside one,
// so they are as long as a leaf can be, and identical ones share one
// chunk). Such a leaf can be recognised without decompressing it: its
// plaintext length is recorded in its envelope (see htree.leafLen), and
// its address is the keyed hash of that many zero bytes, which is computed
// once per length. The address is authenticated by the tree, so the answer
// is as trustworthy as a decode.

// A LeafExtent is the part of a file that one leaf of the data tree holds.
type LeafExtent struct {
	Off, Len int64 // within the file
	// Zero reports that the whole leaf is zeros. Leaves that are not are
	// data, though they may hold zeros too.
	Zero bool
	// Stored is the size of the leaf's chunk file, or -1 when the store
	// cannot tell without reading it.
	Stored int64
}

// zeroCandidateRatio is how much better than this a leaf must compress to
// be tested for zeros: zeros compress by over 250:1 with lz4 and far more
// with zstd; data never comes close, and testing a length costs hashing
// that many zeros.
const zeroCandidateRatio = 64

// Extents calls fn for each leaf holding bytes of the file from offset
// off on, in order, until fn returns false. Learning a leaf's length may
// read its chunk file, but no leaf is decompressed (unless its envelope
// does not record its length).
func (f *File) Extents(ctx context.Context, off int64, fn func(LeafExtent) bool) error {
	if off >= f.size {
		return nil
	}
	s := f.sec
	k, leafStart, err := s.locate(ctx, f.base+max(off, 0))
	if err != nil {
		return err
	}
	end := f.base + f.size
	for ; s.sp.first+k <= s.sp.last && leafStart < end; k++ {
		idx := s.sp.first + k
		n, err := s.tree.leafLen(ctx, idx)
		if err != nil {
			return err
		}
		lo, hi := s.contribution(k, n)
		start, stop := max(leafStart, f.base), min(leafStart+hi-lo, end)
		leafStart += hi - lo
		if stop <= start {
			continue
		}
		addr, err := s.tree.leafAddress(ctx, idx)
		if err != nil {
			return err
		}
		e := LeafExtent{Off: start - f.base, Len: stop - start, Stored: s.tree.repo.storedSize(addr)}
		if e.Stored >= 0 && e.Stored*zeroCandidateRatio <= n {
			e.Zero = addr == zeroLeafAddress(&s.tree.hashKey, n)
		}
		if !fn(e) {
			return nil
		}
	}
	return nil
}

// storedSize returns the stored size of a chunk, or -1 if the source
// cannot tell without reading it.
func (r *Repository) storedSize(addr Address) int64 {
	if ss, ok := r.src.(StoredSizer); ok {
		return ss.StoredSize(addr)
	}
	return -1
}

type zeroLeafKey struct {
	hashKey [32]byte
	n       int64
}

// zeroLeaves memoises zeroLeafAddress: a repository has few distinct
// lengths of zero leaves (mostly the maximum leaf size).
var zeroLeaves sync.Map // zeroLeafKey → Address

var zeroBuf [64 << 10]byte

// zeroLeafAddress is the address of a leaf of n zero bytes.
func zeroLeafAddress(hashKey *[32]byte, n int64) Address {
	k := zeroLeafKey{*hashKey, n}
	if a, ok := zeroLeaves.Load(k); ok {
		return a.(Address)
	}
	h := blake3.NewKeyed(hashKey)
	for left := n; left > 0; {
		w := min(left, int64(len(zeroBuf)))
		h.Write(zeroBuf[:w])
		left -= w
	}
	a := Address(h.Sum256())
	zeroLeaves.Store(k, a)
	return a
}
