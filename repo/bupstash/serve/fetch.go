package serve

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// How chunks are found, in order: the held window (chunks fetched
// ahead, when there is no disk cache), the disk cache, a fetch already
// under way (a prefetch, another reader's), and last a fetch of one's
// own, through the route the server allows (see route). Every chunk the
// server sends is put in the disk cache.

// ReadChunk returns the chunk ref names, as the server stores it,
// unverified. Errors match bupstash.ErrUnavailable (the server cannot be
// reached, or broke off twice), bupstash.ErrPermission (the server does
// not give this client data), bupstash.ErrChunkMissing (the server does
// not have it) and otherwise name what went wrong, with the server's own
// words.
func (s *Source) ReadChunk(ctx context.Context, ref bupstash.ChunkRef, pool *cache.BufferPool) (_ []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && s.closed.Load() {
			// Ended by Close (an unmount, Ctrl-C): interrupted, not failed.
			err = fmt.Errorf("%s: %w", s.cmd.Name, errSourceClosed)
		}
	}()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	for range 3 {
		if b, ok := s.local(ref.Addr, pool); ok {
			return b, nil
		}
		fl, mine := s.flights.start(ref.Addr)
		if mine {
			b, err := s.fetch(ctx, ref, pool)
			s.flights.end(ref.Addr, fl, func() {
				// Readers joined this fetch: leave them a copy (on disk
				// already if there is a disk cache).
				if err == nil && s.opts.Cache == nil {
					s.deposit(ref.Addr, append(pool.Get(len(b))[:0], b...), pool)
				}
			})
			return b, err
		}
		select {
		case <-fl.done:
		case <-ctx.Done():
			fl.leave()
			return nil, ctx.Err()
		}
		fl.leave()
	}
	return s.fetch(ctx, ref, pool)
}

// local takes a chunk from the held window or the disk cache.
func (s *Source) local(addr bupstash.Address, pool *cache.BufferPool) ([]byte, bool) {
	if b, ok := s.held.take(addr); ok {
		return b, true
	}
	if s.opts.Cache != nil {
		if b, ok := s.opts.Cache.Get(addr, pool); ok {
			s.stats.cacheHits.Add(1)
			return b, true
		}
	}
	return nil, false
}

// holds reports whether a chunk is held, cached or on its way.
func (s *Source) holds(addr bupstash.Address) bool {
	return s.held.contains(addr) || s.flights.get(addr) != nil || (s.opts.Cache != nil && s.opts.Cache.Contains(addr))
}

// deposit keeps a received chunk nobody is waiting for yet: in the held
// window, unless there is a disk cache, where received put it already
// (the buffer then goes back to pool).
func (s *Source) deposit(addr bupstash.Address, b []byte, pool *cache.BufferPool) {
	if s.opts.Cache != nil {
		pool.Put(b)
		return
	}
	s.held.add(addr, b, pool)
}

// received counts a chunk from the server and keeps a copy on disk.
func (s *Source) received(addr bupstash.Address, b []byte) {
	s.stats.fetched.Add(1)
	s.stats.fetchedBytes.Add(int64(len(b)))
	if s.opts.Cache != nil {
		s.opts.Cache.Put(addr, b)
	}
}

// RejectChunk forgets a chunk that failed verification, so that the
// next read fetches it again.
func (s *Source) RejectChunk(addr bupstash.Address) {
	s.held.drop(addr)
	if s.opts.Cache != nil {
		s.opts.Cache.Remove(addr)
	}
}

// fetch reads a chunk from the server, retrying once on a new connection
// when the one it went over broke.
func (s *Source) fetch(ctx context.Context, ref bupstash.ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	var err error
	for attempt := range 2 {
		if attempt > 0 {
			s.stats.retries.Add(1)
		}
		var b []byte
		b, err = s.fetchOnce(ctx, ref, pool)
		if err == nil {
			return b, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if !retryable(err) {
			break
		}
		s.log.Debug("retrying a read on a new connection", "chunk", ref.Addr.String(), "err", err)
	}
	return nil, s.readError(err)
}

// errSourceClosed ends the reads of a closed Source: an interruption
// (context.Canceled), which readers neither log nor count as damage.
var errSourceClosed error = &subclass{"repository closed", context.Canceled}

// retryable reports whether a read that failed with err may succeed on
// a new connection: the connection broke (the server exited, ssh
// failed, a stall), or the server sent something the protocol does not
// allow. A refusal or a missing chunk would only happen again.
func retryable(err error) bool {
	switch {
	case errors.Is(err, ErrPermission), errors.Is(err, ErrNotFound), errors.Is(err, ErrVersion),
		errors.Is(err, errDial):
		return false
	}
	return errors.Is(err, ErrDisconnected) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrClosed) ||
		errors.Is(err, bupstash.ErrCorrupt) || errors.Is(err, ErrUnavailable)
}

