package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// streamPool reads index trees as whole streams (RequestIndex), where
// there is no pull session: the server sends every chunk of the tree,
// nodes before their leaves, and cannot be stopped short of ending the
// connection. A stream holds the last node it received at each height
// and a few leaves ahead of its reader; when they fill up, it stops
// reading (the server waits), unless there is a disk cache, where every
// chunk goes as it comes. A read the stream has passed starts another.
type streamPool struct {
	s *Source

	mu      sync.Mutex
	cond    *sync.Cond
	streams []*indexStream
}

type indexStream struct {
	c    *Conn
	item bupstash.Xid
	tree bupstash.HTreeMeta
	pool *cache.BufferPool

	starting bool   // the connection is being dialled
	pos      uint64 // leaves received so far
	nodes    map[uint64]Chunk
	ahead    map[uint64][]byte // leaves received and not taken
	bytes    int64             // of ahead
	done     bool
	err      error
	closing  bool
	waiters  int
	last     time.Time
}

// streamAhead bounds the bytes of leaves a stream holds for its reader
// (at least one leaf always fits).
const streamAhead = 16 << 20

// errPassed says a stream went past the chunk asked for.
var errPassed = errors.New("stream went past the chunk")

// errStreamClosed ends a stream's answer from its consumer's side.
var errStreamClosed = errors.New("index stream no longer wanted")

func (p *streamPool) init() {
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
}

// fetch returns an index leaf, or an interior node of an index tree.
func (p *streamPool) fetch(ctx context.Context, ref bupstash.ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	p.mu.Lock()
	p.init()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for restarts := 0; ; restarts++ {
		st := p.findLocked(ref)
		if st == nil {
			if restarts > 1 {
				p.mu.Unlock()
				return nil, fmt.Errorf("%w: item %s: the index stream never sent chunk %s", ErrProtocol, ref.Item, ref.Addr)
			}
			st = p.startLocked(ref, pool)
		}
		b, err := p.waitLocked(ctx, st, ref)
		if !errors.Is(err, errPassed) {
			p.mu.Unlock()
			return b, err
		}
		// Passed, or the stream ended: on disk if it was kept there.
		p.mu.Unlock()
		if b, ok := p.s.local(ref.Addr, pool); ok {
			return b, nil
		}
		p.mu.Lock()
	}
}

// findLocked returns a stream of the tree that holds or will send the
// chunk ref asks for.
func (p *streamPool) findLocked(ref bupstash.ChunkRef) *indexStream {
	var best *indexStream
	for _, st := range p.streams {
		if st.item != ref.Item || st.tree != ref.HTree || st.closing || (st.done && st.err != nil) {
			continue
		}
		if st.has(ref) {
			return st
		}
		if !st.done && st.pos <= ref.Leaf && (best == nil || st.pos > best.pos) {
			best = st
		}
	}
	return best
}

// has reports whether the stream holds the chunk now.
func (st *indexStream) has(ref bupstash.ChunkRef) bool {
	if ref.Height == 0 {
		_, ok := st.ahead[ref.Leaf]
		return ok
	}
	for _, n := range st.nodes {
		if n.Addr == ref.Addr {
			return true
		}
	}
	return false
}

