//go:build !linux

package cache

// allocLarge allocates on the Go heap where huge-page mappings are not
// implemented.
func allocLarge(size int) (b []byte, offHeap bool) { return make([]byte, size), false }

// allocPages allocates on the Go heap where mappings are not implemented.
func allocPages(size int) (b []byte, offHeap bool) { return make([]byte, size), false }

func freeOffHeap([]byte) {}
