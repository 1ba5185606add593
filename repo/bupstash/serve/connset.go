package serve

import (
	"sync"
	"time"
)

// poolConn is one connection of a pool: its requests in flight and when
// it was last used.
type poolConn struct {
	c        *Conn
	inflight int
	last     time.Time
}

func (pc *poolConn) pooled() *poolConn { return pc }

// pooledConn is a pool's connection: a *poolConn, or a type embedding
// one.
type pooledConn interface{ pooled() *poolConn }

// connSet is what the pull and cursor pools share: their lock, their
// connections (broken ones dropped, idle ones handed back for closing),
// and one background dial at a time. A pool embeds it; its lock guards
// the pool's own state too.
type connSet[T pooledConn] struct {
	mu      sync.Mutex
	conns   []T
	dialing chan struct{} // closed when the dial under way ends; nil if none
	dialErr error         // the last dial's failure
}

// dropBrokenLocked removes the connections that failed, closing them in
// the background (requests pending on them fail as their readers end).
func (cs *connSet[T]) dropBrokenLocked() {
	kept := cs.conns[:0]
	for _, x := range cs.conns {
		if c := x.pooled().c; c.Err() != nil {
			go c.Close()
			continue
		}
		kept = append(kept, x)
	}
	clear(cs.conns[len(kept):])
	cs.conns = kept
}

// takeIdle removes the connections idle since before cutoff (and broken
// ones), for the caller to close.
func (cs *connSet[T]) takeIdle(cutoff time.Time) []*Conn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var idle []*Conn
	kept := cs.conns[:0]
	for _, x := range cs.conns {
		pc := x.pooled()
		if pc.c.Err() != nil || (pc.inflight == 0 && pc.last.Before(cutoff)) {
			idle = append(idle, pc.c)
			continue
		}
		kept = append(kept, x)
	}
	clear(cs.conns[len(kept):])
	cs.conns = kept
	return idle
}

// takeAll removes every connection, for Close.
func (cs *connSet[T]) takeAll() []*Conn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]*Conn, 0, len(cs.conns))
	for _, x := range cs.conns {
		out = append(out, x.pooled().c)
	}
	cs.conns = nil
	return out
}

// dialFailed returns the last dial's failure if it left the set without
// a connection: a caller that waited for the dial gives up then, and
// otherwise tries again.
func (cs *connSet[T]) dialFailed() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.dialErr != nil && len(cs.conns) == 0 {
		return cs.dialErr
	}
	return nil
}

// startDialLocked dials in the background with s's dialer, readies the
// connection (prepare, unless nil, outside the lock) and adds it as wrap
// makes it; a connection dialled as s closes is closed instead. It
// reports false when s is closing and nothing was started.
func (cs *connSet[T]) startDialLocked(s *Source, prepare func(*Conn) error, wrap func(*Conn) T) bool {
	ch := make(chan struct{})
	ok := s.spawn(func() {
		c, err := s.dialer.dial(s.ctx)
		if err == nil && prepare != nil {
			err = prepare(c)
		}
		cs.mu.Lock()
		if err == nil {
			if s.closed.Load() {
				go closeConn(c)
			} else {
				cs.conns = append(cs.conns, wrap(c))
			}
		}
		cs.dialErr = err
		cs.dialing = nil
		close(ch)
		cs.mu.Unlock()
	})
	if ok {
		cs.dialing = ch
	}
	return ok
}
