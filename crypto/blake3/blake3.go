// Package blake3 hashes with BLAKE3 on the calling goroutine.
//
// lukechampine.com/blake3's Hasher splits every large Write across
// goroutines, one per 16 KiB. backupfs already decodes a leaf per core, so
// that fan-out only adds scheduling: about an eighth of the CPU time of a
// sequential read went to creating and parking those goroutines. This
// Hasher drives the same SIMD kernels (the library's guts package) 16
// chunks at a time on one goroutine, and produces identical digests.
package blake3

import (
	"encoding/binary"
	"math/bits"

	"lukechampine.com/blake3/guts"
)

// batch is what one SIMD kernel call hashes: 16 chunks of 1 KiB.
const batch = guts.MaxSIMD * guts.ChunkSize

// batchHeight is the height of the subtree a full batch forms.
const batchHeight = 4 // 2^4 = MaxSIMD chunks

// Hasher computes a 32-byte BLAKE3 digest, plain or keyed. The zero value
// is not usable; call New or NewKeyed.
type Hasher struct {
	key   [8]uint32
	flags uint32
	// stack holds the chaining values of complete subtrees, one per
	// height; chunks says which heights are occupied (bit i: 2^i chunks).
	stack  [64][8]uint32
	chunks uint64
	buf    [batch]byte
	buflen int
}

// New returns a Hasher for plain BLAKE3.
func New() *Hasher {
	return &Hasher{key: guts.IV}
}

// NewKeyed returns a Hasher for BLAKE3 keyed with key.
func NewKeyed(key *[32]byte) *Hasher {
	h := &Hasher{flags: guts.FlagKeyedHash}
	for i := range h.key {
		h.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	return h
}

// Sum256 returns the plain BLAKE3 digest of b.
func Sum256(b []byte) [32]byte {
	h := New()
	h.Write(b)
	return h.Sum256()
}

// SumKeyed returns the keyed BLAKE3 digest of b.
func SumKeyed(key *[32]byte, b []byte) [32]byte {
	h := NewKeyed(key)
	h.Write(b)
	return h.Sum256()
}

// Write adds p to the hashed input. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// Whole batches straight from p, as long as more input follows
		// them: the last chunk must stay buffered for Sum.
		if h.buflen == 0 && len(p) > batch {
			h.push(guts.CompressBuffer((*[batch]byte)(p[:batch]), batch, &h.key, h.chunks, h.flags))
			p = p[batch:]
			continue
		}
		c := copy(h.buf[h.buflen:], p)
		h.buflen += c
		p = p[c:]
		if h.buflen == batch && len(p) > 0 {
			h.push(guts.CompressBuffer(&h.buf, batch, &h.key, h.chunks, h.flags))
			h.buflen = 0
		}
	}
	return n, nil
}

// push adds the root of a full batch to the stack, merging equal-height
// subtrees as BLAKE3's tree requires.
func (h *Hasher) push(n guts.Node) {
	h.pushCV(guts.ChainingValue(n), batchHeight)
}

func (h *Hasher) pushCV(cv [8]uint32, height int) {
	i := height
	for h.chunks&(1<<i) != 0 {
		cv = guts.ChainingValue(guts.ParentNode(h.stack[i], cv, &h.key, h.flags))
		i++
	}
	h.stack[i] = cv
	h.chunks += 1 << height
}

// Sum256 returns the digest of everything written. It does not change the
// Hasher's state, so writing may continue.
func (h *Hasher) Sum256() [32]byte {
	c := *h // the final chunks are folded into a copy
	// Every buffered chunk but the last joins the stack one by one; the
	// last one ends the tree, merged with the stack into the root.
	last := 0
	if c.buflen > 0 {
		last = (c.buflen - 1) / guts.ChunkSize * guts.ChunkSize
	}
	for off := 0; off < last; off += guts.ChunkSize {
		c.pushCV(guts.ChainingValue(guts.CompressChunk(c.buf[off:off+guts.ChunkSize], &c.key, c.chunks, c.flags)), 0)
	}
	n := guts.CompressChunk(c.buf[last:c.buflen], &c.key, c.chunks, c.flags)
	for i := bits.TrailingZeros64(c.chunks); i < bits.Len64(c.chunks); i++ {
		if c.chunks&(1<<i) != 0 {
			n = guts.ParentNode(c.stack[i], guts.ChainingValue(n), &c.key, c.flags)
		}
	}
	n.Flags |= guts.FlagRoot
	out := guts.WordsToBytes(guts.CompressNode(n))
	var sum [32]byte
	copy(sum[:], out[:32])
	return sum
}

// Reset forgets everything written, keeping the key.
func (h *Hasher) Reset() {
	h.chunks = 0
	h.buflen = 0
}
