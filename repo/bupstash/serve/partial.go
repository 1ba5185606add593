package serve

import (
	"fmt"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Cursor is a partial-data session (RequestData{partial: true}) on one
// item's data tree: it fetches single leaves, moving forward only. The
// server sends, before each leaf, the interior nodes on the path to it
// that it has not sent yet in this session. This is the only way to
// fetch chunks from Bupstash 0.10.x servers, and works on every server.
//
// Each request is a range of one leaf: servers 0.10.x and 0.11.0 fail on
// a range that spans two bottom nodes (an integer underflow, fixed in
// 0.11.1), which a single leaf never does. Requests may be pipelined.
type Cursor struct {
	c    *Conn
	id   bupstash.Xid
	meta bupstash.HTreeMeta

	// Writer side, under c.wmu.
	next    uint64 // the lowest leaf that may be asked for next
	started bool
	ended   bool

	// Reader side: the mirror of the server's walk, touched only by the
	// answers' recv, one at a time, in order.
	walk *treeWalk
	cur  uint64 // the next leaf the walk would yield
}

// NewCursor prepares a partial-data session on item id, whose data tree
// is meta; nothing is sent until the first leaf is asked for. The
// connection must not be in another session.
func (c *Conn) NewCursor(id bupstash.Xid, meta bupstash.HTreeMeta) (*Cursor, error) {
	walk, err := newTreeWalk(meta)
	if err != nil {
		return nil, err
	}
	return &Cursor{c: c, id: id, meta: meta, walk: walk}, nil
}

// Next returns the lowest leaf index the cursor can still fetch.
func (cu *Cursor) Next() uint64 {
	cu.c.wmu.Lock()
	defer cu.c.wmu.Unlock()
	return cu.next
}

// Leaf asks for leaf idx, which must not be behind the cursor. The call
// yields the leaf, in a buffer from pool; onNode (may be nil) gets each
// interior node the server sends on the way, on the connection's reader.
func (cu *Cursor) Leaf(idx uint64, pool *cache.BufferPool, onNode func(Chunk)) (*ChunkCall, error) {
	c := cu.c
	if idx >= cu.meta.DataChunkCount {
		return nil, fmt.Errorf("leaf %d is past the tree's %d leaves", idx, cu.meta.DataChunkCount)
	}
	cc := &ChunkCall{}
	cc.ex = newExchange(func(pr *packetReader) error {
		ch, err := cu.walkTo(pr, idx, pool, onNode)
		if err != nil {
			return err
		}
		cc.chunks = []Chunk{ch}
		return nil
	}, releaseChunks(pool, &cc.chunks))

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if cu.ended {
		return nil, fmt.Errorf("cursor already ended")
	}
	if idx < cu.next {
		return nil, fmt.Errorf("%w: leaf %d, cursor at %d", ErrBehindCursor, idx, cu.next)
	}
	c.mu.Lock()
	err := c.usable()
	if err == nil {
		switch {
		case !cu.started && c.session != sessionNone:
			err = fmt.Errorf("a %v session is in progress", c.session)
		case cu.started && c.cursor != cu:
			err = fmt.Errorf("cursor no longer current")
		}
	}
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	reqs := []request{rangesRequest([]leafRange{{idx, idx}})}
	if !cu.started {
		reqs = append([]request{dataRequest(cu.id, true)}, reqs...)
		cu.started = true
		c.session, c.cursor = sessionPartial, cu
	}
	cu.next = idx + 1
	c.enqueueLocked(cc.ex)
	c.mu.Unlock()
	if err := c.writeLocked(reqs...); err != nil {
		return nil, err
	}
	return cc, nil
}

// End leaves the session (an empty range list, which has no answer); the
// connection can then take other requests.
func (cu *Cursor) End() error {
	c := cu.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if cu.ended {
		return nil
	}
	cu.ended = true
	if !cu.started {
		return nil
	}
	c.mu.Lock()
	err := c.usable()
	if c.cursor == cu {
		c.session, c.cursor = sessionNone, nil
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.writeLocked(rangesRequest(nil))
}

// walkTo reads the answer to the range [idx, idx] (Bupstash's server.rs
// send_partial_htree): the nodes that bring the walk down to leaf idx,
// then that leaf.
func (cu *Cursor) walkTo(pr *packetReader, idx uint64, pool *cache.BufferPool, onNode func(Chunk)) (Chunk, error) {
	w := cu.walk
	for {
		if cu.cur < idx {
			cu.cur += w.fastForward(idx - cu.cur)
		}
		h, ok := w.height()
		if !ok {
			return Chunk{}, fmt.Errorf("%w: tree ended before leaf %d", bupstash.ErrCorrupt, idx)
		}
		if h == 0 && cu.cur >= idx {
			break
		}
		height, count, addr := w.next()
		b, err := pr.chunk(addr, nil)
		if err != nil {
			return Chunk{}, err
		}
		entries, err := checkNode(b, addr, height, count)
		if err != nil {
			return Chunk{}, err
		}
		w.push(height-1, entries)
		if onNode != nil {
			onNode(Chunk{Addr: addr, Height: height, Leaf: cu.cur, Data: b})
		}
	}
	_, _, addr := w.next()
	b, err := pr.chunk(addr, pool)
	if err != nil {
		return Chunk{}, err
	}
	cu.cur++
	return Chunk{Addr: addr, Leaf: idx, Data: b}, nil
}
