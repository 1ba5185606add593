package cache

import (
	"math/bits"
	"sync"
	"testing"
	"unsafe"
)

// BufferPool recycles the buffers chunks live in. Decoding a chunk into
// fresh memory costs as much as decrypting it on a virtual machine: every
// 4 KiB page is faulted in anew (about 11 µs a page on the machines backupfs
// is benchmarked on, 0.75 s for 256 MiB). Reusing buffers removes that cost
// after the first use; large buffers also come from huge pages, which make
// even the first use cheap.
//
// Buffers of up to 1 MiB come from the Go heap, in size classes a quarter
// of a power of two apart. Larger ones are whole multiples of 2 MiB
// (one transparent huge page each, on Linux mapped outside the Go heap):
// memory held by the pool is then exactly what the chunk cache counts, and
// no garbage collection is needed to reuse or return it. Idle large
// buffers are kept up to a bound and unmapped beyond it.
//
// Buffers from Get are not zeroed: callers must write every byte they use.
// A buffer must not be touched after Put; in tests Put overwrites it, so a
// use after release shows up as wrong bytes.
type BufferPool struct {
	classes [numClasses]sync.Pool

	mu      sync.Mutex
	free    map[int][][]byte     // idle large buffers by capacity
	offHeap map[uintptr]struct{} // large buffers mapped outside the heap, by address
	idle    int64                // bytes in free
	mapped  int64                // bytes of large buffers in existence
	maxIdle int64
}

const (
	minPooled  = 64 << 10 // smaller buffers are cheap to allocate
	minShift   = 16       // log2(minPooled)
	maxShift   = 20       // largest heap class: 1 MiB
	numClasses = (maxShift - minShift + 1) * 4

	// HugePage is the granule of large buffers.
	HugePage = 2 << 20

	// DefaultMaxIdle bounds the idle large buffers a pool keeps.
	DefaultMaxIdle = 16 << 20
)

// poison makes Put overwrite buffers in test binaries.
var poison = testing.Testing()

// classOf returns the heap class of a buffer of n bytes and that class's
// size, or -1 for sizes outside the heap classes.
func classOf(n int) (class, size int) {
	if n <= minPooled || n > 1<<maxShift {
		return -1, n
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << k / 4
	j := (n - 1<<k + step - 1) / step // 1..4
	return (k-minShift)*4 + j - 1, 1<<k + j*step
}

// isLarge reports whether a buffer of n bytes is a large one.
func isLarge(n int) bool { return n > 1<<maxShift }

// largeSize rounds n up to whole huge pages.
func largeSize(n int) int { return (n + HugePage - 1) / HugePage * HugePage }

// Get returns a buffer of length n. A nil pool allocates.
func (p *BufferPool) Get(n int) []byte {
	if p == nil {
		return make([]byte, n)
	}
	if isLarge(n) {
		return p.getLarge(n)
	}
	class, size := classOf(n)
	if class < 0 {
		return make([]byte, n)
	}
	if b, ok := p.classes[class].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, size)
}

func (p *BufferPool) getLarge(n int) []byte {
	size := largeSize(n)
	p.mu.Lock()
	if list := p.free[size]; len(list) > 0 {
		b := list[len(list)-1]
		p.free[size] = list[:len(list)-1]
		p.idle -= int64(size)
		p.mu.Unlock()
		return b[:n]
	}
	p.mapped += int64(size)
	p.mu.Unlock()
	b, off := allocLarge(size)
	if off {
		p.mu.Lock()
		if p.offHeap == nil {
			p.offHeap = make(map[uintptr]struct{})
		}
		p.offHeap[base(b)] = struct{}{}
		p.mu.Unlock()
	}
	return b[:n]
}

// Put returns a buffer obtained from Get. The caller must not use it
// afterwards.
func (p *BufferPool) Put(b []byte) {
	if p == nil || cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	if poison {
		for i := range b {
			b[i] = 0xA5
		}
	}
	if isLarge(len(b)) {
		p.putLarge(b)
		return
	}
	class, size := classOf(len(b))
	if class < 0 || size != len(b) {
		return // not one of ours
	}
	p.classes[class].Put(&b)
}

func (p *BufferPool) putLarge(b []byte) {
	size := len(b)
	if size%HugePage != 0 {
		return // not one of ours
	}
	p.mu.Lock()
	maxIdle := p.maxIdle
	if maxIdle == 0 {
		maxIdle = DefaultMaxIdle
	}
	if p.idle+int64(size) > maxIdle {
		p.mapped -= int64(size)
		_, off := p.offHeap[base(b)]
		delete(p.offHeap, base(b))
		p.mu.Unlock()
		if off {
			freeLarge(b)
		}
		return
	}
	if p.free == nil {
		p.free = make(map[int][][]byte)
	}
	p.free[size] = append(p.free[size], b)
	p.idle += int64(size)
	p.mu.Unlock()
}

// SetMaxIdle bounds the bytes of idle large buffers the pool keeps; more
// are returned to the system. Zero means DefaultMaxIdle.
func (p *BufferPool) SetMaxIdle(n int64) {
	p.mu.Lock()
	p.maxIdle = n
	p.mu.Unlock()
}

// PoolStats describes a pool's large buffers.
type PoolStats struct {
	Mapped int64 // bytes of large buffers in existence, in use or idle
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
