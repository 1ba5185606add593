package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key(space uint64, b byte) Key { return Key{Space: space, Addr: [32]byte{b}} }

func constFill(v []byte, calls *atomic.Int64) FillFunc {
	return func(context.Context) ([]byte, []byte, error) {
		calls.Add(1)
		return v, nil, nil
	}
}

// get fetches a key and copies its bytes out, releasing the chunk.
func get(t *testing.T, c *ChunkCache, k Key, fn FillFunc) ([]byte, error) {
	t.Helper()
	ch, err := c.Get(context.Background(), k, fn)
	if err != nil {
		return nil, err
	}
	defer ch.Release()
	return bytes.Clone(ch.Bytes()), nil
}

func TestGetFillsOnceAndHits(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	for i := 0; i < 3; i++ {
		v, err := get(t, c, key(1, 1), constFill([]byte("abc"), &calls))
		if err != nil || string(v) != "abc" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("fill ran %d times, want 1", calls.Load())
	}
	s := c.Stats()
	if s.Hits != 2 || s.Misses != 1 || s.Bytes != 3 || s.Entries != 1 {
		t.Fatalf("stats = %+v", s)
	}
	if n, ok := c.Len(key(1, 1)); !ok || n != 3 {
		t.Fatalf("Len = %d, %v", n, ok)
	}
}

func TestSpacesDoNotShareEntries(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	a, _ := get(t, c, key(1, 7), constFill([]byte("one"), &calls))
	b, _ := get(t, c, key(2, 7), constFill([]byte("two"), &calls))
	if string(a) != "one" || string(b) != "two" || calls.Load() != 2 {
		t.Fatalf("got %q %q after %d fills", a, b, calls.Load())
	}
}

func TestConcurrentGetsShareOneFill(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	release := make(chan struct{})
	fill := func(context.Context) ([]byte, []byte, error) {
		calls.Add(1)
		<-release
		return []byte("shared"), nil, nil
	}
	var wg sync.WaitGroup
	results := make([][]byte, 32)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := get(t, c, key(1, 1), fill)
			if err != nil {
				t.Error(err)
			}
			results[i] = v
		}()
	}
	for c.Stats().Misses+c.Stats().Joined < 32 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("fill ran %d times, want 1", calls.Load())
	}
	for _, r := range results {
		if string(r) != "shared" {
			t.Fatalf("result %q", r)
		}
	}
}

