package cache

import (
	"context"
	"errors"
)

// Admission keeps the pool's buffers in use — cached chunks, chunks being
// decoded and chunks readers still hold — within the owner's limit, by
// making whoever needs a buffer wait for room before it allocates rather
// than letting decodes in flight add up past the bound.
//
// Decodes (not prefetches) may go past the limit by a small overdraft
// together, so that a cache smaller than a few chunks still keeps every
// core decoding. One more rule keeps a chunk larger than the room left
// from waiting forever: when nothing is past the overdraft, the waiter at
// the head of the queue may go beyond it, and a fill that did so (the
// owner) keeps that right until it ends, so that its second buffer
// (decompression output after the envelope) never waits for its first.
// Memory in use is thus at most the limit, the overdraft and what one
// fill allocates.
//
// Waiters are served in arrival order; prefetches never wait and never go
// past the limit: they are refused (ErrNoRoom) and their readers decode
// when they come.

// ErrNoRoom reports a prefetch refused because its buffers would not fit
// the limit. Nobody sees it but the cache, which drops the prefetch.
var ErrNoRoom = errors.New("cache: no room for a prefetch")

// overdraft is how far past the limit decodes (never prefetches) may go
// together: with a cache smaller than a few leaves, one leaf at a time
// would leave all but one core idle. With the owner's fill (below) it lets
// two leaves of Bupstash's usual sizes decode at once whatever the cache.
// It is part of the memory a mount needs beyond its cache, next to the Go
// heap (FUSE request buffers above all): 16 MiB took a 1 MiB-cache mount
// with 128 readers to 67 MiB, 8 MiB to 59 MiB.
const overdraft = 8 << 20

// ticket identifies one fill to the pool's admission, through the fill's
// context.
type ticket struct {
	prefetch bool // never waits, never goes past the limit
}

type ticketKey struct{}

func withTicket(ctx context.Context, t *ticket) context.Context {
	return context.WithValue(ctx, ticketKey{}, t)
}

func ticketFrom(ctx context.Context) *ticket {
	t, _ := ctx.Value(ticketKey{}).(*ticket)
	return t
}

// waiter is an allocation waiting for room, in the pool's queue.
type waiter struct {
	ready chan struct{} // closed to make it look again; nil once closed
}

// Alloc returns a buffer of length n counted against the pool's limit
// (see SetLimit), waiting for room while buffers in use and this one would
// exceed it. Inside a cache fill it follows the fill's admission: a
// prefetch's allocation fails with ErrNoRoom instead of waiting. It fails
// only when ctx ends (or with ErrNoRoom). Buffers from Alloc go back with
// Put, like those from Get. A nil pool, or one without a limit, allocates.
func (p *BufferPool) Alloc(ctx context.Context, n int) ([]byte, error) {
	size, pooled := classSize(n)
	if p == nil || !pooled || p.limit <= 0 {
		return p.Get(n), nil
	}
	t := ticketFrom(ctx)
	var w *waiter
	for {
		if p.reclaim != nil {
			p.reclaim(int64(size))
		}
		p.mu.Lock()
		if p.admissible(t, w, int64(size)) {
			if w != nil {
				p.dequeue(w)
			}
			b, drop := p.takeLocked(size)
			p.wakeHead() // the next may fit too
			p.mu.Unlock()
			return p.finishTake(b, size, drop)[:n], nil
		}
		if t != nil && t.prefetch {
			p.mu.Unlock()
			return nil, ErrNoRoom
		}
		if w == nil {
			w = &waiter{}
			p.queue = append(p.queue, w)
		}
		w.ready = make(chan struct{})
		ready := w.ready
		p.mu.Unlock()

		select {
		case <-ready:
		case <-ctx.Done():
			p.mu.Lock()
			p.dequeue(w)
			p.wakeHead()
			p.mu.Unlock()
			return nil, context.Cause(ctx)
		}
	}
}

// admissible decides whether an allocation of size bytes by ticket t
// (nil outside fills), queued as w (nil if not queued), may go ahead now;
// if it goes past the limit, t becomes the owner. The caller holds p.mu.
func (p *BufferPool) admissible(t *ticket, w *waiter, size int64) bool {
	if t != nil && t == p.owner {
		return true // its first buffer went past the limit; so may the rest
	}
	if len(p.queue) > 0 && p.queue[0] != w {
		return false // first come, first served
	}
	inUse := p.mapped - p.idle
	if inUse+size <= p.limit {
		return true
	}
	if t != nil && t.prefetch {
		return false
	}
	if inUse+size <= p.limit+overdraft {
		return true
	}
	if p.owner == nil && inUse <= p.limit+overdraft {
		// Nothing is past what decodes may take together: this one may
		// go further, alone. (Waiting for less would wait forever when
		// the waiters behind it hold that memory.)
		if t != nil {
			p.owner = t
		}
		return true
	}
	return false
}

// endTicket ends a fill's admission: the right to go past the limit passes
// on once memory is back within it.
func (p *BufferPool) endTicket(t *ticket) {
	p.mu.Lock()
	if p.owner == t {
		p.owner = nil
		p.wakeHead()
	}
	p.mu.Unlock()
}

// waiting reports whether allocations are waiting for room.
func (p *BufferPool) waiting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) > 0
}

// wakeHead makes the first waiter look again. The caller holds p.mu.
func (p *BufferPool) wakeHead() {
	if len(p.queue) == 0 {
		return
	}
	if w := p.queue[0]; w.ready != nil {
		close(w.ready)
		w.ready = nil
	}
}

// dequeue removes w from the queue. The caller holds p.mu.
func (p *BufferPool) dequeue(w *waiter) {
	for i, q := range p.queue {
		if q == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			return
		}
	}
}
