package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Chunk is a chunk as the server sent it: the stored bytes, unverified
// for leaves. Interior nodes received in tree walks have been checked
// against their address, height and leaf count.
type Chunk struct {
	Addr   bupstash.Address
	Height uint64 // 0 for a leaf
	Leaf   uint64 // a leaf's index in its tree; for a node, the first leaf under it
	Data   []byte // exactly as stored; a node's entries and its footer
}

// open sends TOpenRepository and reads the server's clock.
func (c *Conn) open(ctx context.Context) error {
	var millis uint64
	ex := newExchange(func(pr *packetReader) error {
		p, err := pr.expectPayload(msgOpenReply, 8)
		if err != nil {
			return err
		}
		millis, err = decodeOpenReply(p)
		return err
	}, nil)
	if err := c.do(ctx, ex, openRequest(c.proto)); err != nil {
		return err
	}
	c.serverTime = time.UnixMilli(int64(millis))
	return nil
}

// SyncOpLog asks for the operation log: all of it (after nil), or what
// follows the operation that starts at byte *after when the log's gc
// generation is still *gen. It returns the generation the server has
// and the operations it sent; if that generation differs from *gen, or
// after was nil, they are the whole log from its start.
func (c *Conn) SyncOpLog(ctx context.Context, after *uint64, gen *bupstash.Xid) (bupstash.Xid, []rawOp, error) {
	var g bupstash.Xid
	var ops []rawOp
	ex := newExchange(func(pr *packetReader) (err error) {
		g, ops, err = recvOpLog(pr)
		return err
	}, nil)
	if err := c.do(ctx, ex, opLogSyncRequest(after, gen)); err != nil {
		return g, nil, err
	}
	return g, ops, nil
}

// recvOpLog reads the answer to TRequestOpLogSync: the generation, then
// batches of operations up to an empty one.
func recvOpLog(pr *packetReader) (gen bupstash.Xid, ops []rawOp, err error) {
	p, err := pr.expectPayload(msgOpLogSyncReply, xidSize)
	if err != nil {
		return gen, nil, err
	}
	if gen, err = decodeOpLogSyncReply(p); err != nil {
		return gen, nil, err
	}
	for {
		p, err := pr.expectPayload(msgSyncLogOps, int(pr.max))
		if err != nil {
			return gen, nil, err
		}
		batch, err := decodeSyncLogOps(p)
		if err != nil {
			return gen, nil, err
		}
		if len(batch) == 0 {
			return gen, ops, nil
		}
		ops = append(ops, batch...)
	}
}

// Metadata returns an item's metadata as stored, or nil if the server
// has no such item. Servers from 0.11 on return removed items too.
func (c *Conn) Metadata(ctx context.Context, id bupstash.Xid) ([]byte, error) {
	var meta []byte
	ex := newExchange(func(pr *packetReader) (err error) {
		meta, err = recvMetadata(pr)
		return err
	}, nil)
	if err := c.do(ctx, ex, metadataRequest(id)); err != nil {
		return nil, err
	}
	return meta, nil
}

func recvMetadata(pr *packetReader) ([]byte, error) {
	p, err := pr.expectPayload(msgMetadataReply, maxMetadataReply)
	if err != nil {
		return nil, err
	}
	return decodeMetadataReply(p)
}

// ChunkCall is a request for chunks on its way.
type ChunkCall struct {
	ex     *exchange
	chunks []Chunk
}

// Wait waits for the chunks. Leaves' buffers come from the pool given
// with the request and belong to the caller; if ctx ends first, they go
// back to the pool when they arrive.
func (cc *ChunkCall) Wait(ctx context.Context) ([]Chunk, error) {
	if err := cc.ex.wait(ctx); err != nil {
		return nil, err
	}
	return cc.chunks, nil
}

// Done is closed when the answer is in.
func (cc *ChunkCall) Done() <-chan struct{} { return cc.ex.done }

func releaseChunks(pool *cache.BufferPool, chunks *[]Chunk) func() {
	return func() {
		for _, ch := range *chunks {
			if ch.Height == 0 {
				pool.Put(ch.Data)
			}
		}
		*chunks = nil
	}
}

// Index fetches an item's whole index tree: the server sends every
// chunk of it, depth first, and cannot be stopped short of ending the
// connection. fn gets each chunk in turn, on the connection's reader;
// while fn runs, the server waits (the pipes fill), which lets a slow
// consumer read an index as a stream. An error from fn ends the
// connection. Leaves' buffers come from pool and belong to fn.
func (c *Conn) Index(id bupstash.Xid, meta bupstash.HTreeMeta, pool *cache.BufferPool, fn func(Chunk) error) (*Call, error) {
	walk, err := newTreeWalk(meta)
	if err != nil {
		return nil, err
	}
	ex := newExchange(func(pr *packetReader) error {
		return walkWhole(pr, walk, pool, fn)
	}, nil)
	if err := c.start(ex, indexRequest(id)); err != nil {
		return nil, err
	}
	return &Call{ex}, nil
}

