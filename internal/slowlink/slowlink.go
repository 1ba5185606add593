// Package slowlink is a userspace TCP proxy that behaves like a slow
// network link, for benchmarks of remote sources on a kernel without
// netem: every byte is delayed by a fixed time each way, and each
// direction carries at most a given number of bytes per second, shared
// by every connection through the link, as on a real link.
//
//	l, _ := slowlink.Listen("127.0.0.1:22", 12500*time.Microsecond, 25_000_000)
//	defer l.Close()
//	// connect to l.Addr() instead of 127.0.0.1:22
package slowlink

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Link is a listening proxy.
type Link struct {
	ln       net.Listener
	upstream string
	delay    time.Duration
	up, down *pacer

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	carriedUp, carriedDown atomic.Int64
	turns                  atomic.Int64
}

// Turns returns how many times, over all connections, the client began
// to send: at first, and after having received something. Each is a
// round trip it waited for (pipelined requests sent together count
// once).
func (l *Link) Turns() int64 { return l.turns.Load() }

// direction of the last bytes a connection handed over.
const (
	dirNone int32 = iota
	dirUp
	dirDown
)

// Listen starts a link on 127.0.0.1 (a free port) to upstream, adding
// delay to each direction (a round trip costs twice delay) and capping
// each direction at bytesPerSecond (0: no cap).
func Listen(upstream string, delay time.Duration, bytesPerSecond int64) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{ln: ln, upstream: upstream, delay: delay,
		up: &pacer{rate: bytesPerSecond}, down: &pacer{rate: bytesPerSecond},
		conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr returns the address to connect to instead of upstream.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Port returns the port of Addr.
func (l *Link) Port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// Carried returns the bytes carried so far towards upstream and back.
func (l *Link) Carried() (up, down int64) { return l.carriedUp.Load(), l.carriedDown.Load() }

// Close stops listening, ends every connection and waits for them.
func (l *Link) Close() error {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		client, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.track(client) {
			return
		}
		l.wg.Add(1)
		go l.serve(client)
	}
}

func (l *Link) serve(client net.Conn) {
	defer l.wg.Done()
	defer l.untrack(client)
	server, err := net.Dial("tcp", l.upstream)
	if err != nil {
		return
	}
	if !l.track(server) {
		return
	}
	defer l.untrack(server)
	var wg sync.WaitGroup
	var last atomic.Int32
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(server, client, l.up, &l.carriedUp, dirUp, &last) }()
	go func() { defer wg.Done(); l.pipe(client, server, l.down, &l.carriedDown, dirDown, &last) }()
	wg.Wait()
}

// segment is bytes on the wire, and when they arrive at the far end.
type segment struct {
	b      []byte
	arrive time.Time
}

const segmentSize = 16 << 10

// pipe carries src to dst: a reader stamps each segment with the time it
// would arrive (after the link has serialized it at its rate, and the
// delay), a writer hands it over then. The queue between them holds what
// is on the wire; when it is full the reader stops, and TCP's own flow
// control pushes back on the sender.
func (l *Link) pipe(dst, src net.Conn, p *pacer, carried *atomic.Int64, dir int32, last *atomic.Int32) {
	queue := make(chan segment, l.queueLen())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range queue {
			if d := time.Until(s.arrive); d > 0 {
				time.Sleep(d)
			}
			// Counted as handed over, so that whoever has received the
			// bytes sees them counted.
			carried.Add(int64(len(s.b)))
			if prev := last.Swap(dir); dir == dirUp && prev != dirUp {
				l.turns.Add(1)
			}
			if _, err := dst.Write(s.b); err != nil {
				src.Close()
				for range queue {
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	for {
		b := make([]byte, segmentSize)
		n, err := src.Read(b)
		if n > 0 {
			queue <- segment{b[:n], p.send(n).Add(l.delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(queue)
	<-done
}

// queueLen holds a bandwidth-delay product of segments and then some.
func (l *Link) queueLen() int {
	n := 64
	if r := l.up.rate; r > 0 {
		bdp := int(float64(r)*l.delay.Seconds()) / segmentSize
		n = max(n, 4*bdp)
	}
	return n
}

// pacer serializes one direction of the link at its rate.
type pacer struct {
	rate int64 // bytes per second, 0: unlimited

	mu   sync.Mutex
	free time.Time // when the link is next idle
}

// send returns when n bytes handed to the link now have left it.
func (p *pacer) send(n int) time.Time {
	now := time.Now()
	if p.rate <= 0 {
		return now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free.Before(now) {
		p.free = now
	}
	p.free = p.free.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	return p.free
}