// waitLocked waits until the stream holds the chunk, and takes it; or
// fails with errPassed when it went past it.
func (p *streamPool) waitLocked(ctx context.Context, st *indexStream, ref bupstash.ChunkRef) ([]byte, error) {
	st.waiters++
	defer func() { st.waiters-- }()
	for {
		// Leaves before the one this reader heads for are behind it: they
		// would only keep the stream from reaching it.
		dropped := false
		for i, old := range st.ahead {
			if i < ref.Leaf {
				delete(st.ahead, i)
				st.bytes -= int64(len(old))
				st.pool.Put(old)
				dropped = true
			}
		}
		if dropped {
			p.cond.Broadcast()
		}
		if ref.Height == 0 {
			if b, ok := st.ahead[ref.Leaf]; ok {
				delete(st.ahead, ref.Leaf)
				st.bytes -= int64(len(b))
				st.last = time.Now()
				p.cond.Broadcast()
				return b, nil
			}
		} else {
			for _, n := range st.nodes {
				if n.Addr == ref.Addr {
					st.last = time.Now()
					return append([]byte(nil), n.Data...), nil
				}
			}
		}
		switch {
		case st.done && st.err != nil && !errors.Is(st.err, errStreamClosed):
			return nil, st.err
		case st.done || st.closing || (!st.starting && st.pos > ref.Leaf):
			return nil, errPassed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p.cond.Wait()
	}
}

// startLocked starts a stream of ref's tree, on a finished stream's
// connection if one is free, else on a new one (the pool's least
// recently used stream is ended if the pool is full).
func (p *streamPool) startLocked(ref bupstash.ChunkRef, pool *cache.BufferPool) *indexStream {
	st := &indexStream{item: ref.Item, tree: ref.HTree, pool: pool, starting: true,
		nodes: map[uint64]Chunk{}, ahead: map[uint64][]byte{}, last: time.Now()}
	var reuse *Conn
	var lru *indexStream
	kept := p.streams[:0]
	for _, old := range p.streams {
		switch {
		case reuse == nil && old.done && old.err == nil && old.waiters == 0 && old.c != nil && old.c.Err() == nil:
			reuse = old.c
			p.dropLocked(old)
			continue
		case old.waiters == 0 && !old.starting && (lru == nil || old.last.Before(lru.last)):
			lru = old
		}
		kept = append(kept, old)
	}
	clear(p.streams[len(kept):])
	p.streams = kept
	if reuse == nil && lru != nil && len(p.streams) >= p.s.opts.Connections {
		p.endLocked(lru)
	}
	p.streams = append(p.streams, st)
	if !p.s.spawn(func() { p.run(st, reuse) }) {
		st.done, st.err = true, ErrClosed
	}
	return st
}

// run dials (unless given a connection) and asks for the index; the
// connection's reader then feeds the stream.
func (p *streamPool) run(st *indexStream, c *Conn) {
	var err error
	if c == nil {
		c, err = p.s.dialer.dial(p.s.ctx)
	}
	var call *Call
	if err == nil {
		p.s.stats.requests.Add(1)
		call, err = c.Index(st.item, st.tree, st.pool, func(ch Chunk) error { return p.deliver(st, ch) })
	}
	p.mu.Lock()
	st.c, st.starting = c, false
	if st.closing && c != nil {
		go closeConn(c)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	if err == nil {
		err = call.Wait(p.s.ctx)
	}
	p.mu.Lock()
	st.done, st.err = true, err
	if err == nil {
		st.last = time.Now()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// deliver takes a chunk of the stream, on the connection's reader.
func (p *streamPool) deliver(st *indexStream, ch Chunk) error {
	p.s.received(ch.Addr, ch.Data)
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.closing {
		if ch.Height == 0 {
			st.pool.Put(ch.Data)
		}
		return errStreamClosed
	}
	st.last = time.Now()
	if ch.Height > 0 {
		st.nodes[ch.Height] = ch
		p.cond.Broadcast()
		return nil
	}
	st.pos = ch.Leaf + 1
	if p.s.opts.Cache != nil && st.waiters == 0 && len(st.ahead) > 0 && st.bytes+int64(len(ch.Data)) > streamAhead {
		// On disk already; nobody is waiting for it now.
		st.pool.Put(ch.Data)
		p.cond.Broadcast()
		return nil
	}
	for len(st.ahead) > 0 && st.bytes+int64(len(ch.Data)) > streamAhead && !st.closing {
		p.cond.Wait()
	}
	if st.closing {
		st.pool.Put(ch.Data)
		return errStreamClosed
	}
	st.ahead[ch.Leaf] = ch.Data
	st.bytes += int64(len(ch.Data))
	p.cond.Broadcast()
	return nil
}

// endLocked ends a stream: its reader stops at the next chunk, which
// ends the connection.
func (p *streamPool) endLocked(st *indexStream) {
	st.closing = true
	p.dropLocked(st)
	if st.c != nil {
		go closeConn(st.c)
	}
	p.cond.Broadcast()
}

// dropLocked removes a stream from the pool and frees what it holds.
func (p *streamPool) dropLocked(st *indexStream) {
	for i, b := range st.ahead {
		delete(st.ahead, i)
		st.pool.Put(b)
	}
	st.bytes = 0
	for i, o := range p.streams {
		if o == st {
			p.streams = append(p.streams[:i], p.streams[i+1:]...)
			break
		}
	}
}

// takeIdle ends the streams idle since before cutoff, and returns their
// connections for the caller to close.
func (p *streamPool) takeIdle(cutoff time.Time) []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	var out []*Conn
	for _, st := range append([]*indexStream(nil), p.streams...) {
		if st.waiters > 0 || st.starting || !st.last.Before(cutoff) {
			continue
		}
		st.closing = true
		p.dropLocked(st)
		if st.c != nil {
			out = append(out, st.c)
		}
	}
	p.cond.Broadcast()
	return out
}

func (p *streamPool) takeAll() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	var out []*Conn
	for _, st := range p.streams {
		st.closing = true
		for i, b := range st.ahead {
			delete(st.ahead, i)
			st.pool.Put(b)
		}
		if st.c != nil {
			out = append(out, st.c)
		}
	}
	p.streams = nil
	p.cond.Broadcast()
	return out
}
