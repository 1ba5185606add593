package serve

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// cursorPool reads data trees through partial-data sessions: the only
// way on protocol 11, and the way on 13 when pull sessions are off. Each
// connection carries at most one session, on one item's data tree,
// moving forward only: a leaf is asked of a session on its item that is
// not past it, else a new session starts (on an idle connection, a new
// one, or the least recently used, whose session is ended).
//
// The server sends, before a leaf, the interior nodes on the way to it
// that the session has not sent yet. A session keeps the last node it
// received at each height: they are the nodes on the path to where it
// stands, the only ones a later request of a node can be about without
// a new session. A request of a node asks the session for the leaf its
// walk is heading for; the leaf is kept for the read that follows.
type cursorPool struct {
	s *Source

	connSet[*cursorConn]
}

type cursorConn struct {
	poolConn
	sess *cursorSession // nil: none
}

// cursorSession is one partial-data session.
type cursorSession struct {
	cu   *Cursor
	item bupstash.Xid
	tree bupstash.HTreeMeta
	// nodes holds the last node received at each height. It has a lock
	// of its own: the connection's reader adds to it, and must never
	// wait for the pool's lock, which is held while requests are
	// written.
	nodesMu sync.Mutex
	nodes   map[uint64]Chunk
	// pending are the leaves asked for and not yet received.
	pending map[uint64]*leafFetch
}

// leafFetch is a leaf on its way through a session.
type leafFetch struct {
	done chan struct{}
	err  error
	// buf is the leaf, for the first reader waiting for it when it came.
	buf     []byte
	addr    bupstash.Address
	waiters int
	// prefetch: started by PrefetchChunks (counted in flights.prefetching).
	prefetch bool
}

// fetch returns a leaf, or an interior node on the way to ref.Leaf, of
// an item's data tree.
func (p *cursorPool) fetch(ctx context.Context, ref bupstash.ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if p.s.closed.Load() {
			return nil, ErrClosed
		}
		p.mu.Lock()
		if ref.Height > 0 {
			if n, ok := p.nodeLocked(ref.Addr); ok {
				p.mu.Unlock()
				return n, nil
			}
		}
		lf, wait, err := p.requestLocked(ref, pool, false)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if err := p.dialFailed(); err != nil {
				return nil, err
			}
			continue
		}
		lf.waiters++
		p.mu.Unlock()

		select {
		case <-lf.done:
		case <-ctx.Done():
		}
		p.mu.Lock()
		lf.waiters--
		var b []byte
		var orphan bool
		select {
		case <-lf.done:
			if lf.buf != nil && (ctx.Err() == nil || lf.waiters == 0) {
				b, lf.buf = lf.buf, nil
				orphan = ctx.Err() != nil
			}
		default:
		}
		p.mu.Unlock()
		if orphan {
			p.s.deposit(lf.addr, b, pool)
			return nil, ctx.Err()
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if lf.err != nil {
			return nil, lf.err
		}
		if ref.Height > 0 {
			if b != nil {
				p.s.deposit(lf.addr, b, pool) // the leaf, for the read that follows
			}
			p.mu.Lock()
			n, ok := p.nodeLocked(ref.Addr)
			p.mu.Unlock()
			if ok {
				return n, nil
			}
			return nil, fmt.Errorf("%w: item %s: node %s was not sent on the way to leaf %d", ErrProtocol, ref.Item, ref.Addr, ref.Leaf)
		}
		if b != nil {
			if lf.addr != ref.Addr {
				pool.Put(b)
				return nil, fmt.Errorf("%w: item %s: leaf %d is %s, the tree says %s", ErrProtocol, ref.Item, ref.Leaf, lf.addr, ref.Addr)
			}
			return b, nil
		}
		// Another reader took it, or it came before we waited: it is
		// held (or on disk) unless evicted.
		if b, ok := p.s.local(ref.Addr, pool); ok {
			return b, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("item %s: leaf %d was received but dropped before it was read", ref.Item, ref.Leaf)
		}
	}
}

// nodeLocked finds a node among those the sessions hold, and returns a
// copy (nodes are small, and the caller owns what it gets).
func (p *cursorPool) nodeLocked(addr bupstash.Address) ([]byte, bool) {
	for _, cc := range p.conns {
		if cc.sess == nil {
			continue
		}
		sess := cc.sess
		sess.nodesMu.Lock()
		for _, n := range sess.nodes {
			if n.Addr == addr {
				sess.nodesMu.Unlock()
				return append([]byte(nil), n.Data...), true
			}
		}
		sess.nodesMu.Unlock()
	}
	return nil, false
}

