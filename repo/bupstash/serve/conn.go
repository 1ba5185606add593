package serve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// transport is what a connection runs over: a server process, or in
// tests a scripted server.
type transport interface {
	// in is the server's stdin, out its stdout.
	in() io.WriteCloser
	out() io.ReadCloser
	// kill ends the server now; it does not wait.
	kill()
	// awaitExit waits up to d for the server to end.
	awaitExit(d time.Duration) (exited bool, status error)
	// stderrLine is the server's last words worth showing, waiting up to
	// d for its stderr to close.
	stderrLine(d time.Duration) string
	// silence stops logging the server's stderr, once it is drained or
	// after d.
	silence(d time.Duration)
}

// Timeouts of a connection.
const (
	// DefaultStallTimeout is how long a connection may receive nothing
	// while an answer is due before it is ended. The protocol has no
	// keepalive; ssh's ServerAliveInterval catches dead links sooner.
	DefaultStallTimeout = 2 * time.Minute
	// closeTimeout is how long Close waits for the server to finish
	// answering and exit before it is killed.
	closeTimeout = 5 * time.Second
	// exitWait is how long a broken connection waits for the server to
	// exit and print why.
	exitWait = 2 * time.Second
	// maxDrain bounds what a server may send after the last answer,
	// while the connection closes.
	maxDrain = 64 << 10
)

// session is the sub-protocol a connection is in.
type session uint8

const (
	sessionNone    session = iota
	sessionPartial         // after RequestData{partial: true}
	sessionPull            // after TBeginItemSyncPull
)

// Conn is one connection to a server: one `bupstash serve` process. Its
// methods may be called from several goroutines: requests are written in
// the order the calls take the write lock, and answered in that order.
type Conn struct {
	name  string
	proto Protocol
	t     transport
	log   *slog.Logger
	stall time.Duration

	wmu sync.Mutex // held while writing a request
	pw  packetWriter
	pr  packetReader // the reader goroutine's

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*exchange // requests written and not yet answered, in order
	err     error       // why the connection ended
	closing bool
	session session
	cursor  *Cursor // the partial-data session in progress

	readingSince atomic.Int64 // when the reader began waiting for bytes (unix ns), 0 if not waiting
	writingSince atomic.Int64 // when a write began blocking, 0 if none
	readerDone   chan struct{}

	serverTime time.Time
}

// connConfig are the settings of a new connection.
type connConfig struct {
	name      string
	log       *slog.Logger
	stall     time.Duration
	maxPacket uint32
}