// readError names the source in a failed read's error and gives it the
// class the reader expects.
func (s *Source) readError(err error) error {
	if errors.Is(err, ErrNotFound) {
		// Collected by bupstash gc, most likely: the item list is stale.
		s.wantResync()
		return fmt.Errorf("%w: %w", bupstash.ErrChunkMissing, s.named(err))
	}
	return s.named(err)
}

// named prefixes an error with the repository's name, unless it is
// there already (dial errors carry it).
func (s *Source) named(err error) error {
	if strings.HasPrefix(err.Error(), s.cmd.Name+":") {
		return err
	}
	return fmt.Errorf("%s: %w", s.cmd.Name, err)
}

// fetchOnce fetches a chunk through the route the server allows.
func (s *Source) fetchOnce(ctx context.Context, ref bupstash.ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	if s.access.usePull(s) {
		b, err := s.pulls.fetch(ctx, ref.Addr, pool)
		if err == nil || !s.access.pullFailed(s, err) {
			return b, err
		}
		// Pull sessions are refused: on to partial requests.
	}
	if ref.Tree == bupstash.IndexKind {
		return s.streams.fetch(ctx, ref, pool)
	}
	if err := s.access.dataRefused(); err != nil {
		return nil, err
	}
	b, err := s.cursors.fetch(ctx, ref, pool)
	if errors.Is(err, ErrPermission) {
		s.access.refuseData(err)
	}
	return b, err
}

// PrefetchChunks starts fetching chunks a reader will need soon, several
// in flight at once, and keeps them (on disk, or in the held window)
// until ReadChunk asks. It returns how many of refs, from the first, it
// took on; the caller offers the rest again later.
func (s *Source) PrefetchChunks(refs []bupstash.ChunkRef, pool *cache.BufferPool) int {
	if s.closed.Load() || len(refs) == 0 {
		return len(refs)
	}
	var want []bupstash.ChunkRef
	taken := 0
	for _, ref := range refs {
		if !s.holds(ref.Addr) {
			if !s.roomFor(len(want) + 1) {
				break
			}
			want = append(want, ref)
		}
		taken++
	}
	if len(want) == 0 {
		return taken
	}
	switch {
	case s.access.usePull(s) && s.access.pullKnown():
		if !s.pulls.prefetch(want, pool) {
			return 0
		}
	case want[0].Tree == bupstash.DataKind && s.access.dataRefused() == nil && !s.access.usePull(s):
		n := s.cursors.prefetch(want, pool)
		if n < len(want) {
			// Not all could go out: report the prefix that did.
			for i, ref := range refs {
				if ref.Addr == want[n].Addr {
					return i
				}
			}
		}
	default:
		// Index streams run ahead by themselves; and nothing goes out
		// until the route is known.
		return 0
	}
	return taken
}

// maxPrefetch bounds the chunks fetched ahead and not yet asked for: a
// pull batch or cursor requests in flight, plus the held window.
const maxPrefetch = 8

// roomFor reports whether n more chunks may be fetched ahead.
func (s *Source) roomFor(n int) bool {
	if int(s.flights.prefetching.Load())+n > maxPrefetch {
		return false
	}
	return s.opts.Cache != nil || s.held.room() > 0
}

// window holds chunks fetched ahead of their readers when there is no
// disk cache: least recently added first out, bounded by bytes. Its
// buffers come from the readers' pool, and so count against the chunk
// cache's bound.
type window struct {
	max int64

	mu     sync.Mutex
	bytes  int64
	order  *list.List // of *heldChunk, newest first
	byAddr map[bupstash.Address]*list.Element
}

type heldChunk struct {
	addr bupstash.Address
	b    []byte
	pool *cache.BufferPool
}

func newWindow(max int64) *window {
	return &window{max: max, order: list.New(), byAddr: map[bupstash.Address]*list.Element{}}
}

func (w *window) add(addr bupstash.Address, b []byte, pool *cache.BufferPool) {
	w.mu.Lock()
	if _, ok := w.byAddr[addr]; ok || int64(len(b)) > w.max {
		w.mu.Unlock()
		pool.Put(b)
		return
	}
	w.byAddr[addr] = w.order.PushFront(&heldChunk{addr, b, pool})
	w.bytes += int64(len(b))
	var drop []*heldChunk
	for w.bytes > w.max {
		e := w.order.Back()
		h := w.order.Remove(e).(*heldChunk)
		delete(w.byAddr, h.addr)
		w.bytes -= int64(len(h.b))
		drop = append(drop, h)
	}
	w.mu.Unlock()
	for _, h := range drop {
		h.pool.Put(h.b)
	}
}