func TestEvictsByBytes(t *testing.T) {
	c := New(10)
	var calls atomic.Int64
	for i := byte(0); i < 5; i++ {
		if _, err := get(t, c, key(1, i), constFill(make([]byte, 4), &calls)); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Stats()
	if s.Bytes > 10 || s.Entries != 2 || s.Evictions != 3 {
		t.Fatalf("stats = %+v, want 2 entries within 10 bytes", s)
	}
	if !c.Contains(key(1, 4)) || !c.Contains(key(1, 3)) || c.Contains(key(1, 0)) {
		t.Fatal("wrong entries evicted")
	}
}

func TestOversizedChunkIsReturnedButNotKept(t *testing.T) {
	c := New(8)
	var calls atomic.Int64
	v, err := get(t, c, key(1, 1), constFill(make([]byte, 9), &calls))
	if err != nil || len(v) != 9 {
		t.Fatalf("Get = %d bytes, %v", len(v), err)
	}
	if c.Contains(key(1, 1)) || c.Stats().Bytes != 0 {
		t.Fatal("oversized chunk was cached")
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	c := New(100)
	boom := errors.New("boom")
	var calls atomic.Int64
	fail := func(context.Context) ([]byte, []byte, error) { calls.Add(1); return nil, nil, boom }
	for i := 0; i < 2; i++ {
		if _, err := c.Get(context.Background(), key(1, 1), fail); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
	}
	if calls.Load() != 2 || c.Stats().FillErrors != 2 {
		t.Fatalf("calls=%d stats=%+v", calls.Load(), c.Stats())
	}
}

func TestPanicInFillBecomesError(t *testing.T) {
	c := New(100)
	_, err := c.Get(context.Background(), key(1, 1), func(context.Context) ([]byte, []byte, error) {
		panic(fmt.Errorf("index out of range"))
	})
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want PanicError", err)
	}
}

func TestCanceledWaiterDoesNotCancelFill(t *testing.T) {
	c := New(100)
	release := make(chan struct{})
	var sawCancel atomic.Bool
	fill := func(ctx context.Context) ([]byte, []byte, error) {
		<-release
		if ctx.Err() != nil {
			sawCancel.Store(true)
		}
		return []byte("ok"), nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Get(ctx, key(1, 1), fill)
		done <- err
	}()
	for c.Stats().Misses == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(release)
	v, err := get(t, c, key(1, 1), fill)
	if err != nil || string(v) != "ok" || sawCancel.Load() {
		t.Fatalf("Get = %q, %v (fill saw cancel: %v)", v, err, sawCancel.Load())
	}
}

func TestPrefetch(t *testing.T) {
	c := New(100)
	var calls atomic.Int64
	if !c.Prefetch(context.Background(), key(1, 1), constFill([]byte("p"), &calls)) {
		t.Fatal("prefetch not started")
	}
	v, err := get(t, c, key(1, 1), constFill([]byte("p"), &calls))
	if err != nil || string(v) != "p" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if calls.Load() != 1 {
		t.Fatalf("fill ran %d times", calls.Load())
	}
	if !c.Prefetch(context.Background(), key(1, 1), constFill([]byte("p"), &calls)) || calls.Load() != 1 {
		t.Fatal("prefetch of a cached key must succeed without a fill")
	}
	// Beyond the running prefetches requests queue, and run in order as
	// those finish; only a full queue refuses. (One prefetcher, so that
	// the order of fills is the order of the queue.)
	c.mu.Lock()
	c.maxPrefetchers = 1
	c.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; { // the first prefetch's goroutine has exited
		c.mu.Lock()
		idle := c.prefetchers == 0
		c.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a finished prefetch still counts as running")
		}
		time.Sleep(time.Millisecond)
	}
	block := make(chan struct{})
	var order []byte
	var mu sync.Mutex
	slow := func(i byte) FillFunc {
		return func(context.Context) ([]byte, []byte, error) {
			<-block
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			return []byte{i}, nil, nil
		}
	}
	running := 1
	for i := 0; i < running+maxQueued; i++ {
		if !c.Prefetch(context.Background(), key(1, byte(10+i)), slow(byte(10+i))) {
			t.Fatalf("prefetch %d refused before the queue was full", i)
		}
	}
	if c.Prefetch(context.Background(), key(1, 99), slow(99)) {
		t.Fatal("prefetch accepted with the queue full")
	}
	if !c.Prefetch(context.Background(), key(1, byte(10+running)), slow(0)) {
		t.Fatal("a queued key asked for again must be accepted")
	}
	close(block)
	// Every queued chunk arrives without anyone asking again.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < running+maxQueued; i++ {
		for !c.Contains(key(1, byte(10+i))) {
			if time.Now().After(deadline) {
				t.Fatalf("queued prefetch %d did not run", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("queued prefetches ran out of order: %v", order)
		}
	}
	if len(order) != running+maxQueued {
		t.Fatalf("%d fills for %d prefetches", len(order), running+maxQueued)
	}
}

// pooledFill fills a chunk into a pooled buffer stamped with b.
func pooledFill(c *ChunkCache, b byte, n int) FillFunc {
	return func(context.Context) ([]byte, []byte, error) {
		buf := c.Buffers().Get(n)
		for i := range buf {
			buf[i] = b
		}
		return buf, buf, nil
	}
}

// A pooled buffer goes back to the pool only when the cache has dropped the
// chunk and its last reader has released it: a reader holding an evicted
// chunk keeps seeing its bytes while others reuse memory.
func TestBuffersAreReusedOnlyAfterTheLastRelease(t *testing.T) {
	const n = 100 << 10
	c := New(n * 2) // room for one pooled chunk (buffers round up)
	held, err := c.Get(context.Background(), key(1, 1), pooledFill(c, 1, n))
	if err != nil {
		t.Fatal(err)
	}
	// Evict it while held, then churn the pool.
	for i := byte(2); i < 20; i++ {
		ch, err := c.Get(context.Background(), key(1, i), pooledFill(c, i, n))
		if err != nil {
			t.Fatal(err)
		}
		ch.Release()
	}
	if c.Contains(key(1, 1)) {
		t.Fatal("chunk 1 not evicted; the test proves nothing")
	}
	for _, b := range held.Bytes() {
		if b != 1 {
			t.Fatal("an evicted chunk's bytes were reused while a reader held it")
		}
	}
	held.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("a second release did not panic")
		}
	}()
	held.Release()
}