// Call is a request on its way whose answer went to a callback.
type Call struct{ ex *exchange }

// Wait waits for the whole answer.
func (cl *Call) Wait(ctx context.Context) error { return cl.ex.wait(ctx) }

// walkWhole reads a whole tree as the server sends it (Bupstash's
// server.rs send_htree): a node, then its subtree; the leaves of a
// bottom node together.
func walkWhole(pr *packetReader, walk *treeWalk, pool *cache.BufferPool, fn func(Chunk) error) error {
	var leaf uint64
	for {
		h, ok := walk.height()
		if !ok {
			return nil
		}
		if h == 0 {
			top := walk.stack[len(walk.stack)-1]
			walk.stack = walk.stack[:len(walk.stack)-1]
			for off := top.off; off < len(top.entries); off += nodeEntrySize {
				var addr bupstash.Address
				copy(addr[:], top.entries[off+8:])
				b, err := pr.chunk(addr, pool)
				if err != nil {
					return err
				}
				if err := fn(Chunk{Addr: addr, Leaf: leaf, Data: b}); err != nil {
					return err
				}
				leaf++
			}
			continue
		}
		height, count, addr := walk.next()
		b, err := pr.chunk(addr, nil)
		if err != nil {
			return err
		}
		entries, err := checkNode(b, addr, height, count)
		if err != nil {
			return err
		}
		walk.push(height-1, entries)
		if err := fn(Chunk{Addr: addr, Height: height, Leaf: leaf, Data: b}); err != nil {
			return err
		}
	}
}

// BeginPull enters a pull session (protocol 13, and the server must
// allow get): chunks by address, any number in flight. The server holds
// a shared lock on its repository from now until it exits, which keeps
// `bupstash gc` waiting: close pulling connections when idle.
func (c *Conn) BeginPull(ctx context.Context) error {
	if c.proto < Protocol13 {
		return ErrNoPull
	}
	ex := newExchange(func(pr *packetReader) error { return expectEmptyPacket(pr, msgBeginPullReply) }, nil)
	c.wmu.Lock()
	c.mu.Lock()
	err := c.usable()
	if err == nil && c.session != sessionNone {
		err = fmt.Errorf("a %v session is in progress", c.session)
	}
	if err != nil {
		c.mu.Unlock()
		c.wmu.Unlock()
		return err
	}
	c.session = sessionPull
	c.enqueueLocked(ex)
	c.mu.Unlock()
	err = c.writeLocked(beginPullRequest())
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	return ex.wait(ctx)
}

// Pull asks for chunks by address in a pull session; the server sends
// them in that order. Several calls may be in flight at once.
func (c *Conn) Pull(addrs []bupstash.Address, pool *cache.BufferPool) (*ChunkCall, error) {
	if len(addrs) == 0 {
		// The server answers nothing to an empty list.
		return &ChunkCall{ex: finishedExchange()}, nil
	}
	if len(addrs) > maxPullBatch {
		return nil, fmt.Errorf("%d addresses in one request, over %d", len(addrs), maxPullBatch)
	}
	want := append([]bupstash.Address(nil), addrs...)
	cc := &ChunkCall{}
	cc.ex = newExchange(func(pr *packetReader) error {
		for _, a := range want {
			b, err := pr.chunk(a, pool)
			if err != nil {
				return err
			}
			cc.chunks = append(cc.chunks, Chunk{Addr: a, Data: b})
		}
		return nil
	}, releaseChunks(pool, &cc.chunks))
	if err := c.startIn(sessionPull, cc.ex, pullRequest(want)); err != nil {
		return nil, err
	}
	return cc, nil
}

// EndPull leaves the pull session (the server keeps its lock until it
// exits).
func (c *Conn) EndPull(ctx context.Context) error {
	ex := newExchange(func(pr *packetReader) error { return expectEmptyPacket(pr, msgEndPullReply) }, nil)
	c.wmu.Lock()
	c.mu.Lock()
	err := c.usable()
	if err == nil && c.session != sessionPull {
		err = fmt.Errorf("no pull session in progress")
	}
	if err != nil {
		c.mu.Unlock()
		c.wmu.Unlock()
		return err
	}
	c.session = sessionNone
	c.enqueueLocked(ex)
	c.mu.Unlock()
	err = c.writeLocked(endPullRequest())
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	return ex.wait(ctx)
}

// startIn is start for a request that belongs to session s.
func (c *Conn) startIn(s session, ex *exchange, reqs ...request) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	err := c.usable()
	if err == nil && c.session != s {
		err = fmt.Errorf("request needs a %v session, the connection is in %v", s, c.session)
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.enqueueLocked(ex)
	c.mu.Unlock()
	return c.writeLocked(reqs...)
}

func finishedExchange() *exchange {
	ex := newExchange(nil, nil)
	ex.finish(nil)
	return ex
}

func (s session) String() string {
	switch s {
	case sessionPartial:
		return "partial-data"
	case sessionPull:
		return "pull"
	}
	return "no"
}
