package testrepo

import (
	"encoding/binary"

	"lukechampine.com/blake3"
)

// The chunker cuts a byte stream into leaves with a gear rolling hash, as
// Bupstash does: a cut falls after a byte where the top SplitBits bits of
// the hash are zero, once the leaf holds at least the minimum size, and a
// leaf is cut unconditionally at the maximum size. The hash depends only on
// the last 32 bytes, so cuts are content-defined and bytes more than 32
// before the minimum need not be hashed at all. The gear table is derived
// from the key's rollsum key, so boundaries are deterministic per key.
// (Bupstash's exact table and interleaving differ; the reader cannot tell,
// since leaf boundaries are recorded nowhere but in the cursors.)

// gearWindow is the number of trailing bytes the 32-bit gear hash depends on.
const gearWindow = 32

// gearTable derives the 256 gear values from the rollsum key.
func gearTable(rollsumKey [32]byte) *[256]uint32 {
	var raw [1024]byte
	xof := blake3.New(32, rollsumKey[:]).XOF()
	if _, err := xof.Read(raw[:]); err != nil {
		panic(err) // the XOF never fails
	}
	var t [256]uint32
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return &t
}

// chunker accumulates one leaf at a time.
type chunker struct {
	min, max int
	mask     uint32
	tab      *[256]uint32
	h        uint32
	buf      []byte // the leaf being filled; nil between leaves
	bufs     *bufPool
}

func newChunker(o *Options, tab *[256]uint32, bufs *bufPool) *chunker {
	return &chunker{
		min:  o.MinChunkSize,
		max:  o.MaxChunkSize,
		mask: ^uint32(0) << (32 - o.SplitBits),
		tab:  tab,
		bufs: bufs,
	}
}

// buffered returns the number of bytes in the unfinished leaf: the offset
// in it where the next byte will land.
func (c *chunker) buffered() int { return len(c.buf) }

// add consumes a prefix of p and returns how many bytes it took and, when
// they completed a leaf, the leaf. Callers loop until p is consumed.
func (c *chunker) add(p []byte) (int, []byte) {
	if c.buf == nil {
		c.buf = c.bufs.get()
	}
	if room := c.max - len(c.buf); len(p) > room {
		p = p[:room]
	}
	taken := 0
	// Bytes that end more than a window before the minimum size cannot
	// influence a cut: copy them without hashing.
	if skip := c.min - gearWindow - len(c.buf); skip > 0 {
		k := min(skip, len(p))
		c.buf = append(c.buf, p[:k]...)
		taken, p = k, p[k:]
	}
	h, tab, mask := c.h, c.tab, c.mask
	for i, b := range p {
		h = h<<1 + tab[b]
		if h&mask == 0 && len(c.buf)+i+1 >= c.min {
			c.h = h
			c.buf = append(c.buf, p[:i+1]...)
			return taken + i + 1, c.take()
		}
	}
	c.h = h
	c.buf = append(c.buf, p...)
	taken += len(p)
	if len(c.buf) == c.max {
		return taken, c.take()
	}
	return taken, nil
}

func (c *chunker) take() []byte {
	b := c.buf
	c.buf = nil
	return b
}

// forceSplit ends the current leaf, returning it unless it is empty, and
// resets the hash (Bupstash's force_split, used at the end of each batch
// and of each stream).
func (c *chunker) forceSplit() []byte {
	c.h = 0
	b := c.take()
	if len(b) == 0 {
		c.bufs.put(b)
		return nil
	}
	return b
}

// bufPool recycles leaf buffers, all of the maximum leaf size plus a
// byte for the compression footer, so that a leaf never needs to be moved
// while it grows. It is a bounded free list rather than a sync.Pool, which
// the garbage collector empties: once warmed up, writing allocates almost
// nothing, and the buffers held are those of the leaves in flight plus a
// few spares. (Pages of a buffer that no leaf has filled are never touched
// and cost no memory.)
type bufPool struct {
	size int
	free chan []byte
}

func newBufPool(maxLeaf, spares int) *bufPool {
	return &bufPool{size: maxLeaf + 1, free: make(chan []byte, spares)}
}

// get returns an empty leaf buffer.
func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return make([]byte, 0, p.size)
	}
}

// put recycles a leaf buffer; buffers of other sizes are dropped.
func (p *bufPool) put(b []byte) {
	if cap(b) != p.size {
		return
	}
	select {
	case p.free <- b[:0]:
	default: // enough spares: let this one go
	}
}

// scratchPool keeps buffers between items: the sealing workers'
// growable ones, and the fixed-size ones contents are read into.
type scratchPool struct {
	size int // of new buffers; 0 for growable ones
	free chan []byte
}

func newScratchPool(size, n int) *scratchPool {
	return &scratchPool{size: size, free: make(chan []byte, n)}
}

func (p *scratchPool) get() []byte {
	select {
	case b := <-p.free:
		return b[:cap(b)]
	default:
		return make([]byte, p.size)
	}
}

func (p *scratchPool) put(b []byte) {
	select {
	case p.free <- b[:0]:
	default:
	}
}