// requestLocked finds or asks for leaf ref.Leaf (the leaf itself, or the
// one a node request heads for) on a session of ref.Item. It returns the
// fetch, or a channel to wait on (a dial under way) before trying again.
// A prefetch never dials, never ends another session, and returns nil
// when it cannot go out now.
func (p *cursorPool) requestLocked(ref bupstash.ChunkRef, pool *cache.BufferPool, prefetch bool) (*leafFetch, <-chan struct{}, error) {
	leaf := ref.Leaf
	var behind *cursorConn // the session on the item nearest behind the leaf
	for _, cc := range p.conns {
		sess := cc.sess
		if sess == nil || sess.item != ref.Item || sess.tree != ref.HTree || cc.c.Err() != nil {
			continue
		}
		if lf := sess.pending[leaf]; lf != nil {
			return lf, nil, nil
		}
		if next := sess.cu.Next(); next <= leaf && (behind == nil || next > behind.sess.cu.Next()) {
			behind = cc
		}
	}
	if behind != nil {
		lf, err := p.askLocked(behind, leaf, pool, prefetch)
		return lf, nil, err
	}
	if prefetch {
		return nil, nil, nil
	}
	cc, wait := p.connForSessionLocked()
	if cc == nil {
		return nil, wait, nil
	}
	if cc.sess != nil {
		// Best effort: an error here shows on the connection.
		_ = cc.sess.cu.End()
		cc.sess = nil
	}
	cu, err := cc.c.NewCursor(ref.Item, ref.HTree)
	if err != nil {
		return nil, nil, err
	}
	cc.sess = &cursorSession{cu: cu, item: ref.Item, tree: ref.HTree, nodes: map[uint64]Chunk{}, pending: map[uint64]*leafFetch{}}
	lf, err := p.askLocked(cc, leaf, pool, false)
	return lf, nil, err
}

// connForSessionLocked picks the connection a new session goes on: an
// idle one without a session, else a new one while the pool may grow,
// else the least recently used idle one, else the least busy. It
// returns a channel to wait on instead when a dial is needed.
func (p *cursorPool) connForSessionLocked() (*cursorConn, <-chan struct{}) {
	p.dropBrokenLocked()
	var free, lru, least *cursorConn
	for _, cc := range p.conns {
		switch {
		case cc.inflight == 0 && cc.sess == nil:
			free = cc
		case cc.inflight == 0 && (lru == nil || cc.last.Before(lru.last)):
			lru = cc
		}
		if least == nil || cc.inflight < least.inflight {
			least = cc
		}
	}
	// Sessions are kept while the pool may grow: readers of two files
	// take turns, and each keeps its place.
	switch {
	case free != nil:
		return free, nil
	case len(p.conns) < p.s.opts.Connections:
		if p.dialing == nil && !p.startDialLocked() {
			return nil, closedChan
		}
		return nil, p.dialing
	case lru != nil:
		return lru, nil
	}
	return least, nil
}

// closedChan is a channel that never blocks.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (p *cursorPool) startDialLocked() bool {
	return p.connSet.startDialLocked(p.s, nil, func(c *Conn) *cursorConn {
		return &cursorConn{poolConn: poolConn{c: c, last: time.Now()}}
	})
}

// askLocked sends a request for one leaf on cc's session and collects
// the answer in the background.
func (p *cursorPool) askLocked(cc *cursorConn, leaf uint64, pool *cache.BufferPool, prefetch bool) (*leafFetch, error) {
	sess := cc.sess
	onNode := func(n Chunk) {
		p.s.received(n.Addr, n.Data)
		sess.nodesMu.Lock()
		sess.nodes[n.Height] = n
		sess.nodesMu.Unlock()
	}
	call, err := sess.cu.Leaf(leaf, pool, onNode)
	if err != nil {
		return nil, err
	}
	lf := &leafFetch{done: make(chan struct{}), prefetch: prefetch}
	sess.pending[leaf] = lf
	cc.inflight++
	cc.last = time.Now()
	p.s.stats.requests.Add(1)
	if prefetch {
		p.s.flights.prefetching.Add(1)
	}
	collect := func() {
		chunks, err := call.Wait(p.s.ctx)
		var b []byte
		var addr bupstash.Address
		if err == nil {
			b, addr = chunks[0].Data, chunks[0].Addr
			p.s.received(addr, b)
		}
		p.mu.Lock()
		lf.err, lf.addr = err, addr
		keep := b != nil && lf.waiters > 0
		if keep {
			lf.buf = b
		}
		if sess.pending[leaf] == lf {
			delete(sess.pending, leaf)
		}
		cc.inflight--
		cc.last = time.Now()
		close(lf.done)
		p.mu.Unlock()
		if b != nil && !keep {
			p.s.deposit(addr, b, pool)
		}
		if prefetch {
			p.s.flights.prefetching.Add(-1)
		}
	}
	if !p.s.spawn(collect) {
		go collect() // closing: the connection is being ended, which ends the wait
	}
	return lf, nil
}

// prefetch asks for data leaves ahead of a reader, on sessions already
// open on their item; it returns how many, from the first, went out.
func (p *cursorPool) prefetch(refs []bupstash.ChunkRef, pool *cache.BufferPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, ref := range refs {
		lf, _, err := p.requestLocked(ref, pool, true)
		if lf == nil || err != nil {
			return i
		}
	}
	return len(refs)
}
