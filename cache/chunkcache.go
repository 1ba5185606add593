// Package cache holds decoded chunks in memory, bounded by bytes.
//
// The cache knows nothing about repository formats: a caller asks for a key
// and supplies the function that produces the bytes on a miss (fetching,
// decrypting, decompressing and verifying a chunk). Whatever the number of
// readers asking for the same key at once, that function runs once.
//
// Chunks are reference counted so that their buffers can be reused: Get
// hands out a *Chunk that the caller releases when done with its bytes,
// and a buffer goes back to the BufferPool only when the cache has dropped
// the chunk and every reader has released it.
//
// The byte bound covers every pooled buffer: chunks cached, chunks being
// decoded and chunks readers still hold. Fills allocate through
// BufferPool.Alloc, which makes them wait for room (evicting what no one
// holds first) rather than exceed the bound; only one fill at a time may
// go past it, when a single chunk is larger than the room there is.
// Prefetches never wait and never go past it: without room they are
// dropped, and the reader decodes when it comes.
package cache

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Key names a cached chunk. Space separates key spaces that must never share
// entries even if their addresses collide: chunks verified under different
// hash keys, different repositories, or different kinds of object. Allocate
// spaces with NewSpace.
type Key struct {
	Space uint64
	Addr  [32]byte
}

var lastSpace atomic.Uint64

// NewSpace returns a key space unused so far in this process.
func NewSpace() uint64 { return lastSpace.Add(1) }

// FillFunc produces the bytes of a missing chunk. If they live in a buffer
// from the cache's pool (Buffers), buf is that buffer, to be recycled when
// the chunk is dropped; otherwise buf is nil. data is shared with every
// reader of the key and must never be modified afterwards.
//
// A fill takes its buffers with Buffers().Alloc(ctx, n), passing the
// context it was given: that is how they are admitted under the cache's
// bound before they are allocated (and how a prefetch is refused instead of
// waiting). An error from Alloc is the fill's error.
type FillFunc func(ctx context.Context) (data, buf []byte, err error)

// Chunk is a cached chunk held by a reader. Its bytes stay valid until
// Release; after that they may be reused for another chunk.
type Chunk struct {
	data []byte
	buf  []byte // pooled buffer holding data, or nil
	refs atomic.Int32
	pool *BufferPool

	unread bool // prefetched and not yet asked for (guarded by the cache's mu)
}

// Bytes returns the chunk's bytes. They must not be modified.
func (c *Chunk) Bytes() []byte { return c.data }

// Len returns the chunk's length.
func (c *Chunk) Len() int { return len(c.data) }

// Release gives up the reader's hold on the chunk. Each Chunk returned by
// Get must be released exactly once; forgetting to costs only the reuse of
// its buffer, releasing twice would hand its bytes to someone else.
func (c *Chunk) Release() {
	switch n := c.refs.Add(-1); {
	case n == 0:
		if c.buf != nil {
			c.pool.Put(c.buf)
		}
		c.data, c.buf = nil, nil
	case n < 0:
		panic("cache: chunk released more often than acquired")
	}
}

// memory is what the chunk occupies.
func (c *Chunk) memory() int64 {
	if c.buf != nil {
		return int64(cap(c.buf))
	}
	return int64(cap(c.data))
}

// Stats are cumulative counters and current sizes.
type Stats struct {
	Hits       int64 // Get found the chunk cached
	Misses     int64 // Get had to fill the chunk itself
	Joined     int64 // Get waited for a fill already under way
	Prefetched int64 // background fills started by Prefetch
	Refused    int64 // prefetches dropped for want of room within the bound
	Evictions  int64
	FillErrors int64
	FillBytes  int64 // bytes produced by fills
	Bytes      int64 // memory held now
	Entries    int   // chunks held now
	MaxBytes   int64
}

// HitRatio returns the fraction of Gets served without a fill of their own.
func (s Stats) HitRatio() float64 {
	total := s.Hits + s.Misses + s.Joined
	if total == 0 {
		return 0
	}
	return float64(s.Hits+s.Joined) / float64(total)
}

