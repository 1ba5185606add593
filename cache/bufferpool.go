package cache

import (
	"math/bits"
	"sync"
)

// BufferPool recycles the large buffers chunks live in. Decoding a chunk
// into fresh memory costs as much as decrypting it on a virtual machine
// (every page is faulted in anew); reusing buffers removes that cost.
//
// Buffers come in size classes a quarter of a power of two apart, so a
// buffer is at most 25% larger than asked for. Buffers from Get are not
// zeroed: callers must write every byte they use.
type BufferPool struct {
	classes [numClasses]sync.Pool
}

const (
	minPooled  = 64 << 10 // smaller buffers are cheap to allocate
	minShift   = 16       // log2(minPooled)
	maxShift   = 27       // largest class: 128 MiB
	numClasses = (maxShift - minShift + 1) * 4
)

// classOf returns the class of a buffer of n bytes and that class's size,
// or -1 for sizes that are not pooled.
func classOf(n int) (class, size int) {
	if n <= minPooled || n > 1<<maxShift {
		return -1, n
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << k / 4
	j := (n - 1<<k + step - 1) / step // 1..4
	return (k-minShift)*4 + j - 1, 1<<k + j*step
}

// Get returns a buffer of length n. A nil pool allocates.
func (p *BufferPool) Get(n int) []byte {
	class, size := classOf(n)
	if class < 0 || p == nil {
		return make([]byte, n)
	}
	if b, ok := p.classes[class].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, size)
}

// Put returns a buffer obtained from Get. The caller must not use it
// afterwards.
func (p *BufferPool) Put(b []byte) {
	class, size := classOf(cap(b))
	if class < 0 || size != cap(b) || p == nil {
		return // not one of ours
	}
	b = b[:cap(b)]
	p.classes[class].Put(&b)
}
