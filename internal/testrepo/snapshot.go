package testrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// EntrySource yields a snapshot's entries in Bupstash's walk order: the
// root "." first, then each directory's children contiguously, sorted by
// name bytes, directories visited depth first in that order ("siblings
// before nephews": ., a, b, f, a/x, a/y, a/x/1, b/z). AddSnapshot checks
// the order as it streams.
type EntrySource interface {
	// Next returns the next entry, or io.EOF after the last one. The
	// entry must not be modified afterwards.
	Next() (*Entry, error)
}

// Entries returns a source over entries already in walk order.
func Entries(es []Entry) EntrySource { return &sliceSource{es: es} }

type sliceSource struct {
	es []Entry
	i  int
}

func (s *sliceSource) Next() (*Entry, error) {
	if s.i >= len(s.es) {
		return nil, io.EOF
	}
	s.i++
	return &s.es[s.i-1], nil
}

// Bupstash's batching (put.rs EntBatcher): consecutive entries with the
// same parent directory, at most 128 of them, ending once they declare
// 128 MiB of file data. The data of each batch ends with a forced leaf
// split, so every batch starts at offset 0 of a fresh leaf.
const (
	maxBatchEntries = 128
	maxBatchBytes   = 128 << 20
)

// AutoInoBase is the first inode number given to entries with Ino 0 in a
// streamed snapshot (entry i gets AutoInoBase+i). Tree assigns its own.
const AutoInoBase = 1 << 24

// rootParent is the batching key of "." itself: its parent is outside the
// snapshot, so it always forms a batch of its own.
const rootParent = "\x00"

type batch struct {
	first   int // index of the first entry in the snapshot
	entries []*Entry
	bytes   int64
	done    chan struct{}

	// Set by the worker before done is closed.
	leaves   []*future
	index    []byte
	dataSize uint64
}

// AddSnapshot writes a snapshot item (what `bupstash put DIR` makes) from
// entries in walk order: file contents form the data stream, entries the
// index. Contents and entries are streamed: memory does not grow with the
// contents' size, and per entry only the walk-order check remembers
// anything (the directories still to be visited).
func (r *Repo) AddSnapshot(ctx context.Context, src EntrySource, meta ItemMeta) (*ItemInfo, error) {
	start := time.Now()
	w, err := r.newItemWriter(ctx)
	if err != nil {
		return nil, err
	}
	nw := r.opts.Workers
	work := make(chan *batch, nw)
	order := make(chan *batch, 4*nw)
	go func() {
		defer close(order)
		defer close(work)
		if err := w.produceBatches(src, work, order); err != nil {
			w.fail(err)
		}
	}()
	var workers sync.WaitGroup
	for range nw {
		workers.Add(1)
		go func() {
			defer workers.Done()
			ch := newChunker(w.o, r.gear, w.bufs)
			scratch := r.readBufs.get()
			defer r.readBufs.put(scratch)
			for b := range work {
				if w.err() == nil {
					if err := w.processBatch(b, ch, scratch); err != nil {
						w.fail(err)
					}
				}
				close(b.done)
			}
		}()
	}

	c := newSnapshotCollector(w)
	for b := range order {
		if w.err() != nil {
			continue // drain until the producer stops
		}
		select {
		case <-b.done:
		case <-w.ctx.Done():
			continue
		}
		if err := c.add(b); err != nil {
			w.fail(err)
		}
	}
	workers.Wait()
	var data, index treeRoot
	if w.err() == nil {
		data, index, err = c.finish()
		if err != nil {
			w.fail(err)
		}
	}
	if err := w.err(); err != nil {
		w.stop()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	w.stop()

	info := &ItemInfo{Entries: c.entries, Nodes: w.nodes, Stored: w.stored.Load()}
	name := "snapshot.tar"
	if meta.Source != "" {
		name = filepath.Base(meta.Source) + ".tar"
	}
	if err := r.commit(info, meta, data, &index, c.dataSize, c.indexSize, name); err != nil {
		return nil, err
	}
	info.Duration = time.Since(start)
	return info, nil
}

// produceBatches checks the entries and groups them into batches, handing
// each to the workers and, in the same order, to the collector.
func (w *itemWriter) produceBatches(src EntrySource, work, order chan<- *batch) error {
	var walk walkChecker
	var cur *batch
	curParent := ""
	n := 0
	send := func() error {
		for _, ch := range []chan<- *batch{work, order} {
			select {
			case ch <- cur:
			case <-w.ctx.Done():
				return context.Cause(w.ctx)
			}
		}
		cur = nil
		return nil
	}
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("entry source: %w", err)
		}
		if err := e.check(); err != nil {
			return err
		}
		if err := walk.next(e); err != nil {
			return err
		}
		parent := rootParent
		if e.Path != "." {
			parent, _ = splitPath(e.Path)
		}
		if cur != nil && (parent != curParent || len(cur.entries) >= maxBatchEntries || cur.bytes >= w.o.batchBytes) {
			if err := send(); err != nil {
				return err
			}
		}
		if cur == nil {
			cur = &batch{first: n, done: make(chan struct{})}
			curParent = parent
		}
		cur.entries = append(cur.entries, e)
		cur.bytes += e.Size()
		n++
	}
	if n == 0 {
		return errors.New("refusing to create an empty snapshot (no entries)")
	}
	return send()
}

