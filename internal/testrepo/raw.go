package testrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// readSize is how much of a raw item or file is read at a time.
const readSize = 256 << 10

// AddRaw writes a raw item (what `bupstash put FILE` or `put -` makes):
// the bytes of rd, chunked into a data tree, without an index. rd is
// streamed; memory does not grow with its length.
func (r *Repo) AddRaw(ctx context.Context, rd io.Reader, meta ItemMeta) (*ItemInfo, error) {
	start := time.Now()
	w, err := r.newItemWriter(ctx)
	if err != nil {
		return nil, err
	}
	futs := make(chan *future, 64)
	go func() {
		defer close(futs)
		if err := w.produceRaw(rd, futs); err != nil {
			w.fail(err)
		}
	}()

	tw := newTreeWriter(w.o, w.storeNode)
	var size uint64
	for f := range futs {
		if w.err() != nil {
			continue // drain until the producer stops
		}
		if err := f.wait(w.ctx); err != nil {
			w.fail(err)
			continue
		}
		size += uint64(f.size)
		if err := tw.addLeaf(f.addr); err != nil {
			w.fail(err)
		}
	}
	if w.err() == nil && size == 0 {
		if err := w.emptyLeaf(&w.data, tw); err != nil {
			w.fail(err)
		}
	}
	var root treeRoot
	if w.err() == nil {
		if root, err = tw.finish(); err != nil {
			w.fail(err)
		}
	}
	if err := w.err(); err != nil {
		w.stop()
		return nil, fmt.Errorf("raw item: %w", err)
	}
	w.stop()

	info := &ItemInfo{Nodes: w.nodes, Stored: w.stored.Load()}
	name := ""
	if meta.Source != "" {
		name = filepath.Base(meta.Source)
	}
	if err := r.commit(info, meta, root, nil, size, 0, name); err != nil {
		return nil, err
	}
	info.Duration = time.Since(start)
	return info, nil
}

// produceRaw chunks rd and submits its leaves in order.
func (w *itemWriter) produceRaw(rd io.Reader, futs chan<- *future) error {
	ch := newChunker(w.o, w.r.gear, w.bufs)
	buf := w.r.readBufs.get()
	defer w.r.readBufs.put(buf)
	emit := func(leaf []byte) error {
		f, err := w.submit(&w.data, leaf)
		if err != nil {
			return err
		}
		select {
		case futs <- f:
			return nil
		case <-w.ctx.Done():
			return context.Cause(w.ctx)
		}
	}
	for {
		n, rerr := rd.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			k, leaf := ch.add(p)
			p = p[k:]
			if leaf != nil {
				if err := emit(leaf); err != nil {
					return err
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading: %w", rerr)
		}
		if err := w.err(); err != nil {
			return err
		}
	}
	if leaf := ch.forceSplit(); leaf != nil {
		return emit(leaf)
	}
	return nil
}