// ChunkCache is a least-recently-used cache of immutable chunks bounded by
// the memory they occupy. It is safe for concurrent use.
type ChunkCache struct {
	maxBytes int64
	buffers  BufferPool

	mu       sync.Mutex
	lru      *simplelru.LRU[Key, *Chunk]
	bytes    int64
	unread   int64 // bytes of prefetched chunks no Get has asked for yet
	inflight map[Key]*fill

	// Prefetches run on at most maxPrefetchers goroutines; requests
	// beyond them wait in queue, which the goroutines drain before
	// exiting, so decoding goes on while the reader that asked is blocked.
	prefetchers    int
	maxPrefetchers int
	queue          []prefetchReq

	hits, misses, joined, prefetched, refused, evictions, fillErrors, fillBytes atomic.Int64
}

// fill is a fill under way. waiters counts the Gets that will receive its
// chunk, each owed one reference; finished is set, under the cache's
// mutex, when that count is settled.
type fill struct {
	done     chan struct{}
	chunk    *Chunk
	err      error
	waiters  int32
	finished bool
}

// prefetchReq is a queued prefetch.
type prefetchReq struct {
	ctx context.Context
	k   Key
	fn  FillFunc
}

// maxQueued bounds the prefetch queue: beyond it Prefetch refuses, and the
// caller asks again later.
const maxQueued = 32

// Option configures a cache made by New.
type Option func(*options)

type options struct {
	decoders int
}

// WithDecoders sets how many goroutines at most fill prefetches at once:
// one per core the process may use. Zero (the default) means GOMAXPROCS; a
// program that runs with more Ps than cores (so that requests are served
// while every core decodes) passes the cores.
func WithDecoders(n int) Option { return func(o *options) { o.decoders = n } }

// New returns a cache holding at most maxBytes of chunks, counting those
// being decoded and those readers hold (see BufferPool.Alloc).
func New(maxBytes int64, opts ...Option) *ChunkCache {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	decoders := o.decoders
	if decoders <= 0 {
		decoders = runtime.GOMAXPROCS(0)
	}
	c := &ChunkCache{
		maxBytes:       maxBytes,
		inflight:       make(map[Key]*fill),
		maxPrefetchers: decoders,
	}
	// The entry count is not the bound; bytes are (see add).
	lru, err := simplelru.NewLRU[Key, *Chunk](1<<31-1, func(_ Key, ch *Chunk) {
		c.bytes -= ch.memory()
		c.markRead(ch)
		c.evictions.Add(1)
		ch.Release() // the cache's own reference
	})
	if err != nil {
		panic(err) // only for a non-positive size
	}
	c.lru = lru
	c.buffers.reclaim = c.makeRoom
	c.buffers.limit = maxBytes
	return c
}

// makeRoom evicts least recently used chunks until need more bytes of
// buffers fit the bound: called before a fill maps a new buffer, so that
// chunks being decoded count against the cache like cached ones.
func (c *ChunkCache) makeRoom(need int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.buffers.inUse()+need > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			return
		}
	}
}

// MaxBytes returns the byte bound given to New.
func (c *ChunkCache) MaxBytes() int64 { return c.maxBytes }

// Buffers returns the pool fill functions should take buffers from.
func (c *ChunkCache) Buffers() *BufferPool { return &c.buffers }

// Get returns the chunk for k, calling fn on a miss. Concurrent Gets of the
// same key share one fill. A Get whose ctx ends stops waiting, but the fill
// goes on for the others and for the cache. Errors are not cached. The
// caller must Release the chunk.
func (c *ChunkCache) Get(ctx context.Context, k Key, fn FillFunc) (*Chunk, error) {
	c.mu.Lock()
	if ch, ok := c.lru.Get(k); ok {
		ch.refs.Add(1)
		c.markRead(ch)
		c.mu.Unlock()
		c.hits.Add(1)
		return ch, nil
	}
	if f, ok := c.inflight[k]; ok {
		f.waiters++
		c.mu.Unlock()
		c.joined.Add(1)
		return c.wait(ctx, f)
	}
	f := &fill{done: make(chan struct{}), waiters: 1}
	c.inflight[k] = f
	c.mu.Unlock()
	c.misses.Add(1)

	// The fill must not die with this caller: others may be waiting for it.
	go c.run(context.WithoutCancel(ctx), k, f, fn, false)
	return c.wait(ctx, f)
}

