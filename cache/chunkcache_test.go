package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key(space uint64, b byte) Key { return Key{Space: space, Addr: [32]byte{b}} }

func constFill(v []byte, calls *atomic.Int64) FillFunc {
	return func(context.Context) ([]byte, error) {
		calls.Add(1)
		return v, nil
	}
}

func TestGetFillsOnceAndHits(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	for i := 0; i < 3; i++ {
		v, err := c.Get(context.Background(), key(1, 1), constFill([]byte("abc"), &calls))
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
}

func TestSpacesDoNotShareEntries(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	a, _ := c.Get(context.Background(), key(1, 7), constFill([]byte("one"), &calls))
	b, _ := c.Get(context.Background(), key(2, 7), constFill([]byte("two"), &calls))
	if string(a) != "one" || string(b) != "two" || calls.Load() != 2 {
		t.Fatalf("got %q %q after %d fills", a, b, calls.Load())
	}
}

func TestConcurrentGetsShareOneFill(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int64
	release := make(chan struct{})
	fill := func(context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("shared"), nil
	}
	var wg sync.WaitGroup
	results := make([][]byte, 32)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Get(context.Background(), key(1, 1), fill)
			if err != nil {
				t.Error(err)
			}
			results[i] = v
		}()
	}
	// Let every goroutine reach the cache before the fill completes.
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
		if _, err := c.Get(context.Background(), key(1, i), constFill(make([]byte, 4), &calls)); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Stats()
	if s.Bytes > 10 || s.Entries != 2 || s.Evictions != 3 {
		t.Fatalf("stats = %+v, want 2 entries within 10 bytes", s)
	}
	// The two most recent survive.
	if !c.Contains(key(1, 4)) || !c.Contains(key(1, 3)) || c.Contains(key(1, 0)) {
		t.Fatal("wrong entries evicted")
	}
}

func TestOversizedChunkIsReturnedButNotKept(t *testing.T) {
	c := New(8)
	var calls atomic.Int64
	v, err := c.Get(context.Background(), key(1, 1), constFill(make([]byte, 9), &calls))
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
	fail := func(context.Context) ([]byte, error) { calls.Add(1); return nil, boom }
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
	_, err := c.Get(context.Background(), key(1, 1), func(context.Context) ([]byte, error) {
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
	fill := func(ctx context.Context) ([]byte, error) {
		<-release
		if ctx.Err() != nil {
			sawCancel.Store(true)
		}
		return []byte("ok"), nil
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
	v, err := c.Get(context.Background(), key(1, 1), fill)
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
	v, err := c.Get(context.Background(), key(1, 1), constFill([]byte("p"), &calls))
	if err != nil || string(v) != "p" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if calls.Load() != 1 {
		t.Fatalf("fill ran %d times", calls.Load())
	}
	if c.Prefetch(context.Background(), key(1, 1), constFill([]byte("p"), &calls)) {
		t.Fatal("prefetch of a cached key started a fill")
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New(1 << 30)
	var calls atomic.Int64
	c.Get(context.Background(), key(1, 1), constFill(make([]byte, 1<<20), &calls))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Get(context.Background(), key(1, 1), nil)
		}
	})
}