// Waiters that give up hand back their reference: the chunk's buffer is
// recycled exactly once, and the others still see their bytes.
func TestGivingUpWaitersBalanceReferences(t *testing.T) {
	c := New(1 << 30)
	release := make(chan struct{})
	fill := func(context.Context) ([]byte, []byte, error) {
		<-release
		buf := c.Buffers().Get(200 << 10)
		for i := range buf {
			buf[i] = 7
		}
		return buf, buf, nil
	}
	var wg sync.WaitGroup
	var got atomic.Int64
	for i := 0; i < 16; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		if i%2 == 0 {
			cancel() // gives up before the fill ends
		} else {
			defer cancel()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := c.Get(ctx, key(1, 1), fill)
			if err != nil {
				return
			}
			for _, b := range ch.Bytes() {
				if b != 7 {
					t.Error("wrong bytes")
					break
				}
			}
			ch.Release()
			got.Add(1)
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if got.Load() < 8 {
		t.Fatalf("%d readers got the chunk", got.Load())
	}
	c.mu.Lock()
	ch, _ := c.lru.Peek(key(1, 1))
	refs := ch.refs.Load()
	c.mu.Unlock()
	if refs != 1 {
		t.Fatalf("after every reader released, refs = %d, want the cache's 1", refs)
	}
}

func TestBufferClasses(t *testing.T) {
	var p BufferPool
	for _, n := range []int{1, 16 << 10, 16<<10 + 1, 20 << 10, 64<<10 + 1, 100 << 10, 1 << 20, 1<<20 + 1, 8<<20 + 73, 20 << 20, 128 << 20, 128<<20 + 1} {
		b := p.Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d) has length %d", n, len(b))
		}
		switch {
		case n > 1<<20:
			// Whole huge pages.
			if cap(b)%HugePage != 0 || cap(b) < n || cap(b)-n >= HugePage {
				t.Fatalf("Get(%d) has capacity %d", n, cap(b))
			}
		case n > 16<<10:
			if cap(b) < n || float64(cap(b)) > 1.25*float64(n)+1 {
				t.Fatalf("Get(%d) has capacity %d", n, cap(b))
			}
		}
		if _, pooled := classSize(n); pooled != (n > 16<<10) {
			t.Fatalf("Get(%d): pooled %v", n, pooled)
		}
		for i := range b { // every byte is usable
			b[i] = byte(i)
		}
		p.Put(b)
	}
}

// Buffers are reused by size, kept idle up to a bound, and returned to the
// system beyond it; none of them is on the Go heap.
func TestPooledBuffersLiveOutsideTheHeap(t *testing.T) {
	var p BufferPool
	p.SetMaxIdle(1 << 30)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var bufs [][]byte
	for range 64 {
		bufs = append(bufs, p.Get(700<<10), p.Get(3<<20))
	}
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Errorf("256 MiB of buffers grew the heap by %d bytes", grew)
	}
	if st := p.Stats(); st.Mapped != 64*(768<<10+4<<20) {
		t.Errorf("mapped %d", st.Mapped)
	}
	for _, b := range bufs {
		p.Put(b)
	}
	b := p.Get(700 << 10)
	if &b[0] != &bufs[len(bufs)-2][0] {
		t.Error("an idle mid-size buffer was not reused")
	}
}

