package fusefs

import (
	"sync"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// treeCache keeps decoded indexes, bounded by their estimated size. An
// evicted tree is decoded again on its next use; its record numbers, and
// so the node IDs the kernel holds, come out the same.
type treeCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	lru   *simplelru.LRU[uint32, *bupstash.Tree]
}

func newTreeCache(max int64) *treeCache {
	c := &treeCache{max: max}
	lru, err := simplelru.NewLRU[uint32, *bupstash.Tree](1<<31-1, func(_ uint32, t *bupstash.Tree) {
		c.bytes -= t.Bytes()
	})
	if err != nil {
		panic(err)
	}
	c.lru = lru
	return c
}

func (c *treeCache) get(slot uint32) (*bupstash.Tree, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(slot)
}

// add keeps t, evicting the least recently used trees beyond the bound.
// The newest tree stays even if it alone exceeds the bound: it is in use.
func (c *treeCache) add(slot uint32, t *bupstash.Tree) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.lru.Peek(slot); ok {
		c.bytes -= old.Bytes()
	}
	c.lru.Add(slot, t)
	c.bytes += t.Bytes()
	for c.bytes > c.max && c.lru.Len() > 1 {
		c.lru.RemoveOldest()
	}
}

func (c *treeCache) remove(slot uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(slot)
}

// size returns the bytes of the trees kept.
func (c *treeCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
