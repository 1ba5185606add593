package fusefs

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// The kernel opens files without asking the filesystem (no-open mode, see
// Open), so a read names only the node. What a reader keeps from one read
// to the next (sequential access and readahead, the content hash being
// checked, a Backupy decoder) therefore lives per node, in a table of a
// bounded number of readers: the least recently used is dropped when a new
// one is needed, and readers no one has used for readerIdle are closed.
// Dropping a reader loses nothing but that state: the next read opens
// another.

const (
	// maxReaders bounds the readers kept; each may hold up to a MiB of
	// scratch space (a Bupstash reader hashing reads that arrived out of
	// order) or a Backupy decoder.
	maxReaders = 64
	// readerIdle is how long a reader no read has used is kept. A Backupy
	// reader holds its dump in the disk cache (which evicts only dumps no
	// reader holds), so it must not be kept for long by a program that
	// has stopped reading.
	readerIdle = 30 * time.Second
)

// nodeReader reads one file node.
type nodeReader struct {
	r      fileReader
	logKey string
	attrs  []any // what log lines about this file say
	flags  uint32

	item   *itemNode // for files inside Bupstash items
	record uint32

	// guarded by readerTable.mu
	refs    int  // reads using it
	dropped bool // out of the table: closed once refs is 0
	used    time.Time
}

type readerTable struct {
	mu  sync.Mutex
	lru *simplelru.LRU[uint64, *nodeReader]
	// closing collects readers the LRU dropped while mu was held, to be
	// closed once it is released.
	closing []*nodeReader
}

func newReaderTable() *readerTable {
	t := &readerTable{}
	lru, err := simplelru.NewLRU[uint64, *nodeReader](maxReaders, func(_ uint64, r *nodeReader) { t.dropLocked(r) })
	if err != nil {
		panic(err)
	}
	t.lru = lru
	return t
}

// dropLocked takes r out of use; it is closed now if no read uses it, or
// by the last read that does.
func (t *readerTable) dropLocked(r *nodeReader) {
	r.dropped = true
	if r.refs == 0 {
		t.closing = append(t.closing, r)
	}
}

// unlock releases mu and closes the readers dropped meanwhile.
func (t *readerTable) unlock(log func(*nodeReader, error)) {
	closing := t.closing
	t.closing = nil
	t.mu.Unlock()
	for _, r := range closing {
		if err := r.r.Close(); err != nil {
			log(r, err)
		}
	}
}

// get returns the reader of node id, opening one with open if there is
// none. The caller must put it back with release. open runs without the
// table's lock (it may decode an index); if two reads open the same node
// at once, one reader wins and the other is closed.
func (t *readerTable) get(id uint64, open func() (*nodeReader, error), log func(*nodeReader, error)) (*nodeReader, error) {
	t.mu.Lock()
	if r, ok := t.lru.Get(id); ok {
		r.refs++
		r.used = time.Now()
		t.mu.Unlock()
		return r, nil
	}
	t.mu.Unlock()
	r, err := open()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if old, ok := t.lru.Get(id); ok {
		old.refs++
		old.used = time.Now()
		t.closing = append(t.closing, r)
		t.unlock(log)
		return old, nil
	}
	r.refs = 1
	r.used = time.Now()
	t.lru.Add(id, r)
	t.unlock(log)
	return r, nil
}

// release ends a read's use of r.
func (t *readerTable) release(r *nodeReader, log func(*nodeReader, error)) {
	t.mu.Lock()
	r.refs--
	if r.dropped && r.refs == 0 {
		t.closing = append(t.closing, r)
	}
	t.unlock(log)
}

// expire drops the readers unused since before.
func (t *readerTable) expire(before time.Time, log func(*nodeReader, error)) {
	t.mu.Lock()
	for _, id := range t.lru.Keys() {
		if r, ok := t.lru.Peek(id); ok && r.used.Before(before) {
			t.lru.Remove(id) // calls dropLocked
		}
	}
	t.unlock(log)
}

// closeIdleReaders closes idle readers until ctx ends.
func (f *FS) closeIdleReaders(ctx context.Context) {
	tick := time.NewTicker(readerIdle / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f.readers.expire(time.Now().Add(-readerIdle), f.logCloseError)
		}
	}
}

func (f *FS) logCloseError(r *nodeReader, err error) {
	f.log.Warn("closing a file", append(r.attrs, "err", err)...)
}
