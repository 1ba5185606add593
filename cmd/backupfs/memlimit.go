package main

import (
	"context"
	"os"
	"runtime/debug"
	"time"

	"github.com/backupfs/backupfs/fusefs"
)

// heapSlack is what the mount's Go heap may hold beyond its decoded
// indexes: request buffers, decoder state, small chunks, garbage.
const heapSlack = 40 << 20

// governHeap keeps the Go heap near what it needs, until ctx ends: the
// decoded indexes plus heapSlack, a soft limit following the indexes as
// they are decoded and dropped. Chunk data lives outside the heap (see
// cache.BufferPool), so what is left is small and mostly free of pointers
// and collecting it is cheap, while the collector's default of letting the
// heap double before collecting would add tens of megabytes to the
// mount's footprint. GOMEMLIMIT, when set, wins.
func governHeap(ctx context.Context, f *fusefs.FS) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	set := func() { debug.SetMemoryLimit(f.IndexBytes() + heapSlack) }
	set()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			set()
		}
	}
}
