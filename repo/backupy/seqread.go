package backupy

import (
	"context"
	"io"
	"sync"
)

// seqReader reads an object from its first byte to its last, for passes
// that need every byte in order (a decode, a hash). On a store whose reads
// cost a round trip it keeps several block reads in flight ahead of the
// consumer, each on its own buffer, so a long fetch latency costs
// bandwidth only once; memory is inFlight blocks at most. With one read
// in flight it reads straight into the caller's buffer.
//
// All readers of the process share readAheadBudget: a read beyond a
// reader's first in flight is issued only if the budget has room, so
// many passes at once cost no more memory than a few.
//
// The object must not be closed before the reader.
type seqReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	obj    Object
	size   int64
	pos    int64 // next byte Read returns

	// Read-ahead, used when inFlight > 1.
	block    int64
	inFlight int
	queue    []*blockFetch // in offset order, the head is being consumed
	issued   int64         // offset of the next block to fetch
	free     [][]byte
	wg       sync.WaitGroup
	err      error // sticky
}

type blockFetch struct {
	lent int64 // bytes of readAheadBudget this fetch holds
	off  int64
	buf  []byte
	n    int
	err  error
	done chan struct{}
	used int // bytes of buf already returned
}

func newSeqReader(ctx context.Context, obj Object, size, block int64, inFlight int) *seqReader {
	ctx, cancel := context.WithCancel(ctx)
	return &seqReader{ctx: ctx, cancel: cancel, obj: obj, size: size, block: max(block, 64<<10), inFlight: inFlight}
}

func (r *seqReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.inFlight <= 1 {
		want := min(int64(len(p)), r.size-r.pos)
		n, err := r.obj.ReadAt(r.ctx, p[:want], r.pos)
		r.pos += int64(n)
		if err == io.EOF && int64(n) == want {
			err = nil
		}
		if err != nil {
			r.err = err
		}
		if n > 0 {
			return n, nil
		}
		return 0, err
	}
	r.fill()
	head := r.queue[0]
	select {
	case <-head.done:
	case <-r.ctx.Done():
		r.err = context.Cause(r.ctx)
		return 0, r.err
	}
	if head.err != nil && head.err != io.EOF {
		r.err = head.err
		return 0, r.err
	}
	if head.used >= head.n {
		// The object ended before its listed size.
		r.err = io.EOF
		return 0, r.err
	}
	n := copy(p, head.buf[head.used:head.n])
	head.used += n
	r.pos += int64(n)
	if head.used == head.n && (head.n == len(head.buf) || r.pos >= r.size) {
		r.free = append(r.free, head.buf)
		r.queue = r.queue[1:]
		readAheadBudget.release(head.lent)
		head.lent = 0
	}
	return n, nil
}

// fill issues block reads until inFlight are queued or the object ends.
func (r *seqReader) fill() {
	if r.issued < r.pos {
		r.issued = r.pos
	}
	for len(r.queue) < r.inFlight && r.issued < r.size {
		n := min(r.block, r.size-r.issued)
		var lent int64
		if len(r.queue) > 0 {
			if !readAheadBudget.tryAcquire(n) {
				return
			}
			lent = n
		}
		var buf []byte
		if k := len(r.free); k > 0 && int64(cap(r.free[k-1])) >= n {
			buf, r.free = r.free[k-1][:n], r.free[:k-1]
		} else {
			buf = make([]byte, n)
		}
		f := &blockFetch{lent: lent, off: r.issued, buf: buf, done: make(chan struct{})}
		r.queue = append(r.queue, f)
		r.issued += n
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(f.done)
			f.n, f.err = r.obj.ReadAt(r.ctx, f.buf, f.off)
		}()
	}
}

// Close stops the reads in flight and waits for them.
func (r *seqReader) Close() {
	r.cancel()
	r.wg.Wait()
	for _, f := range r.queue {
		readAheadBudget.release(f.lent)
	}
	r.queue, r.free = nil, nil
}

// readAheadBudget bounds the bytes all seqReaders of the process hold in
// reads beyond their first: 32 MiB, two passes' worth of an S3 store's
// default read-ahead.
var readAheadBudget = budget{limit: 32 << 20}

// budget is a count of bytes that is taken without waiting.
type budget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// readerWithContext stops a long read when its context ends.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
