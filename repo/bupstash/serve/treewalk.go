package serve

import (
	"encoding/binary"
	"fmt"

	"github.com/backupfs/backupfs/repo/bupstash"
	"lukechampine.com/blake3"
)

// nodeEntrySize is an interior node's entry: a leaf count (u64 LE) and a
// child address.
const nodeEntrySize = 8 + addressSize

// maxTreeHeight is the deepest hash tree Bupstash writes.
const maxTreeHeight = 10

// treeWalk mirrors the server's walk of a hash tree (Bupstash's
// htree.rs TreeReader), so that the client knows which chunk comes next
// in a tree-shaped answer: a stack of blocks of entries, the top one
// being read. The root is a block of one entry at the tree's height.
type treeWalk struct {
	stack []walkBlock
}

type walkBlock struct {
	height  uint64
	entries []byte // count ‖ address, nodeEntrySize each
	off     int
}

func newTreeWalk(m bupstash.HTreeMeta) (*treeWalk, error) {
	if m.Height > maxTreeHeight || m.DataChunkCount == 0 || (m.Height == 0 && m.DataChunkCount != 1) {
		return nil, fmt.Errorf("%w: impossible tree shape (height %d, %d leaves)", bupstash.ErrCorrupt, m.Height, m.DataChunkCount)
	}
	root := make([]byte, nodeEntrySize)
	binary.LittleEndian.PutUint64(root, m.DataChunkCount)
	copy(root[8:], m.Address[:])
	return &treeWalk{stack: []walkBlock{{height: m.Height, entries: root}}}, nil
}

// height returns the height of the block being read, false when the walk
// is over.
func (w *treeWalk) height() (uint64, bool) {
	if len(w.stack) == 0 {
		return 0, false
	}
	return w.stack[len(w.stack)-1].height, true
}

// next takes the next entry of the top block, dropping the block when
// that was its last entry.
func (w *treeWalk) next() (height, count uint64, addr bupstash.Address) {
	top := &w.stack[len(w.stack)-1]
	e := top.entries[top.off : top.off+nodeEntrySize]
	height, count = top.height, binary.LittleEndian.Uint64(e)
	copy(addr[:], e[8:])
	top.off += nodeEntrySize
	if top.off == len(top.entries) {
		w.stack = w.stack[:len(w.stack)-1]
	}
	return height, count, addr
}

// push makes a verified node's entries the block being read.
func (w *treeWalk) push(height uint64, entries []byte) {
	w.stack = append(w.stack, walkBlock{height: height, entries: entries})
}

// fastForward skips whole entries of the top block, and of the blocks
// below it as the top ones run out, while they fit in n leaves. It never
// descends. It returns the leaves skipped.
func (w *treeWalk) fastForward(n uint64) uint64 {
	var skipped uint64
	for skipped < n && len(w.stack) > 0 {
		top := &w.stack[len(w.stack)-1]
		c := binary.LittleEndian.Uint64(top.entries[top.off:])
		if skipped+c > n {
			break
		}
		skipped += c
		top.off += nodeEntrySize
		if top.off == len(top.entries) {
			w.stack = w.stack[:len(w.stack)-1]
		}
	}
	return skipped
}

// checkNode checks an interior node as stored (entries and a footer)
// against the address, height and leaf count its parent gave it, and
// returns its entries. Bupstash's own client checks only the address.
func checkNode(b []byte, addr bupstash.Address, height, count uint64) ([]byte, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		// Nodes are never compressed; Bupstash's server refuses to
		// decompress them too.
		return nil, fmt.Errorf("%w: interior node %s is not stored plain", bupstash.ErrCorrupt, addr)
	}
	entries := b[:len(b)-1]
	if len(entries) == 0 || len(entries)%nodeEntrySize != 0 {
		return nil, fmt.Errorf("%w: interior node %s of %d bytes", bupstash.ErrCorrupt, addr, len(b))
	}
	if blake3.Sum256(entries) != [32]byte(addr) {
		return nil, fmt.Errorf("%w: interior node %s does not match its address", bupstash.ErrCorrupt, addr)
	}
	var sum uint64
	for i := 0; i < len(entries); i += nodeEntrySize {
		c := binary.LittleEndian.Uint64(entries[i:])
		if c == 0 || (height == 1 && c != 1) || sum+c < sum {
			return nil, fmt.Errorf("%w: interior node %s: bad leaf count %d at height %d", bupstash.ErrCorrupt, addr, c, height)
		}
		sum += c
	}
	if sum != count {
		return nil, fmt.Errorf("%w: interior node %s holds %d leaves, its parent says %d", bupstash.ErrCorrupt, addr, sum, count)
	}
	return entries, nil
}
