// Package cache holds decoded chunks in memory, bounded by bytes.
//
// The cache knows nothing about repository formats: a caller asks for a key
// and supplies the function that produces the bytes on a miss (fetching,
// decrypting, decompressing and verifying a chunk). Whatever the number of
// readers asking for the same key at once, that function runs once.
package cache

import (
	"context"
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

// FillFunc produces the bytes of a missing chunk. The returned slice is
// shared with every reader of the key and must never be modified afterwards.
type FillFunc func(ctx context.Context) ([]byte, error)

// Stats are cumulative counters and current sizes.
type Stats struct {
	Hits       int64 // Get found the chunk cached
	Misses     int64 // Get had to fill the chunk itself
	Joined     int64 // Get waited for a fill already under way
	Prefetched int64 // background fills started by Prefetch
	Evictions  int64
	FillErrors int64
	FillBytes  int64 // bytes produced by fills
	Bytes      int64 // bytes held now
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

// ChunkCache is a least-recently-used cache of immutable byte slices bounded
// by their total length. It is safe for concurrent use.
type ChunkCache struct {
	maxBytes int64

	mu       sync.Mutex
	lru      *simplelru.LRU[Key, []byte]
	bytes    int64
	inflight map[Key]*fill

	prefetchSlots chan struct{}

	hits, misses, joined, prefetched, evictions, fillErrors, fillBytes atomic.Int64
}

type fill struct {
	done chan struct{}
	data []byte
	err  error
}

// New returns a cache holding at most maxBytes of chunk data. Background
// prefetches run on at most GOMAXPROCS goroutines.
func New(maxBytes int64) *ChunkCache {
	c := &ChunkCache{
		maxBytes:      maxBytes,
		inflight:      make(map[Key]*fill),
		prefetchSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	// The entry count is not the bound; bytes are (see add).
	lru, err := simplelru.NewLRU[Key, []byte](1<<31-1, func(_ Key, v []byte) {
		c.bytes -= int64(len(v))
		c.evictions.Add(1)
	})
	if err != nil {
		panic(err) // only for a non-positive size
	}
	c.lru = lru
	return c
}

// MaxBytes returns the byte bound given to New.
func (c *ChunkCache) MaxBytes() int64 { return c.maxBytes }

// Get returns the chunk for k, calling fill on a miss. Concurrent Gets of the
// same key share one fill. A Get whose ctx ends stops waiting, but the fill
// goes on for the others and for the cache. Errors are not cached.
func (c *ChunkCache) Get(ctx context.Context, k Key, fn FillFunc) ([]byte, error) {
	c.mu.Lock()
	if v, ok := c.lru.Get(k); ok {
		c.mu.Unlock()
		c.hits.Add(1)
		return v, nil
	}
	if f, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		c.joined.Add(1)
		return wait(ctx, f)
	}
	f := &fill{done: make(chan struct{})}
	c.inflight[k] = f
	c.mu.Unlock()
	c.misses.Add(1)

	// The fill must not die with this caller: others may be waiting for it.
	go c.run(context.WithoutCancel(ctx), k, f, fn)
	return wait(ctx, f)
}

// Prefetch starts filling k in the background unless it is cached, already
// being filled, or every prefetch slot is busy. It reports whether it started
// a fill. Prefetches are hints: dropping one costs only latency later.
func (c *ChunkCache) Prefetch(ctx context.Context, k Key, fn FillFunc) bool {
	select {
	case c.prefetchSlots <- struct{}{}:
	default:
		return false
	}
	c.mu.Lock()
	if c.lru.Contains(k) {
		c.mu.Unlock()
		<-c.prefetchSlots
		return false
	}
	if _, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-c.prefetchSlots
		return false
	}
	f := &fill{done: make(chan struct{})}
	c.inflight[k] = f
	c.mu.Unlock()
	c.prefetched.Add(1)
	go func() {
		defer func() { <-c.prefetchSlots }()
		c.run(context.WithoutCancel(ctx), k, f, fn)
	}()
	return true
}

// Contains reports whether k is cached, without changing its recency.
func (c *ChunkCache) Contains(k Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Contains(k)
}

// Peek returns k's chunk if it is cached, without filling it.
func (c *ChunkCache) Peek(k Key) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(k)
}

func (c *ChunkCache) run(ctx context.Context, k Key, f *fill, fn FillFunc) {
	data, err := safeFill(ctx, fn)
	f.data, f.err = data, err

	c.mu.Lock()
	delete(c.inflight, k)
	if err == nil {
		c.add(k, data)
	}
	c.mu.Unlock()

	if err != nil {
		c.fillErrors.Add(1)
	} else {
		c.fillBytes.Add(int64(len(data)))
	}
	close(f.done)
}

// safeFill turns a panic in a fill function into an error, so one bad chunk
// can never take the process down.
func safeFill(ctx context.Context, fn FillFunc) (data []byte, err error) {
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

// add inserts v and evicts least recently used chunks until the total fits.
// A chunk larger than the whole cache is handed to its readers but not kept.
// The caller holds c.mu.
func (c *ChunkCache) add(k Key, v []byte) {
	size := int64(len(v))
	if size > c.maxBytes {
		return
	}
	if old, ok := c.lru.Peek(k); ok {
		c.bytes -= int64(len(old))
	}
	c.lru.Add(k, v)
	c.bytes += size
	for c.bytes > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

func wait(ctx context.Context, f *fill) ([]byte, error) {
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
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
		Evictions:  c.evictions.Load(),
		FillErrors: c.fillErrors.Load(),
		FillBytes:  c.fillBytes.Load(),
		Bytes:      bytes,
		Entries:    entries,
		MaxBytes:   c.maxBytes,
	}
}
