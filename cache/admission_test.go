package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inUseNow reads the pool's buffers in use, for assertions.
func (p *BufferPool) inUseNow() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mapped - p.idle
}

// peakTracker records the most pooled memory in use seen by fills.
type peakTracker struct {
	mu   sync.Mutex
	peak int64
}

func (p *peakTracker) see(pool *BufferPool) {
	n := pool.inUseNow()
	p.mu.Lock()
	p.peak = max(p.peak, n)
	p.mu.Unlock()
}

// decodeFill behaves like a leaf fill: an envelope buffer, then an output
// buffer while the envelope is still held, then the envelope goes back.
func decodeFill(c *ChunkCache, env, out int, peak *peakTracker, stamp byte) FillFunc {
	return func(ctx context.Context) ([]byte, []byte, error) {
		pool := c.Buffers()
		e, err := pool.Alloc(ctx, env)
		if err != nil {
			return nil, nil, err
		}
		peak.see(pool)
		o, err := pool.Alloc(ctx, out)
		if err != nil {
			pool.Put(e)
			return nil, nil, err
		}
		peak.see(pool)
		for i := range o {
			o[i] = stamp
		}
		pool.Put(e)
		return o, o, nil
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// withDeadline fails the test if fn does not return in time: admission
// bugs show up as deadlocks, and a test must never hang.
func withDeadline(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v: admission deadlock", d)
	}
}

// Many readers at distinct chunks larger than the whole cache: every one
// is served, and memory in use never passes the limit, the overdraft and
// one fill. (Decodes in flight used to add up unchecked: 32 readers of a
// 3 GiB item took a 1 MiB-cache mount to 210 MiB.)
func TestDecodesInFlightStayWithinTheBound(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limit      int64
		env, out   int
		readers    int
		wantWithin int64
	}{
		// A 1 MiB cache, leaves of 6 MiB from 1 MiB envelopes.
		{"smaller than a leaf", 1 << 20, 1 << 20, 6 << 20, 64, 1<<20 + overdraft + 8<<20},
		// A cache of a few leaves.
		{"a few leaves", 24 << 20, 2 << 20, 6 << 20, 64, 24<<20 + overdraft + 8<<20},
		// Envelopes that alone exceed the overdraft: the queue's head
		// must still get through while others hold envelopes.
		{"large envelopes", 1 << 20, 6 << 20, 8 << 20, 16, 1<<20 + overdraft + 14<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.limit)
			var peak peakTracker
			var served atomic.Int64
			withDeadline(t, 60*time.Second, func() {
				var wg sync.WaitGroup
				for i := range tc.readers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						stamp := byte(i)
						ch, err := c.Get(context.Background(), key(1, stamp), decodeFill(c, tc.env, tc.out, &peak, stamp))
						if err != nil {
							t.Error(err)
							return
						}
						if b := ch.Bytes(); len(b) != tc.out || b[0] != stamp || b[len(b)-1] != stamp {
							t.Errorf("reader %d got the wrong bytes", i)
						}
						ch.Release()
						served.Add(1)
					}()
				}
				wg.Wait()
			})
			if served.Load() != int64(tc.readers) {
				t.Fatalf("%d of %d readers served", served.Load(), tc.readers)
			}
			if peak.peak > tc.wantWithin {
				t.Fatalf("%d MiB in use at the peak, want at most %d MiB", peak.peak>>20, tc.wantWithin>>20)
			}
			if n := c.Buffers().inUseNow(); n > tc.limit {
				t.Fatalf("%d bytes still in use after every reader released", n)
			}
		})
	}
}

