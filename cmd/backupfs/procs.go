package main

import (
	"os"
	"runtime"
)

// spareProcs are Go Ps beyond one per core. Leaves are decoded ahead of
// readers on one goroutine per core; with only as many Ps, a FUSE request
// (or the reader a decode just woke) waits for the Go scheduler to preempt
// a decoder, up to 10 ms, and through a mount reads stall in turns with
// decoding. With spare Ps the request's thread runs at once and the
// kernel shares the cores among threads at its finer grain: cat of 1 GiB
// through a mount on 2 cores took 1.65-3.0 s with 2 Ps, 1.2-1.4 s with 4.
const spareProcs = 2

// decoders is how many goroutines a chunk cache fills prefetches on: one
// per core (see cache.WithDecoders).
var decoders int

func init() {
	cores := runtime.GOMAXPROCS(0)
	decoders = cores
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cores + spareProcs)
	}
}