// processBatch reads and chunks the batch's file contents and encodes its
// index entries with their cursors, exactly as Bupstash's
// BatchFileProcessor computes them: an entry starts in the leaf being
// filled at its current length, and its chunk delta counts the leaves
// completed while it was added, including the forced split after the
// batch's last entry (which a size-0 last entry carries too).
func (w *itemWriter) processBatch(b *batch, ch *chunker, scratch []byte) error {
	var enc bare.Encoder
	last := len(b.entries) - 1
	for i, e := range b.entries {
		startLeaf, startOff := len(b.leaves), ch.buffered()
		var size uint64
		var hash *[32]byte
		if e.IsRegular() {
			n, h, err := w.feedFile(b, ch, e, scratch)
			if err != nil {
				return fmt.Errorf("%q: %w", e.Path, err)
			}
			size, hash = n, &h
		}
		if i == last {
			if leaf := ch.forceSplit(); leaf != nil {
				f, err := w.submit(&w.data, leaf)
				if err != nil {
					return err
				}
				b.leaves = append(b.leaves, f)
			}
		}
		c := cursor{
			delta: uint64(len(b.leaves) - startLeaf),
			start: uint64(startOff),
			end:   uint64(ch.buffered()),
		}
		ino := e.Ino
		if ino == 0 {
			ino = AutoInoBase + uint64(b.first+i)
		}
		nlink := e.Nlink
		if nlink == 0 {
			nlink = 1
			if e.IsDir() {
				nlink = 2
			}
		}
		encodeEntry(&enc, e, ino, nlink, size, hash, c)
		b.dataSize += size
	}
	b.index = enc.Buf
	return nil
}

