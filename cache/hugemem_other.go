//go:build !linux

package cache

// allocLarge allocates on the Go heap where huge-page mappings are not
// implemented.
func allocLarge(size int) (b []byte, offHeap bool) { return make([]byte, size), false }

func freeLarge([]byte) {}
