package cache

import (
	"flag"
	"math/bits"
	"slices"
	"sync"
	"unsafe"
)

// BufferPool recycles the buffers chunks live in. Decoding a chunk into
// fresh memory costs as much as decrypting it on a virtual machine: every
// 4 KiB page is faulted in anew (about 11 µs a page on the machines backupfs
// is benchmarked on, 0.75 s for 256 MiB). Reusing buffers removes that cost
// after the first use; large buffers also come from huge pages, which make
// even the first use cheap.
//
// Buffers over 16 KiB are mapped outside the Go heap (on Linux), in size
// classes: up to 1 MiB a quarter of a power of two apart, beyond that whole
// multiples of 2 MiB, each one transparent huge page. Memory held by the
// pool is then exactly what the chunk cache counts, and the garbage
// collector neither scans it nor lets it double: chunks on the heap made
// the heap grow to twice the cache before collecting (a mount reading many
// small files with a 256 MiB cache peaked at 640 MiB). Idle buffers are
// kept while all the pool's memory fits the owner's limit, and unmapped
// beyond it. Smaller buffers come from the heap: they are cheap to
// allocate and few bytes in all.
//
// Buffers from Get are not zeroed: callers must write every byte they use.
// A buffer must not be touched after Put; in tests Put overwrites it, so a
// use after release shows up as wrong bytes.
type BufferPool struct {
	mu      sync.Mutex
	free    map[int][][]byte     // idle buffers by capacity
	offHeap map[uintptr]struct{} // buffers mapped outside the heap, by address
	idle    int64                // bytes in free
	mapped  int64                // bytes of pooled buffers in existence
	maxIdle int64

	// reclaim, when set, is called before a new buffer of need bytes is
	// mapped, without the pool's lock, to free memory first.
	reclaim func(need int64)
	// limit, when set, is what the pool's owner keeps its buffers in use
	// within: Alloc waits for room under it (see admission.go), and idle
	// buffers are kept while all of them fit it (see trimIdle).
	limit int64

	// Admission (see admission.go): allocations waiting for room, first
	// come first served, and the fill allowed past the limit, if any.
	queue []*waiter
	owner *ticket
}

const (
	minPooled = 16 << 10 // smaller buffers are cheap to allocate
	maxShift  = 20       // largest quarter-power-of-two class: 1 MiB

	// HugePage is the granule of large buffers.
	HugePage = 2 << 20

	// DefaultMaxIdle bounds the idle buffers a pool keeps: a leaf's worth
	// or so. With huge pages fresh large buffers are cheap anyway.
	DefaultMaxIdle = 8 << 20
)

// poison reports whether Put overwrites buffers: in test binaries, which
// the flags the testing package registers tell apart (checked on first
// use, after they are registered) without this package importing it; but
// not while benchmarks run, which would measure the overwriting (half the
// time of opening an uncompressed leaf).
var poison = sync.OnceValue(func() bool {
	if flag.Lookup("test.v") == nil {
		return false
	}
	bench := flag.Lookup("test.bench")
	return bench == nil || bench.Value.String() == ""
})

