package backupy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// Handle reads an open File. ReadAt follows io.ReaderAt: fewer than len(p)
// bytes only with an error, io.EOF at the end of the file. Handles are safe
// for concurrent use, but each FUSE open should get its own: a handle that
// reads from the start forwards is served by a private decoder.
type Handle interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Close() error
}

// Open opens the file. Opening a decoded view of a locked object fails
// with ErrLocked, of a corrupt object with ErrCorrupt. Open never waits for
// a decode pass.
func (f *File) Open(ctx context.Context) (Handle, error) {
	f, err := f.current(ctx)
	if err != nil {
		return nil, err
	}
	b := f.blob
	switch f.kind {
	case FileRaw:
		file, err := b.openObject()
		if err != nil {
			return nil, err
		}
		return &rawHandle{f: file}, nil
	case FileMeta:
		doc, err := f.render()
		if err != nil {
			return nil, err
		}
		return &bytesHandle{r: bytes.NewReader(doc)}, nil
	}
	if err := b.usable(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	zstd := b.pl.zstd
	b.mu.Unlock()
	if f.kind == FileZst || !zstd || b.Kind == KindEmpty {
		h := &compressedHandle{b: b}
		if b.index == nil {
			// Unencrypted: the compressed layer is the object itself.
			if h.f, err = b.openObject(); err != nil {
				return nil, err
			}
		}
		return h, nil
	}
	j, err := b.store.disk.acquireJob(b)
	if err != nil {
		return nil, err
	}
	return &decodedHandle{b: b, job: j}, nil
}

// rawHandle reads the object file.
type rawHandle struct{ f *os.File }

func (h *rawHandle) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return h.f.ReadAt(p, off)
}

func (h *rawHandle) Close() error { return h.f.Close() }

// bytesHandle serves a snapshot taken at open.
type bytesHandle struct{ r *bytes.Reader }

func (h *bytesHandle) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return h.r.ReadAt(p, off)
}

func (h *bytesHandle) Close() error { return nil }

// compressedHandle reads the compressed layer: decrypted frames through
// the chunk cache, or the file of an unencrypted object.
type compressedHandle struct {
	b *Blob
	f *os.File // unencrypted objects only
}

func (h *compressedHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.b.usable(); err != nil {
		return 0, err
	}
	var raw io.ReaderAt
	if h.f != nil {
		raw = h.f
	}
	n, err := h.b.readCompressed(ctx, raw, p, off)
	if err == nil || err == io.EOF {
		// A corruption found by another reader meanwhile wins.
		if cerr := h.b.usable(); cerr != nil {
			return 0, cerr
		}
	}
	return n, err
}

func (h *compressedHandle) Close() error {
	if h.f != nil {
		return h.f.Close()
	}
	return nil
}

// decodedHandle reads the decoded dump. It starts as a streaming handle
// when nothing is decoded yet and its first read is near offset 0; it
// switches to the shared job on a read its window cannot serve.
type decodedHandle struct {
	b   *Blob
	job *matJob // held for the handle's life, which keeps its file cached

	mu       sync.Mutex // serialises the private decoder
	stream   *streamReader
	noStream bool
	closed   bool
}

func (h *decodedHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("backupy: negative offset %d", off)
	}
	n, err := h.read(ctx, p, off)
	if err != nil && err != io.EOF {
		return n, err
	}
	// Reads before a full pass cannot see damage; if a pass found some
	// meanwhile, do not hand out bytes that may be wrong.
	if cerr := h.b.usable(); cerr != nil {
		return 0, cerr
	}
	return n, err
}

func (h *decodedHandle) read(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.b.usable(); err != nil {
		return 0, err
	}
	if n, ok := h.b.decodedSize(); ok && off >= n {
		return 0, io.EOF
	}
	if h.job.covers(off, len(p)) {
		return h.job.readAt(ctx, p, off)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return 0, os.ErrClosed
	}
	if h.stream == nil && !h.noStream {
		window := h.b.store.opts.StreamWindow
		if off <= int64(window) && !h.job.active() {
			pass, err := h.b.newPass()
			if err != nil {
				h.mu.Unlock()
				return 0, err
			}
			h.stream = newStreamReader(pass, window)
		} else {
			h.noStream = true
		}
	}
	if h.stream != nil {
		n, err, ok := h.stream.readAt(ctx, p, off)
		if ok {
			if size, known := h.b.decodedSize(); known && err == nil {
				if derr := h.stream.drain(ctx, h.b, size); derr != nil {
					n, err = 0, derr
				}
			}
			h.mu.Unlock()
			return n, err
		}
		// A backwards or far-forward seek: hand over to the shared job.
		h.stream.close()
		h.stream, h.noStream = nil, true
	}
	h.mu.Unlock()
	return h.job.readAt(ctx, p, off)
}

func (h *decodedHandle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	if h.stream != nil {
		h.stream.close()
		h.stream = nil
	}
	h.mu.Unlock()
	h.b.store.disk.releaseJob(h.job)
	return nil
}

func (b *Blob) decodedSize() (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dec.size, b.dec.size >= 0
}

// covers reports whether [off, off+n) is decoded already (or past the end
// of a finished job).
func (j *matJob) covers(off int64, n int) bool {
	j.lock()
	defer j.unlock()
	return j.done || off+int64(n) <= j.hwm
}

// active reports whether the job is running or has decoded anything, in
// which case a new private decoder would only duplicate its work.
func (j *matJob) active() bool {
	j.dc.mu.Lock()
	running := j.running
	j.dc.mu.Unlock()
	j.lock()
	defer j.unlock()
	return running || j.done || j.hwm > 0
}
