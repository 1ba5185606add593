package testrepo

import (
	"encoding/binary"
	"errors"

	"github.com/backupfs/backupfs/repo/bupstash"
	"lukechampine.com/blake3"
)

// treeWriter builds a hash tree bottom-up from leaf addresses, as Bupstash's
// htree::TreeWriter does (docs/bupstash-format.md §7.5): each level
// accumulates (leaf count u64 LE, address) entries; a level is closed into
// an interior node once it holds at least nodeMin bytes and the entry just
// added has an address starting with ff ff, or when one more entry would
// exceed nodeMax. A closed node is stored unencrypted with footer 0 under
// the plain BLAKE3 of its entries, and becomes an entry of the level above.
type treeWriter struct {
	nodeMin, nodeMax int
	levels           [][]byte
	leaves           uint64
	nodes            int
	store            func(addr bupstash.Address, node []byte) error
}

func newTreeWriter(o *Options, store func(bupstash.Address, []byte) error) *treeWriter {
	return &treeWriter{nodeMin: o.NodeMinSize, nodeMax: o.NodeMaxSize, store: store}
}

// addLeaf appends the next leaf.
func (t *treeWriter) addLeaf(addr bupstash.Address) error {
	t.leaves++
	return t.add(0, 1, addr)
}

func (t *treeWriter) add(level int, count uint64, addr bupstash.Address) error {
	if len(t.levels) <= level {
		t.levels = append(t.levels, nil)
	}
	b := binary.LittleEndian.AppendUint64(t.levels[level], count)
	b = append(b, addr[:]...)
	t.levels[level] = b
	if len(b) >= t.nodeMin {
		splitPoint := addr[0] == 0xff && addr[1] == 0xff
		if splitPoint || len(b)+nodeEntrySize > t.nodeMax {
			return t.close(level)
		}
	}
	return nil
}

// close turns a level's entries into a node and adds it to the level above.
func (t *treeWriter) close(level int) error {
	entries := t.levels[level]
	if len(entries) == 0 {
		return nil
	}
	t.levels[level] = nil
	var count uint64
	for i := 0; i < len(entries); i += nodeEntrySize {
		count += binary.LittleEndian.Uint64(entries[i:])
	}
	addr := bupstash.Address(blake3.Sum256(entries))
	if err := t.store(addr, append(entries, 0)); err != nil { // footer 0: never compressed
		return err
	}
	t.nodes++
	return t.add(level+1, count, addr)
}

// finish closes the levels up to a single root entry.
func (t *treeWriter) finish() (treeRoot, error) {
	if len(t.levels) == 0 {
		return treeRoot{}, errors.New("hash tree without leaves")
	}
	for level := 0; level < len(t.levels); level++ {
		if level == len(t.levels)-1 && len(t.levels[level]) == nodeEntrySize {
			// The top level holds one entry: it is the root.
			var root treeRoot
			root.height = uint64(level)
			root.count = binary.LittleEndian.Uint64(t.levels[level])
			copy(root.addr[:], t.levels[level][8:])
			if root.count != t.leaves {
				return treeRoot{}, errors.New("hash tree lost leaves")
			}
			return root, nil
		}
		if err := t.close(level); err != nil {
			return treeRoot{}, err
		}
	}
	return treeRoot{}, errors.New("hash tree has an empty top level")
}