// Prefetch asks for k to be filled in the background unless it is cached
// or already being filled. Prefetched chunks that no Get has asked for yet
// may fill at most half the cache, so that readers sharing the cache do
// not evict each other's readahead before they read it. Requests run in
// the order given, on at most WithDecoders goroutines at once; a goroutine
// that finishes one takes the next, so prefetching keeps every core busy
// while the reader that asked waits for an earlier chunk. A prefetch's
// buffers are admitted only if they fit the bound: without room it is
// dropped (see run). Prefetch reports false when the queue is full,
// unread prefetches fill half the cache, or readers are waiting for room,
// so the caller can ask again later; prefetches are hints, and dropping
// one costs only latency.
func (c *ChunkCache) Prefetch(ctx context.Context, k Key, fn FillFunc) bool {
	c.mu.Lock()
	if c.present(k) {
		c.mu.Unlock()
		return true
	}
	if c.unread >= c.maxBytes/2 || c.buffers.waiting() {
		// Prefetched chunks nobody has read yet already fill half the
		// cache: more would evict them before their readers come. Or
		// readers are waiting for memory: they come first.
		c.mu.Unlock()
		return false
	}
	if c.prefetchers >= c.maxPrefetchers {
		defer c.mu.Unlock()
		for _, r := range c.queue {
			if r.k == k {
				return true
			}
		}
		if len(c.queue) >= maxQueued {
			return false
		}
		c.queue = append(c.queue, prefetchReq{ctx, k, fn})
		return true
	}
	c.prefetchers++
	f := c.startPrefetch(k)
	c.mu.Unlock()
	go c.prefetchLoop(ctx, k, f, fn)
	return true
}

// present reports whether k is cached or being filled. The caller holds
// c.mu.
func (c *ChunkCache) present(k Key) bool {
	_, inflight := c.inflight[k]
	return inflight || c.lru.Contains(k)
}

// startPrefetch registers a fill for k with no waiter yet. The caller
// holds c.mu.
func (c *ChunkCache) startPrefetch(k Key) *fill {
	f := &fill{done: make(chan struct{})}
	c.inflight[k] = f
	c.prefetched.Add(1)
	return f
}

// prefetchLoop fills k, then queued requests, until the queue is empty.
func (c *ChunkCache) prefetchLoop(ctx context.Context, k Key, f *fill, fn FillFunc) {
	for {
		if dropped := c.run(context.WithoutCancel(ctx), k, f, fn, true); dropped {
			// No room: the queued hints would be refused too.
			c.mu.Lock()
			c.refused.Add(int64(len(c.queue)))
			clear(c.queue)
			c.queue = c.queue[:0]
			c.mu.Unlock()
		}
		// The reader waiting for this chunk was just made runnable on this
		// thread, behind us; let it copy the chunk out before the next
		// fill takes the core for milliseconds (otherwise it waits for
		// preemption, up to 10 ms, while every core decodes ahead of it).
		runtime.Gosched()
		c.mu.Lock()
		f = nil
		for f == nil && len(c.queue) > 0 {
			r := c.queue[0]
			c.queue[0] = prefetchReq{}
			c.queue = c.queue[1:]
			if !c.present(r.k) {
				ctx, k, fn = r.ctx, r.k, r.fn
				f = c.startPrefetch(k)
			}
		}
		if f == nil {
			c.prefetchers--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// Contains reports whether k is cached, without changing its recency.
func (c *ChunkCache) Contains(k Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Contains(k)
}

// Len returns the length of k's chunk if it is cached.
func (c *ChunkCache) Len(k Key) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.lru.Peek(k)
	if !ok {
		return 0, false
	}
	return len(ch.data), true
}

// run fills k for f. Its buffers are admitted under the cache's bound
// (see BufferPool.Alloc): a prefetch's only if they fit, so a prefetch with
// no room is dropped (reported by dropped) unless a reader has asked for
// the chunk meanwhile, in which case it is filled for that reader.
func (c *ChunkCache) run(ctx context.Context, k Key, f *fill, fn FillFunc, prefetch bool) (dropped bool) {
	data, buf, err := c.admitted(ctx, fn, prefetch)
	if prefetch && errors.Is(err, ErrNoRoom) {
		c.mu.Lock()
		if f.waiters == 0 {
			delete(c.inflight, k)
			f.finished = true
			f.err = err
			c.mu.Unlock()
			c.refused.Add(1)
			close(f.done)
			return true
		}
		c.mu.Unlock()
		data, buf, err = c.admitted(ctx, fn, false)
	}
	var ch *Chunk
	if err == nil {
		ch = &Chunk{data: data, buf: buf, pool: &c.buffers}
	}

	c.mu.Lock()
	delete(c.inflight, k)
	f.finished = true
	if ch != nil {
		// One reference per waiting Get, one for the cache if it keeps the
		// chunk; with neither (a prefetch too big to keep), none: recycle.
		refs := f.waiters
		cached := ch.memory() <= c.maxBytes
		if cached {
			refs++
		}
		ch.refs.Store(refs)
		if cached {
			if f.waiters == 0 { // a prefetch no reader has asked for yet
				ch.unread = true
				c.unread += ch.memory()
			}
			c.add(k, ch)
		} else if refs == 0 {
			ch.refs.Store(1)
			ch.Release()
		}
	}
	f.chunk, f.err = ch, err
	c.mu.Unlock()

	if err != nil {
		c.fillErrors.Add(1)
	} else {
		c.fillBytes.Add(int64(len(data)))
	}
	close(f.done)
	return false
}

// admitted runs fn under a ticket of the pool's admission, which its
// allocations (BufferPool.Alloc with its context) follow.
func (c *ChunkCache) admitted(ctx context.Context, fn FillFunc, prefetch bool) (data, buf []byte, err error) {
	t := &ticket{prefetch: prefetch}
	defer c.buffers.endTicket(t)
	return safeFill(withTicket(ctx, t), fn)
}

// safeFill turns a panic in a fill function into an error, so one bad chunk
// can never take the process down.
func safeFill(ctx context.Context, fn FillFunc) (data, buf []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r}
		}
	}()
	return fn(ctx)
}