func newConn(t transport, p Protocol, cfg connConfig) *Conn {
	if cfg.stall <= 0 {
		cfg.stall = DefaultStallTimeout
	}
	if cfg.maxPacket == 0 {
		cfg.maxPacket = MaxPacket
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{name: cfg.name, proto: p, t: t, log: cfg.log, stall: cfg.stall, readerDone: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	k := kindsOf(p)
	c.pw = packetWriter{w: bufio.NewWriterSize(&watchedWriter{t.in(), &c.writingSince}, 64<<10), kinds: k}
	c.pr = packetReader{r: bufio.NewReaderSize(&watchedReader{t.out(), &c.readingSince}, 64<<10), kinds: k, max: cfg.maxPacket}
	go c.readLoop()
	go c.watch()
	return c
}

// Protocol returns the protocol the server speaks.
func (c *Conn) Protocol() Protocol { return c.proto }

// ServerTime returns the server's clock when it opened the repository.
func (c *Conn) ServerTime() time.Time { return c.serverTime }

// pending returns the number of requests written and not yet answered.
func (c *Conn) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Err returns why the connection ended, or nil while it works.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// exchange is one request's answer: recv reads it off the stream, on
// the reader goroutine, when every earlier answer has been read.
type exchange struct {
	recv func(pr *packetReader) error
	// release frees what recv received when nobody will take it: the
	// waiter gave up, or the answer broke off.
	release func()

	done chan struct{}
	err  error

	mu        sync.Mutex
	finished  bool
	abandoned bool
}

func newExchange(recv func(*packetReader) error, release func()) *exchange {
	return &exchange{recv: recv, release: release, done: make(chan struct{})}
}

func (ex *exchange) finish(err error) {
	ex.mu.Lock()
	ex.err, ex.finished = err, true
	drop := ex.abandoned || err != nil
	ex.mu.Unlock()
	if drop && ex.release != nil {
		ex.release()
	}
	close(ex.done)
}

// wait waits for the answer. A caller that gives up leaves the answer to
// be read (the stream must stay in step) and dropped.
func (ex *exchange) wait(ctx context.Context) error {
	select {
	case <-ex.done:
		return ex.err
	default:
	}
	select {
	case <-ex.done:
		return ex.err
	case <-ctx.Done():
		ex.mu.Lock()
		ex.abandoned = true
		drop := ex.finished && ex.err == nil
		ex.mu.Unlock()
		if drop && ex.release != nil {
			ex.release()
		}
		return ctx.Err()
	}
}

// start writes reqs and queues ex (nil: the requests have no answer).
func (c *Conn) start(ex *exchange, reqs ...request) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if err := c.usable(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.enqueueLocked(ex)
	c.mu.Unlock()
	return c.writeLocked(reqs...)
}

func (c *Conn) usable() error {
	if c.err != nil {
		return c.err
	}
	if c.closing {
		return ErrClosed
	}
	return nil
}

func (c *Conn) enqueueLocked(ex *exchange) {
	if ex != nil {
		c.queue = append(c.queue, ex)
		c.cond.Broadcast()
	}
}

// writeLocked writes and flushes requests; c.wmu is held.
func (c *Conn) writeLocked(reqs ...request) error {
	for _, r := range reqs {
		if err := c.pw.write(r); err != nil {
			c.fail(c.explain(err))
			return c.Err()
		}
	}
	if err := c.pw.w.Flush(); err != nil {
		c.fail(c.explain(err))
		return c.Err()
	}
	return nil
}

// do sends reqs and waits for the answer ex reads.
func (c *Conn) do(ctx context.Context, ex *exchange, reqs ...request) error {
	if err := c.start(ex, reqs...); err != nil {
		return err
	}
	return ex.wait(ctx)
}

// fail ends the connection with err, unless it already ended: the
// server is killed and the stream closed, which wakes the reader.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.cond.Broadcast()
	c.mu.Unlock()
	c.t.kill()
	c.t.out().Close()
	c.t.in().Close()
}

// readLoop reads the answers, in order, for as long as the connection
// works.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && c.err == nil && !c.closing {
			c.cond.Wait()
		}
		if c.err != nil || len(c.queue) == 0 {
			c.mu.Unlock()
			break
		}
		ex := c.queue[0]
		c.mu.Unlock()

		err := ex.recv(&c.pr)
		if err != nil {
			c.fail(c.explain(err))
			break
		}
		c.mu.Lock()
		c.queue = c.queue[1:]
		c.mu.Unlock()
		ex.finish(nil)
	}
	c.mu.Lock()
	healthy := c.err == nil
	c.mu.Unlock()
	if healthy {
		// Closing, and every answer is in: the server has nothing more to
		// say and exits after EndOfTransmission.
		n, err := io.Copy(io.Discard, io.LimitReader(c.pr.r, maxDrain+1))
		switch {
		case n > 0:
			c.fail(fmt.Errorf("%w: %d bytes nobody asked for", ErrProtocol, n))
		case err != nil:
			c.fail(c.explain(err))
		default:
			c.fail(ErrClosed)
		}
	}
	c.mu.Lock()
	queue, err := c.queue, c.err
	c.queue = nil
	c.mu.Unlock()
	for _, ex := range queue {
		ex.finish(err)
	}
}

// explain turns a read error into the error to report. The end of the
// stream, or an error after the connection was ended, is the server's
// end: its stderr says why.
func (c *Conn) explain(err error) error {
	if cur := c.Err(); cur != nil {
		return cur
	}
	var class error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		class = ErrDisconnected
	case errors.Is(err, ErrProtocol), errors.Is(err, bupstash.ErrCorrupt):
		// Our finding, not the server's; its stderr may add to it.
		c.t.kill()
		if line := c.t.stderrLine(exitWait); line != "" {
			return fmt.Errorf("%w (server: %s)", err, line)
		}
		return err
	default:
		var re *RemoteError
		if errors.As(err, &re) {
			return err
		}
		class = ErrDisconnected
	}
	se := &ServerError{Err: class}
	if exited, status := c.t.awaitExit(exitWait); exited && status != nil {
		se.Exit = status.Error()
	}
	se.Line = c.t.stderrLine(exitWait)
	se.Err = classify(se.Line, class)
	return se
}