// Large buffers are reused by size, kept idle up to a bound, and returned
// to the system beyond it.
func TestLargeBuffers(t *testing.T) {
	var p BufferPool
	p.SetMaxIdle(4 << 20)
	a := p.Get(3 << 20)
	if cap(a) != 4<<20 {
		t.Fatalf("Get(3 MiB) has capacity %d", cap(a))
	}
	a[len(a)-1] = 1
	p.Put(a)
	b := p.Get(3<<20 + 5)
	if &b[0] != &a[0] {
		t.Fatal("an idle buffer of the right size was not reused")
	}
	if st := p.Stats(); st.Mapped != 4<<20 || st.Idle != 0 {
		t.Fatalf("stats %+v", st)
	}
	c, d := p.Get(2<<20), p.Get(2<<20)
	p.Put(b)
	p.Put(c)
	p.Put(d) // over the bound: unmapped
	if st := p.Stats(); st.Idle != 4<<20 || st.Mapped != 4<<20 {
		t.Fatalf("after putting 8 MiB with a 4 MiB bound: %+v", st)
	}
}

// In tests Put poisons buffers, so that a use after release reads wrong
// bytes instead of passing unnoticed.
func TestPutPoisons(t *testing.T) {
	var p BufferPool
	for _, n := range []int{100 << 10, 3 << 20} {
		b := p.Get(n)
		for i := range b {
			b[i] = 1
		}
		view := b[:10]
		p.Put(b)
		if view[0] != 0xA5 {
			t.Fatalf("%d-byte buffer not poisoned on Put", n)
		}
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New(1 << 30)
	var calls atomic.Int64
	ch, _ := c.Get(context.Background(), key(1, 1), constFill(make([]byte, 1<<20), &calls))
	ch.Release()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ch, _ := c.Get(context.Background(), key(1, 1), nil)
			ch.Release()
		}
	})
}

// Prefetched chunks no reader has asked for may fill half the cache, no
// more: several readers' readahead cannot evict each other's.
func TestPrefetchUnreadBudget(t *testing.T) {
	c := New(8 << 20)
	fill := func(b byte) FillFunc {
		return func(context.Context) ([]byte, []byte, error) { return bytes.Repeat([]byte{b}, 1<<20), nil, nil }
	}
	waitIdle := func() {
		t.Helper()
		for i := 0; ; i++ {
			c.mu.Lock()
			busy := c.prefetchers > 0 || len(c.queue) > 0
			c.mu.Unlock()
			if !busy {
				return
			}
			if i > 1000 {
				t.Fatal("prefetches never finished")
			}
			time.Sleep(time.Millisecond)
		}
	}
	accepted := 0
	for i := range 8 {
		if c.Prefetch(context.Background(), key(1, byte(i)), fill(byte(i))) {
			accepted++
		}
		waitIdle()
	}
	if accepted != 4 {
		t.Fatalf("accepted %d prefetches of 1 MiB into an 8 MiB cache, want 4", accepted)
	}
	// Reading one makes room for another.
	if _, err := get(t, c, key(1, 0), fill(0)); err != nil {
		t.Fatal(err)
	}
	if !c.Prefetch(context.Background(), key(1, 9), fill(9)) {
		t.Fatal("a prefetch was refused after one of the unread ones was read")
	}
	waitIdle()
	if c.Prefetch(context.Background(), key(1, 10), fill(10)) {
		t.Fatal("a prefetch was accepted past the budget")
	}
}

// An owner's limit lets the pool keep every freed buffer while all of its
// memory fits the limit (the cache will want them again), and unmap idle
// ones, largest first, once new buffers would take it past.
func TestPoolKeepsIdleWithinItsLimit(t *testing.T) {
	p := BufferPool{limit: 16 << 20}
	p.SetMaxIdle(2 << 20)
	var bufs [][]byte
	for range 4 {
		bufs = append(bufs, p.Get(4<<20))
	}
	for _, b := range bufs {
		p.Put(b)
	}
	if st := p.Stats(); st.Idle != 16<<20 || st.Mapped != 16<<20 {
		t.Fatalf("after putting back 16 MiB under a 16 MiB limit: %+v", st)
	}
	// A buffer of another size: idle ones go until it fits.
	b := p.Get(6 << 20)
	if st := p.Stats(); st.Mapped > 16<<20+2<<20 || st.Mapped-st.Idle != 6<<20 {
		t.Fatalf("after a 6 MiB buffer: %+v", st)
	}
	p.Put(b)
}
