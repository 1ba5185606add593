package cache

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// allocLarge maps size bytes (a multiple of HugePage) of anonymous memory
// outside the Go heap, aligned to a huge page and marked for transparent
// huge pages: the first touch of 2 MiB then costs one page fault, not 512.
// If mapping fails it falls back to the Go heap and reports offHeap false.
func allocLarge(size int) (b []byte, offHeap bool) {
	// Map a huge page more than needed and trim to an aligned window.
	span := uintptr(size + HugePage)
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, size), false
	}
	start := uintptr(p)
	aligned := (start + HugePage - 1) &^ (HugePage - 1)
	if head := aligned - start; head > 0 {
		_ = unix.MunmapPtr(p, head)
	}
	if tail := start + span - (aligned + uintptr(size)); tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(p, aligned-start+uintptr(size)), tail)
	}
	b = unsafe.Slice((*byte)(unsafe.Add(p, aligned-start)), size)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // only a hint: fine without THP
	return b, true
}

// allocPages maps size bytes (a multiple of the page size) of anonymous
// memory outside the Go heap. If mapping fails it falls back to the Go
// heap and reports offHeap false.
func allocPages(size int) (b []byte, offHeap bool) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, size), false
	}
	return unsafe.Slice((*byte)(p), size), true
}

// freeOffHeap unmaps a buffer allocLarge or allocPages mapped.
func freeOffHeap(b []byte) {
	_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
