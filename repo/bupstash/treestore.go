package bupstash

// A Tree's records and names grow as the index is read, to sizes unknown
// in advance (a million entries take about 150 MB). Growing one slice by
// doubling copied every record about twice and, at each step, held the old
// and the new array at once; with fresh pages costing a page fault each,
// that copying was half the time of loading a large tree. These stores
// grow by fixed blocks instead: nothing is ever copied, and memory is
// taken as it is used.

const (
	nodeBlockShift = 14 // 16384 records (2 MiB) per block
	nodeBlockLen   = 1 << nodeBlockShift
	nameBlockShift = 20 // 1 MiB of names per block
	nameBlockLen   = 1 << nameBlockShift
)

// nodeStore is an append-only sequence of records in blocks.
type nodeStore struct {
	blocks [][]treeNode
	n      int
}

func (s *nodeStore) len() int { return s.n }

// at returns record i, which must exist.
func (s *nodeStore) at(i uint32) *treeNode {
	return &s.blocks[i>>nodeBlockShift][i&(nodeBlockLen-1)]
}

// add appends n and returns its record number.
func (s *nodeStore) add(n treeNode) uint32 {
	if s.n&(nodeBlockLen-1) == 0 {
		s.blocks = append(s.blocks, make([]treeNode, 0, nodeBlockLen))
	}
	b := &s.blocks[len(s.blocks)-1]
	*b = append(*b, n)
	s.n++
	return uint32(s.n - 1)
}

// bytes is the memory the blocks hold.
func (s *nodeStore) bytes() int64 { return int64(len(s.blocks)) * nodeBlockLen * int64(TreeNodeSize) }

// nameArena holds names back to back in blocks; a name never straddles two
// blocks, so each is one contiguous slice. An offset is block<<20 | start.
type nameArena struct {
	blocks [][]byte
}

// add stores name and returns its offset. Names are at most 64 KiB.
func (a *nameArena) add(name []byte) uint32 {
	if len(a.blocks) == 0 || len(a.blocks[len(a.blocks)-1])+len(name) > nameBlockLen {
		a.blocks = append(a.blocks, make([]byte, 0, nameBlockLen))
	}
	i := len(a.blocks) - 1
	off := uint32(i)<<nameBlockShift | uint32(len(a.blocks[i]))
	a.blocks[i] = append(a.blocks[i], name...)
	return off
}

// get returns the name stored at off with length n; it aliases the arena.
func (a *nameArena) get(off uint32, n uint16) []byte {
	b := a.blocks[off>>nameBlockShift]
	start := off & (nameBlockLen - 1)
	end := start + uint32(n)
	return b[start:end:end]
}

func (a *nameArena) bytes() int64 { return int64(len(a.blocks)) * nameBlockLen }