// feedFile streams a file's content into the chunker, returning its size
// and BLAKE3 content hash.
func (w *itemWriter) feedFile(b *batch, ch *chunker, e *Entry, scratch []byte) (uint64, [32]byte, error) {
	var sum [32]byte
	rd := e.Open()
	h := blake3.New(32, nil)
	var size uint64
	for {
		n, rerr := rd.Read(scratch)
		h.Write(scratch[:n])
		size += uint64(n)
		for p := scratch[:n]; len(p) > 0; {
			k, leaf := ch.add(p)
			p = p[k:]
			if leaf != nil {
				f, err := w.submit(&w.data, leaf)
				if err != nil {
					return 0, sum, err
				}
				b.leaves = append(b.leaves, f)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return 0, sum, fmt.Errorf("reading content: %w", rerr)
		}
		if err := w.err(); err != nil {
			return 0, sum, err
		}
	}
	h.Sum(sum[:0])
	return size, sum, nil
}

// snapshotCollector assembles the trees from the batches, in order.
type snapshotCollector struct {
	w          *itemWriter
	data, idx  *treeWriter
	idxChunker *chunker
	idxPending []*future

	entries             int
	dataSize, indexSize uint64
}

func newSnapshotCollector(w *itemWriter) *snapshotCollector {
	return &snapshotCollector{
		w:          w,
		data:       newTreeWriter(w.o, w.storeNode),
		idx:        newTreeWriter(w.o, w.storeNode),
		idxChunker: newChunker(w.o, w.r.gear, w.bufs),
	}
}

func (c *snapshotCollector) add(b *batch) error {
	for _, f := range b.leaves {
		if err := f.wait(c.w.ctx); err != nil {
			return err
		}
		if err := c.data.addLeaf(f.addr); err != nil {
			return err
		}
	}
	c.entries += len(b.entries)
	c.dataSize += b.dataSize
	c.indexSize += uint64(len(b.index))
	// The index stream is chunked on its own, across batches.
	for p := b.index; len(p) > 0; {
		k, leaf := c.idxChunker.add(p)
		p = p[k:]
		if leaf != nil {
			if err := c.indexLeaf(leaf); err != nil {
				return err
			}
		}
	}
	return c.flushIndex(c.w.o.Workers)
}

func (c *snapshotCollector) indexLeaf(leaf []byte) error {
	f, err := c.w.submit(&c.w.index, leaf)
	if err != nil {
		return err
	}
	c.idxPending = append(c.idxPending, f)
	return nil
}

// flushIndex adds sealed index leaves to the index tree, in order, until
// at most keep remain pending.
func (c *snapshotCollector) flushIndex(keep int) error {
	for len(c.idxPending) > keep {
		f := c.idxPending[0]
		if err := f.wait(c.w.ctx); err != nil {
			return err
		}
		if err := c.idx.addLeaf(f.addr); err != nil {
			return err
		}
		c.idxPending = c.idxPending[1:]
	}
	return nil
}

func (c *snapshotCollector) finish() (data, index treeRoot, err error) {
	// Bupstash stores the index's tail, or one empty leaf for an empty
	// index; and one empty data leaf when no file had data.
	if leaf := c.idxChunker.forceSplit(); leaf != nil {
		err = c.indexLeaf(leaf)
	} else if c.indexSize == 0 {
		err = c.indexLeaf(c.w.bufs.get())
	}
	if err == nil {
		err = c.flushIndex(0)
	}
	if err == nil && c.dataSize == 0 {
		err = c.w.emptyLeaf(&c.w.data, c.data)
	}
	if err != nil {
		return data, index, err
	}
	if data, err = c.data.finish(); err != nil {
		return data, index, err
	}
	index, err = c.idx.finish()
	return data, index, err
}

// walkChecker verifies that entries come in Bupstash's walk order. It
// replays the walk: a stack of frames, each the child directories of a
// visited directory in name order, still to be visited. A new parent must
// be the next directory the walk would visit; the directories skipped on
// the way were empty.
type walkChecker struct {
	started  bool
	inDir    bool
	cur      string // parent whose children are being listed
	prevName string
	curDirs  []string   // child directories of cur seen so far
	stack    [][]string // directories still to be visited
}

func (c *walkChecker) next(e *Entry) error {
	if !c.started {
		if e.Path != "." {
			return fmt.Errorf("the first entry must be the root \".\", not %q", e.Path)
		}
		c.started = true
		c.stack = [][]string{{""}}
		return nil
	}
	if e.Path == "." {
		return errors.New(`"." appears twice`)
	}
	parent, name := splitPath(e.Path)
	if c.inDir && parent == c.cur {
		if name <= c.prevName {
			return fmt.Errorf("%q: out of walk order: names in a directory must be unique and sorted by bytes (after %q)", e.Path, c.prevName)
		}
	} else {
		if c.inDir && len(c.curDirs) > 0 {
			c.stack = append(c.stack, c.curDirs)
		}
		c.curDirs = nil
		found := false
		for len(c.stack) > 0 && !found {
			top := &c.stack[len(c.stack)-1]
			if len(*top) == 0 {
				c.stack = c.stack[:len(c.stack)-1]
				continue
			}
			d := (*top)[0]
			*top = (*top)[1:]
			found = d == parent
		}
		if !found {
			return fmt.Errorf("%q: out of walk order: its directory %q is not the next one to visit (or not a directory in the snapshot)", e.Path, parent)
		}
		c.cur, c.inDir = parent, true
	}
	c.prevName = name
	if e.IsDir() {
		c.curDirs = append(c.curDirs, e.Path)
	}
	return nil
}