// watch ends the connection when a read or write has been blocked for
// longer than the stall timeout. The reader reads only while an answer
// is due, so an idle connection is never a stalled one.
func (c *Conn) watch() {
	tick := max(min(c.stall/8, time.Second), time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.readerDone:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		for _, since := range []int64{c.readingSince.Load(), c.writingSince.Load()} {
			if since != 0 && time.Duration(now-since) > c.stall {
				c.fail(&ServerError{Err: ErrStalled, Line: c.t.stderrLine(0)})
			}
		}
	}
}

// Close ends the connection politely: it leaves any sub-session, sends
// EndOfTransmission after the requests already written, waits for their
// answers and for the server to exit, and kills it if it does not.
func (c *Conn) Close() error {
	c.wmu.Lock()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.wmu.Unlock()
		<-c.readerDone
		return nil
	}
	c.closing = true
	healthy := c.err == nil
	sess := c.session
	c.cond.Broadcast()
	var endPull *exchange
	if healthy && sess == sessionPull {
		endPull = newExchange(func(pr *packetReader) error { return expectEmptyPacket(pr, msgEndPullReply) }, nil)
		c.enqueueLocked(endPull)
	}
	c.mu.Unlock()
	if healthy {
		var reqs []request
		switch sess {
		case sessionPartial:
			reqs = append(reqs, rangesRequest(nil))
		case sessionPull:
			reqs = append(reqs, endPullRequest())
		}
		reqs = append(reqs, endRequest())
		if c.writeLocked(reqs...) == nil {
			c.t.in().Close()
		}
	}
	c.wmu.Unlock()

	select {
	case <-c.readerDone:
	case <-time.After(closeTimeout):
		c.fail(fmt.Errorf("%w: server did not finish within %v of closing", ErrClosed, closeTimeout))
		<-c.readerDone
	}
	if exited, _ := c.t.awaitExit(closeTimeout); !exited {
		c.t.kill()
	}
	c.t.silence(silenceWait)
	return nil
}

// silenceWait is how long Close waits for the server's last stderr lines
// to be logged.
const silenceWait = 200 * time.Millisecond

// expectEmptyPacket reads a packet that must be m with no payload.
func expectEmptyPacket(pr *packetReader, m msg) error {
	h, err := pr.expect(m)
	if err != nil {
		return err
	}
	return expectEmpty(h)
}

// expect reads the next header, which must be m; an Abort is read and
// returned as the error.
func (pr *packetReader) expect(m msg) (header, error) {
	h, err := pr.next()
	if err != nil {
		return h, err
	}
	if h.msg == m {
		return h, nil
	}
	if h.msg == msgAbort {
		p, err := pr.payload(h, maxAbort)
		if err != nil {
			return h, err
		}
		return h, decodeAbort(p)
	}
	return h, fmt.Errorf("%w: got %s where %s was due", ErrProtocol, h, m)
}

// expectPayload reads a packet m of at most limit bytes.
func (pr *packetReader) expectPayload(m msg, limit int) ([]byte, error) {
	h, err := pr.expect(m)
	if err != nil {
		return nil, err
	}
	return pr.payload(h, limit)
}

// chunk reads a Chunk packet, which must be the chunk at want, into a
// buffer from pool.
func (pr *packetReader) chunk(want bupstash.Address, pool *cache.BufferPool) ([]byte, error) {
	h, err := pr.expect(msgChunk)
	if err != nil {
		return nil, err
	}
	if h.size < addressSize {
		return nil, fmt.Errorf("%w: %s is smaller than an address", ErrProtocol, h)
	}
	var got bupstash.Address
	if _, err := io.ReadFull(pr.r, got[:]); err != nil {
		return nil, truncated(err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: server sent chunk %s where %s was due", ErrProtocol, got, want)
	}
	b := pool.Get(int(h.size) - addressSize)
	if _, err := io.ReadFull(pr.r, b); err != nil {
		pool.Put(b)
		return nil, truncated(err)
	}
	return b, nil
}

// watchedReader and watchedWriter note when a call starts blocking, for
// the stall watch.
type watchedReader struct {
	r     io.Reader
	since *atomic.Int64
}

func (w *watchedReader) Read(p []byte) (int, error) {
	w.since.Store(time.Now().UnixNano())
	n, err := w.r.Read(p)
	w.since.Store(0)
	return n, err
}

type watchedWriter struct {
	w     io.Writer
	since *atomic.Int64
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.since.Store(time.Now().UnixNano())
	n, err := w.w.Write(p)
	w.since.Store(0)
	return n, err
}