// classSize returns the capacity the pool gives a buffer of n bytes, or
// false for buffers it does not pool.
func classSize(n int) (int, bool) {
	switch {
	case n <= minPooled:
		return 0, false
	case n > 1<<maxShift:
		return (n + HugePage - 1) / HugePage * HugePage, true
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << k / 4
	j := (n - 1<<k + step - 1) / step // 1..4
	return 1<<k + j*step, true
}

// Get returns a buffer of length n at once, counted against the pool's
// limit but never waiting for room (see Alloc, which does). A nil pool
// allocates.
func (p *BufferPool) Get(n int) []byte {
	size, pooled := classSize(n)
	if p == nil || !pooled {
		return make([]byte, n)
	}
	if b := p.takeIdle(size); b != nil {
		return b[:n]
	}
	if p.reclaim != nil {
		// Make room first, so that memory in use never exceeds the bound
		// the owner keeps; what it frees may be a buffer of this size.
		p.reclaim(int64(size))
	}
	p.mu.Lock()
	b, drop := p.takeLocked(size)
	p.mu.Unlock()
	return p.finishTake(b, size, drop)[:n]
}

// takeIdle returns an idle buffer of capacity size, or nil.
func (p *BufferPool) takeIdle(size int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.free[size]
	if len(list) == 0 {
		return nil
	}
	b := list[len(list)-1]
	p.free[size] = list[:len(list)-1]
	p.idle -= int64(size)
	return b
}

// takeLocked takes an idle buffer of capacity size, or counts a new one
// (b nil) for finishTake to map, together with idle buffers that no
// longer fit (drop). Either way the buffer is in use from now on, so an
// admission decision and its accounting happen under one lock. The caller
// holds p.mu.
func (p *BufferPool) takeLocked(size int) (b []byte, drop [][]byte) {
	if list := p.free[size]; len(list) > 0 {
		b = list[len(list)-1]
		p.free[size] = list[:len(list)-1]
		p.idle -= int64(size)
		return b, nil
	}
	p.mapped += int64(size)
	return nil, p.trimIdle(0)
}

// finishTake unmaps what takeLocked dropped and maps the new buffer if it
// did not find an idle one, without the pool's lock.
func (p *BufferPool) finishTake(b []byte, size int, drop [][]byte) []byte {
	for _, d := range drop {
		freeOffHeap(d)
	}
	if b != nil {
		return b
	}
	b, off := allocOffHeap(size)
	if off {
		p.mu.Lock()
		if p.offHeap == nil {
			p.offHeap = make(map[uintptr]struct{})
		}
		p.offHeap[base(b)] = struct{}{}
		p.mu.Unlock()
	}
	return b
}

// allocOffHeap maps a buffer of one of the pool's sizes.
func allocOffHeap(size int) ([]byte, bool) {
	if size%HugePage == 0 {
		return allocLarge(size)
	}
	return allocPages(size)
}

// Put returns a buffer obtained from Get. The caller must not use it
// afterwards.
func (p *BufferPool) Put(b []byte) {
	if p == nil || cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	if size, pooled := classSize(len(b)); !pooled || size != len(b) {
		return // not one of ours
	}
	if poison() {
		for i := range b {
			b[i] = 0xA5
		}
	}
	size := len(b)
	p.mu.Lock()
	if p.free == nil {
		p.free = make(map[int][][]byte)
	}
	p.free[size] = append(p.free[size], b)
	p.idle += int64(size)
	drop := p.trimIdle(size) // this one first, if any must go
	p.wakeHead()             // room for a waiting allocation, perhaps
	p.mu.Unlock()
	for _, d := range drop {
		freeOffHeap(d)
	}
}

// trimIdle takes idle buffers out of the pool, to be unmapped, until it
// is within its bounds: all pooled memory within limit plus maxIdle when
// an owner set a limit, else the idle buffers within maxIdle. So a cache
// that has shrunk (readers released chunks it evicted) keeps the freed
// buffers for the chunks that will replace them, rather than unmapping
// them and faulting fresh pages in for the next. Idle buffers of capacity
// first go first, then the largest. The caller holds p.mu.
func (p *BufferPool) trimIdle(first int) (drop [][]byte) {
	maxIdle := p.maxIdle
	if maxIdle == 0 {
		maxIdle = DefaultMaxIdle
	}
	over := func() bool {
		if p.limit > 0 {
			return p.mapped > p.limit+maxIdle
		}
		return p.idle > maxIdle
	}
	sizes := make([]int, 0, len(p.free))
	for size := range p.free {
		if size != first {
			sizes = append(sizes, size)
		}
	}
	slices.Sort(sizes)
	slices.Reverse(sizes)
	if _, ok := p.free[first]; ok {
		sizes = append([]int{first}, sizes...)
	}
	for _, size := range sizes {
		list := p.free[size]
		for len(list) > 0 && over() {
			b := list[len(list)-1]
			list = list[:len(list)-1]
			p.idle -= int64(size)
			p.mapped -= int64(size)
			if _, off := p.offHeap[base(b)]; off {
				delete(p.offHeap, base(b))
				drop = append(drop, b)
			}
		}
		p.free[size] = list
	}
	return drop
}

// SetMaxIdle bounds the bytes of idle buffers the pool keeps beyond its
// limit (or in all, without one); more are returned to the system. Zero
// means DefaultMaxIdle.
func (p *BufferPool) SetMaxIdle(n int64) {
	p.mu.Lock()
	p.maxIdle = n
	p.mu.Unlock()
}

// inUse returns the bytes of pooled buffers handed out and not yet put
// back.
func (p *BufferPool) inUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mapped - p.idle
}

// PoolStats describes a pool's buffers.
type PoolStats struct {
	Mapped int64 // bytes of pooled buffers in existence, in use or idle
	Idle   int64 // of which idle in the pool
}

// Stats returns the pool's counters.
func (p *BufferPool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Mapped: p.mapped, Idle: p.idle}
}

// base returns the address of a buffer's first byte.
func base(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
