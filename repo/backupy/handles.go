package backupy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
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
// with ErrLocked. A corrupt object opens: reads before its damage work,
// reads touching it fail with ErrCorrupt. Open never waits for a decode
// pass.
func (f *File) Open(ctx context.Context) (Handle, error) {
	b := f.blob
	switch f.kind {
	case FileRaw:
		obj, err := b.open(ctx)
		if err != nil {
			return nil, err
		}
		return &rawHandle{obj: obj}, nil
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
	check := b.Kind != KindEmpty && b.key != nil && b.key.sha != "" && b.computedSHA == "" && b.dmg.found() == nil
	b.mu.Unlock()
	if f.kind == FileZst || !zstd || b.Kind == KindEmpty {
		h := &compressedHandle{b: b}
		if b.index == nil {
			// Unencrypted: the compressed layer is the object itself.
			obj, err := b.open(ctx)
			if err != nil {
				return nil, err
			}
			h.obj = obj
		}
		if check {
			h.seq = &seqCheck{b: b, sum: sha256.New()}
		}
		return h, nil
	}
	j, err := b.store.disk.acquireJob(b)
	if err != nil {
		return nil, err
	}
	return &decodedHandle{b: b, job: j}, nil
}

// rawHandle reads the object.
type rawHandle struct{ obj Object }

func (h *rawHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return h.obj.ReadAt(ctx, p, off)
}

func (h *rawHandle) Close() error { return h.obj.Close() }

// bytesHandle serves a snapshot taken at open.
type bytesHandle struct{ r *bytes.Reader }

func (h *bytesHandle) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return h.r.ReadAt(p, off)
}

func (h *bytesHandle) Close() error { return nil }

// compressedHandle reads the compressed layer: decrypted frames through
// the chunk cache, or the object itself if it is unencrypted.
type compressedHandle struct {
	b   *Blob
	obj Object    // unencrypted objects only
	seq *seqCheck // when the object's hash is known but not yet checked
}

func (h *compressedHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.b.usable(); err != nil {
		return 0, err
	}
	end := off + int64(len(p))
	if err := h.b.dmg.before(end); err != nil {
		return 0, err
	}
	n, err := h.b.readCompressed(ctx, h.obj, p, off)
	if err != nil && err != io.EOF {
		return n, err
	}
	// A corruption found by another reader meanwhile wins.
	if cerr := h.b.dmg.before(end); cerr != nil {
		return 0, cerr
	}
	if h.seq != nil && n > 0 {
		if serr := h.seq.read(ctx, off, int64(n)); serr != nil {
			return 0, serr
		}
	}
	return n, err
}

func (h *compressedHandle) Close() error {
	if h.seq != nil {
		h.seq.close()
	}
	if h.obj != nil {
		return h.obj.Close()
	}
	return nil
}

// seqCheck makes a handle's reads of the compressed layer a full pass
// when they cover it from its first byte to its last: it hashes the
// object's ciphertext, in order, as far as the reads have covered the
// layer without a gap, and checks the hash once they reach the end
// (learnSHA). A mismatch fails the read that completed the coverage, and
// the object is corrupt from then on: reordered frames, which every frame
// tag accepts, cannot read cleanly to the end.
//
// The kernel's readahead delivers reads a little out of order, so covered
// ranges are kept as a short list; a handle that reads all over the place
// is not a sequential reader, and gives up.
type seqCheck struct {
	b *Blob

	mu     sync.Mutex
	spans  []span // plaintext ranges read, sorted, disjoint, not adjacent
	hashed int64  // ciphertext bytes hashed
	sum    hash.Hash
	seq    *seqReader // the object from where hashing got to
	obj    Object
	off    bool // finished or given up
}

type span struct{ start, end int64 }

// maxSpans bounds the gaps a sequential reader may leave behind it.
const maxSpans = 64

func (s *seqCheck) read(ctx context.Context, off, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.off {
		return nil
	}
	s.spans = addSpan(s.spans, span{off, off + n})
	if len(s.spans) > maxSpans {
		s.stop()
		return nil
	}
	if s.spans[0].start != 0 {
		return nil
	}
	b := s.b
	covered, size := s.spans[0].end, b.compressedSize()
	complete := covered >= size
	// How much ciphertext the covered plaintext stands for: whole frames.
	upTo := covered
	switch {
	case complete:
		upTo = b.Size
	case b.index != nil:
		upTo = b.index.Frame(b.index.FrameAt(covered)).Offset
	}
	if err := s.hashTo(ctx, upTo); err != nil {
		s.stop()
		return err
	}
	if !complete {
		return nil
	}
	s.stop()
	return b.learnSHA(hex.EncodeToString(s.sum.Sum(nil)))
}

// hashTo hashes the ciphertext up to offset end.
func (s *seqCheck) hashTo(ctx context.Context, end int64) error {
	if end <= s.hashed {
		return nil
	}
	if s.seq == nil {
		// Hashing runs on the store's context: it reads ahead beyond
		// what this request needs, for the next requests.
		seq, obj, err := s.b.sequential(s.b.store.ctx)
		if err != nil {
			return err
		}
		s.seq, s.obj = seq, obj
	}
	n, err := io.Copy(s.sum, readerWithContext{ctx, io.LimitReader(s.seq, end-s.hashed)})
	s.hashed += n
	if err == nil && s.hashed < end {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("backupy: hashing %s: %w", s.b.Path, err)
	}
	return nil
}

// stop ends checking; the caller holds s.mu.
func (s *seqCheck) stop() {
	s.off = true
	s.spans = nil
	if s.seq != nil {
		s.seq.Close()
		s.obj.Close()
		s.seq, s.obj = nil, nil
	}
}

func (s *seqCheck) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
}

// addSpan inserts r into a sorted list of disjoint spans, merging it with
// every span it overlaps or touches.
func addSpan(spans []span, r span) []span {
	if r.end <= r.start {
		return spans
	}
	out := make([]span, 0, len(spans)+1)
	i := 0
	for ; i < len(spans) && spans[i].end < r.start; i++ {
		out = append(out, spans[i])
	}
	for ; i < len(spans) && spans[i].start <= r.end; i++ {
		r.start, r.end = min(r.start, spans[i].start), max(r.end, spans[i].end)
	}
	out = append(out, r)
	return append(out, spans[i:]...)
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
	// that taints every byte meanwhile, do not hand out bytes that may be
	// wrong. Bytes a pass decoded before localised damage are fine, but a
	// damaged object never reads to a clean end.
	if cerr := h.b.dmg.whole(); cerr != nil {
		return 0, cerr
	}
	if err == io.EOF {
		if cerr := h.b.Corrupt(); cerr != nil {
			return 0, cerr
		}
	}
	return n, err
}

func (h *decodedHandle) read(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.b.usable(); err != nil {
		return 0, err
	}
	if err := h.b.dmg.whole(); err != nil {
		return 0, err
	}
	if err := h.b.dmg.pastGoodDecoded(off + int64(len(p))); err != nil {
		return 0, err // known to need bytes past the damage: no pass
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
			pass, err := h.b.newPass(h.b.store.ctx)
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
