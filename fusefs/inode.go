package fusefs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Node IDs (which are also the inode numbers stat shows) are computed
// from what they name, so the filesystem keeps no state per inode: a
// million-entry snapshot costs nothing beyond its decoded index however
// many of its files the kernel looks up, and the kernel's FORGETs need no
// answer.
//
//	 63                              32 31                               0
//	+----------------------------------+----------------------------------+
//	|             item slot            |          record + 1              |
//	+----------------------------------+----------------------------------+
//
//	slot 0       a synthetic node (the root, a source, ids/, by-time/, a
//	             link, a Backupy file…), numbered in order of first use
//	             from 1 (the root, FUSE_ROOT_ID) by nodeTable
//	slot n > 0   the item given slot n by itemTable: slots are handed out
//	             as items are first seen and never reused within a mount,
//	             so an ID the kernel still holds for a removed item can
//	             never name another item (it fails with ESTALE)
//	record       in a snapshot, the record number of its decoded index
//	             (bupstash.Tree): 0 is the item's directory; hard links
//	             share the first record of their group (NodeAttr.
//	             InodeRecord); in a raw item, 0 is its directory and 1 its
//	             one file (rawFileRecord)
//
// The low half is record + 1 so that no item node has a zero low half,
// which splitNodeID takes as "synthetic".

const rootID = fuse.FUSE_ROOT_ID

// itemNodeID is the ID of a record of the item in slot.
func itemNodeID(slot, record uint32) uint64 { return uint64(slot)<<32 | (uint64(record) + 1) }

// splitNodeID splits an item node's ID; inItem is false for synthetic
// nodes.
func splitNodeID(id uint64) (slot, record uint32, inItem bool) {
	slot = uint32(id >> 32)
	if slot == 0 || uint32(id) == 0 {
		return 0, 0, false
	}
	return slot, uint32(id) - 1, true
}

// nodeTable holds the synthetic nodes. Nodes are interned by a key that
// describes them (a view path), so that the same view always gets the
// same ID, and they are never forgotten: there are few of them.
type nodeTable struct {
	mu    sync.RWMutex
	nodes map[uint64]synthNode
	byKey map[string]uint64
	next  uint64
}

func newNodeTable(root synthNode) *nodeTable {
	return &nodeTable{
		nodes: map[uint64]synthNode{rootID: root},
		byKey: map[string]uint64{"": rootID},
		next:  rootID,
	}
}

func (t *nodeTable) get(id uint64) (synthNode, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n, ok := t.nodes[id]
	return n, ok
}

// intern returns the ID of the node with the given key, creating it with
// make on first use.
func (t *nodeTable) intern(key string, make func() synthNode) uint64 {
	t.mu.RLock()
	id, ok := t.byKey[key]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.byKey[key]; ok {
		return id
	}
	t.next++
	t.byKey[key] = t.next
	t.nodes[t.next] = make()
	return t.next
}

// itemTable gives every item seen a slot, the high half of its node IDs.
// Slots are never reused within a mount, so a node ID the kernel still
// holds for a removed item can never name another one.
type itemTable struct {
	mu    sync.RWMutex
	slots []*itemNode
	byKey map[string]*itemNode
}

func (t *itemTable) get(slot uint32) *itemNode {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if slot == 0 || int(slot) > len(t.slots) {
		return nil
	}
	return t.slots[slot-1]
}

func (t *itemTable) intern(key string, make func(slot uint32) *itemNode) *itemNode {
	t.mu.RLock()
	n := t.byKey[key]
	t.mu.RUnlock()
	if n != nil {
		return n
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.byKey[key]; n != nil {
		return n
	}
	if t.byKey == nil {
		t.byKey = map[string]*itemNode{}
	}
	n = make(uint32(len(t.slots) + 1))
	t.slots = append(t.slots, n)
	t.byKey[key] = n
	return n
}
