package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// pullPool is a Source's pull sessions: connections that fetch chunks by
// address, several requests in flight on each. A reader takes the least
// busy; when every one is busy and the pool may grow, another is dialled
// in the background while the busy ones keep serving.
type pullPool struct {
	s *Source

	connSet[*poolConn]
}

// pullDepth is how many requests a pull connection carries at once
// before the pool grows.
const pullDepth = 8

// acquire returns a connection for one more request, dialling one when
// there is none.
func (p *pullPool) acquire(ctx context.Context) (*poolConn, error) {
	for {
		p.mu.Lock()
		best := p.leastBusyLocked()
		canGrow := len(p.conns) < p.s.opts.Connections
		if best != nil && (best.inflight < pullDepth || !canGrow || p.dialing != nil) {
			if best.inflight >= pullDepth/2 && canGrow && p.dialing == nil {
				p.startDialLocked()
			}
			best.inflight++
			best.last = time.Now()
			p.mu.Unlock()
			return best, nil
		}
		if p.dialing == nil && !p.startDialLocked() {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		ch := p.dialing
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := p.dialFailed(); err != nil {
			return nil, err
		}
	}
}

// leastBusyLocked returns the working connection with the fewest
// requests in flight, dropping broken ones.
func (p *pullPool) leastBusyLocked() *poolConn {
	p.dropBrokenLocked()
	var best *poolConn
	for _, pc := range p.conns {
		if best == nil || pc.inflight < best.inflight {
			best = pc
		}
	}
	return best
}

// startDialLocked dials a connection and opens a pull session on it, in
// the background.
func (p *pullPool) startDialLocked() bool {
	beginPull := func(c *Conn) error {
		p.s.stats.requests.Add(1)
		if err := c.BeginPull(p.s.ctx); err != nil {
			closeConn(c)
			return fmt.Errorf("%w: %w", errBeginPull, err)
		}
		p.s.access.pullWorks()
		return nil
	}
	return p.connSet.startDialLocked(p.s, beginPull, func(c *Conn) *poolConn {
		return &poolConn{c: c, last: time.Now()}
	})
}

func (p *pullPool) release(pc *poolConn) {
	p.mu.Lock()
	pc.inflight--
	pc.last = time.Now()
	p.mu.Unlock()
}

// fetch pulls one chunk.
func (p *pullPool) fetch(ctx context.Context, addr bupstash.Address, pool *cache.BufferPool) ([]byte, error) {
	pc, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.release(pc)
	p.s.stats.requests.Add(1)
	call, err := pc.c.Pull([]bupstash.Address{addr}, pool)
	if err != nil {
		return nil, err
	}
	chunks, err := call.Wait(ctx)
	if err != nil {
		return nil, err
	}
	p.s.received(addr, chunks[0].Data)
	return chunks[0].Data, nil
}

// prefetch pulls chunks, one request each so that each is delivered as
// soon as it comes, on a connection that is already open (a hint never
// waits for a dial). It reports false when no connection could take
// them.
func (p *pullPool) prefetch(refs []bupstash.ChunkRef, pool *cache.BufferPool) bool {
	p.mu.Lock()
	best := p.leastBusyLocked()
	if best == nil || best.inflight >= pullDepth {
		if len(p.conns) < p.s.opts.Connections && p.dialing == nil {
			p.startDialLocked()
		}
		p.mu.Unlock()
		return false
	}
	p.mu.Unlock()

	fs := &p.s.flights
	for _, ref := range refs {
		f, ok := fs.start(ref.Addr)
		if !ok {
			f.leave()
			continue
		}
		p.mu.Lock()
		best.inflight++
		best.last = time.Now()
		p.mu.Unlock()
		fs.prefetching.Add(1)
		finish := func(b []byte) {
			if b != nil {
				p.s.received(ref.Addr, b)
				p.s.deposit(ref.Addr, b, pool)
			}
			fs.end(ref.Addr, f, nil)
			fs.prefetching.Add(-1)
			p.release(best)
		}
		p.s.stats.requests.Add(1)
		call, err := best.c.Pull([]bupstash.Address{ref.Addr}, pool)
		if err != nil {
			finish(nil)
			continue
		}
		if !p.s.spawn(func() {
			chunks, err := call.Wait(p.s.ctx)
			if err != nil {
				finish(nil)
				return
			}
			finish(chunks[0].Data)
		}) {
			finish(nil)
		}
	}
	return true
}