// PanicError reports a panic inside a fill function.
type PanicError struct{ Value any }

func (e *PanicError) Error() string { return "panic while decoding chunk: " + stringify(e.Value) }

func stringify(v any) string {
	switch v := v.(type) {
	case error:
		return v.Error()
	case string:
		return v
	default:
		return "non-error panic value"
	}
}

// markRead records that ch has been asked for. The caller holds c.mu.
func (c *ChunkCache) markRead(ch *Chunk) {
	if ch.unread {
		ch.unread = false
		c.unread -= ch.memory()
	}
}

// add inserts ch (which carries the cache's reference) and evicts least
// recently used chunks until the total fits. The caller holds c.mu.
func (c *ChunkCache) add(k Key, ch *Chunk) {
	// Fills are single-flight, so k is not cached; if it were, removing
	// it releases and unaccounts it through the eviction callback.
	c.lru.Remove(k)
	c.lru.Add(k, ch)
	c.bytes += ch.memory()
	// The bound covers all chunk memory: besides what is cached, chunks
	// being decoded and chunks evicted while a reader still held them
	// (both in pooled buffers). Evicting frees at once what no reader
	// holds; the rest follows as readers release.
	for c.bytes > c.maxBytes || c.buffers.inUse() > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// wait waits for a fill this Get is counted in, and returns its chunk with
// the reference owed to this Get. A Get that gives up gives its reference
// back.
func (c *ChunkCache) wait(ctx context.Context, f *fill) (*Chunk, error) {
	select {
	case <-f.done:
		return f.chunk, f.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !f.finished {
		f.waiters--
		c.mu.Unlock()
		return nil, context.Cause(ctx)
	}
	c.mu.Unlock()
	<-f.done // settled, so about to be closed
	if f.chunk != nil {
		f.chunk.Release()
	}
	return nil, context.Cause(ctx)
}

// Stats returns a snapshot of the counters.
func (c *ChunkCache) Stats() Stats {
	c.mu.Lock()
	bytes, entries := c.bytes, c.lru.Len()
	c.mu.Unlock()
	return Stats{
		Hits:       c.hits.Load(),
		Misses:     c.misses.Load(),
		Joined:     c.joined.Load(),
		Prefetched: c.prefetched.Load(),
		Refused:    c.refused.Load(),
		Evictions:  c.evictions.Load(),
		FillErrors: c.fillErrors.Load(),
		FillBytes:  c.fillBytes.Load(),
		Bytes:      bytes,
		Entries:    entries,
		MaxBytes:   c.maxBytes,
	}
}