// take removes a chunk and hands its buffer to the caller.
func (w *window) take(addr bupstash.Address) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.byAddr[addr]
	if !ok {
		return nil, false
	}
	h := w.order.Remove(e).(*heldChunk)
	delete(w.byAddr, addr)
	w.bytes -= int64(len(h.b))
	return h.b, true
}

// drop removes a chunk, giving its buffer back to its pool.
func (w *window) drop(addr bupstash.Address) {
	w.mu.Lock()
	e, ok := w.byAddr[addr]
	if !ok {
		w.mu.Unlock()
		return
	}
	h := w.order.Remove(e).(*heldChunk)
	delete(w.byAddr, addr)
	w.bytes -= int64(len(h.b))
	w.mu.Unlock()
	h.pool.Put(h.b)
}

func (w *window) contains(addr bupstash.Address) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.byAddr[addr]
	return ok
}

// room returns the bytes still free.
func (w *window) room() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.max - w.bytes
}

func (w *window) clear() {
	w.mu.Lock()
	var all []*heldChunk
	for e := w.order.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*heldChunk))
	}
	w.order.Init()
	clear(w.byAddr)
	w.bytes = 0
	w.mu.Unlock()
	for _, h := range all {
		h.pool.Put(h.b)
	}
}

// flights are the chunks being fetched, so that a second reader of a
// chunk waits for the fetch under way rather than fetching it again.
type flights struct {
	mu          sync.Mutex
	m           map[bupstash.Address]*flight
	prefetching atomic.Int32 // flights started by PrefetchChunks
}

type flight struct {
	done    chan struct{}
	joiners atomic.Int32
}

// leave says a joiner is done waiting.
func (f *flight) leave() { f.joiners.Add(-1) }

// start registers a fetch of addr and returns it with true, or the fetch
// already under way (joined) with false.
func (fs *flights) start(addr bupstash.Address) (*flight, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m == nil {
		fs.m = map[bupstash.Address]*flight{}
	}
	if f, ok := fs.m[addr]; ok {
		f.joiners.Add(1)
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	fs.m[addr] = f
	return f, true
}

func (fs *flights) get(addr bupstash.Address) *flight {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.m[addr]
}

// end finishes a fetch: joined runs first if readers joined it, then they
// are woken.
func (fs *flights) end(addr bupstash.Address, f *flight, joined func()) {
	fs.mu.Lock()
	if fs.m[addr] == f {
		delete(fs.m, addr)
	}
	fs.mu.Unlock()
	if f.joiners.Load() > 0 && joined != nil {
		joined()
	}
	close(f.done)
}

// accessState is what the server lets this client do, learned on the
// way: whether it has pull sessions for us, whether it gives data at
// all. A refusal is remembered for a while, then tried again (a server's
// configuration may change).
type accessState struct {
	mu        sync.Mutex
	pull      pullMode
	pullAt    time.Time
	dataErr   error
	dataErrAt time.Time
}

type pullMode uint8

const (
	pullUnknown pullMode = iota // not tried yet
	pullOn                      // a session was opened
	pullOff                     // refused or not understood
)

// recheckAfter is how long a refusal is believed.
const recheckAfter = time.Minute

// usePull reports whether chunks go through pull sessions.
func (a *accessState) usePull(s *Source) bool {
	if s.opts.NoPull || s.dialer.protocol() < Protocol13 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pull == pullOff && time.Since(a.pullAt) > recheckAfter {
		a.pull = pullUnknown
	}
	return a.pull != pullOff
}

// pullKnown reports whether a pull session has been opened, so that
// prefetches may use them.
func (a *accessState) pullKnown() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pull == pullOn
}

func (a *accessState) pullWorks() {
	a.mu.Lock()
	a.pull = pullOn
	a.mu.Unlock()
}

// pullFailed reports whether err means the server has no pull session
// for this client (it refused, or did not understand), and if so
// remembers it.
func (a *accessState) pullFailed(s *Source, err error) bool {
	if !errors.Is(err, errBeginPull) || !(errors.Is(err, ErrPermission) || errors.Is(err, ErrProtocol)) {
		return false
	}
	a.mu.Lock()
	first := a.pull != pullOff
	a.pull, a.pullAt = pullOff, time.Now()
	a.mu.Unlock()
	if first {
		s.log.Info("the server opens no pull session for this client; reading through partial requests", "err", err)
	}
	return true
}

// dataRefused returns the server's refusal to send data, while it is
// believed.
func (a *accessState) dataRefused() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dataErr != nil && time.Since(a.dataErrAt) > recheckAfter {
		a.dataErr = nil
	}
	return a.dataErr
}

func (a *accessState) refuseData(err error) {
	a.mu.Lock()
	a.dataErr, a.dataErrAt = err, time.Now()
	a.mu.Unlock()
}