// An allocation past the bound waits until memory is released, and a
// waiter whose context ends leaves the queue without blocking those
// behind it.
func TestAllocWaitsForRoom(t *testing.T) {
	const limit = 4 << 20
	c := New(limit)
	pool := c.Buffers()
	ctx := context.Background()
	var held [][]byte
	for pool.inUseNow() <= limit+overdraft {
		b, err := pool.Alloc(ctx, 2<<20)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, b)
	}
	// A fill's allocation now waits: the pool is past its overdraft.
	withTicketCtx := withTicket(ctx, &ticket{})
	got := make(chan error, 1)
	go func() {
		b, err := pool.Alloc(withTicketCtx, 2<<20)
		if err == nil {
			pool.Put(b)
		}
		got <- err
	}()
	// One that gives up leaves the queue.
	gaveUp, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	waitFor(t, pool.waiting, "the allocation to queue")
	if _, err := pool.Alloc(gaveUp, 2<<20); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Alloc with an ended context = %v", err)
	}
	select {
	case err := <-got:
		t.Fatalf("allocation past the bound did not wait (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	pool.Put(held[0])
	held = held[1:]
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a release did not wake the waiting allocation")
	}
	for _, b := range held {
		pool.Put(b)
	}
	if pool.waiting() {
		t.Fatal("waiters left in the queue")
	}
}

// Prefetches never wait and never go past the bound: without room they
// are dropped (counted in Stats.Refused), and a reader then decodes.
func TestPrefetchWithoutRoomIsDropped(t *testing.T) {
	const limit = 4 << 20
	c := New(limit)
	pool := c.Buffers()
	// Readers hold the whole cache.
	hold, err := pool.Alloc(context.Background(), limit)
	if err != nil {
		t.Fatal(err)
	}
	var peak peakTracker
	withDeadline(t, 10*time.Second, func() {
		if !c.Prefetch(context.Background(), key(1, 1), decodeFill(c, 1<<20, 2<<20, &peak, 1)) {
			t.Error("prefetch not accepted")
		}
		waitFor(t, func() bool { return c.Stats().Refused > 0 }, "the prefetch to be refused")
	})
	if c.Contains(key(1, 1)) || peak.peak > limit {
		t.Fatalf("a prefetch went past the bound: %d bytes in use", peak.peak)
	}
	if s := c.Stats(); s.FillErrors != 0 {
		t.Fatalf("a dropped prefetch counted as a fill error: %+v", s)
	}
	pool.Put(hold)
	// The reader decodes it itself.
	v, err := get(t, c, key(1, 1), decodeFill(c, 1<<20, 2<<20, &peak, 1))
	if err != nil || len(v) != 2<<20 || v[0] != 1 {
		t.Fatalf("Get after a dropped prefetch: %d bytes, %v", len(v), err)
	}
}

// A prefetch refused for want of room that a reader has joined meanwhile
// is decoded for that reader, who must not see the refusal.
func TestRefusedPrefetchWithAReaderIsFilled(t *testing.T) {
	const limit = 4 << 20
	c := New(limit)
	pool := c.Buffers()
	// Readers hold more than decodes may take together.
	hold, err := pool.Alloc(context.Background(), limit+overdraft+2<<20)
	if err != nil {
		t.Fatal(err)
	}
	joined := make(chan struct{})
	var tries atomic.Int32
	fill := func(ctx context.Context) ([]byte, []byte, error) {
		if tries.Add(1) == 1 {
			<-joined // the reader is waiting for this fill now
		}
		b, err := pool.Alloc(ctx, 2<<20)
		if err != nil {
			return nil, nil, err
		}
		b[0] = 7
		return b, b, nil
	}
	if !c.Prefetch(context.Background(), key(1, 1), fill) {
		t.Fatal("prefetch not accepted")
	}
	got := make(chan error, 1)
	go func() {
		v, err := get(t, c, key(1, 1), fill)
		if err == nil && v[0] != 7 {
			err = errors.New("wrong bytes")
		}
		got <- err
	}()
	waitFor(t, func() bool { return c.Stats().Joined > 0 }, "the reader to join the prefetch")
	close(joined)
	// The refused prefetch becomes a fill that waits for room.
	waitFor(t, pool.waiting, "the fill to wait for room")
	pool.Put(hold)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reader of a refused prefetch never served")
	}
	if s := c.Stats(); s.Refused != 0 || s.FillErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWithDecoders(t *testing.T) {
	if c := New(1<<20, WithDecoders(3)); c.maxPrefetchers != 3 {
		t.Fatalf("maxPrefetchers = %d", c.maxPrefetchers)
	}
	if c := New(1 << 20); c.maxPrefetchers < 1 {
		t.Fatalf("maxPrefetchers = %d", c.maxPrefetchers)
	}
}
