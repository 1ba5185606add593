package serve

import (
	"sync"
	"time"
)

// What the pull and cursor pools share: connections with the requests in
// flight on each and when each was last used, broken ones dropped, idle
// ones handed back for closing, and one background dial at a time.

// poolConn is one connection of a pool.
type poolConn struct {
	c        *Conn
	inflight int
	last     time.Time
}

func (pc *poolConn) pooled() *poolConn { return pc }

// pooledConn is a pool's connection: a *poolConn, or a type embedding
// one.
type pooledConn interface{ pooled() *poolConn }

// dropBroken returns conns without the connections that failed, closing
// those in the background (requests pending on them fail as their
// readers end).
func dropBroken[T pooledConn](conns []T) []T {
	kept := conns[:0]
	for _, x := range conns {
		if c := x.pooled().c; c.Err() != nil {
			go c.Close()
			continue
		}
		kept = append(kept, x)
	}
	clear(conns[len(kept):])
	return kept
}

// splitIdle returns conns without the connections idle since before
// cutoff (and broken ones), and those, for the caller to close.
func splitIdle[T pooledConn](conns []T, cutoff time.Time) (kept []T, idle []*Conn) {
	kept = conns[:0]
	for _, x := range conns {
		pc := x.pooled()
		if pc.c.Err() != nil || (pc.inflight == 0 && pc.last.Before(cutoff)) {
			idle = append(idle, pc.c)
			continue
		}
		kept = append(kept, x)
	}
	clear(conns[len(kept):])
	return kept, idle
}

// connsOf returns the connections of conns.
func connsOf[T pooledConn](conns []T) []*Conn {
	out := make([]*Conn, 0, len(conns))
	for _, x := range conns {
		out = append(out, x.pooled().c)
	}
	return out
}

// dialSlot is a pool's one dial at a time; its fields are guarded by the
// pool's lock.
type dialSlot struct {
	dialing chan struct{} // closed when the dial under way ends; nil if none
	err     error         // the last dial's failure
}

// startLocked dials in the background with s's dialer, readies the
// connection (prepare, unless nil, outside the lock) and hands it to add
// under mu, the pool's lock, which the caller holds now. A connection
// dialled as s closes is closed instead. It reports false when s is
// closing and nothing was started.
func (d *dialSlot) startLocked(s *Source, mu *sync.Mutex, prepare func(*Conn) error, add func(*Conn)) bool {
	ch := make(chan struct{})
	ok := s.spawn(func() {
		c, err := s.dialer.dial(s.ctx)
		if err == nil && prepare != nil {
			err = prepare(c)
		}
		mu.Lock()
		if err == nil {
			if s.closed.Load() {
				go closeConn(c)
			} else {
				add(c)
			}
		}
		d.err = err
		d.dialing = nil
		close(ch)
		mu.Unlock()
	})
	if ok {
		d.dialing = ch
	}
	return ok
}
