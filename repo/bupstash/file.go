package bupstash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/blake3"
)

// span locates a byte sequence in a tree's leaves: from byte start of leaf
// first to byte end (exclusive) of leaf last. end < 0 means the end of the
// last leaf, used for whole streams whose leaf lengths are not recorded.
type span struct {
	first, last uint64
	start, end  int64
	size        int64
}

// spanFromCursor turns an index entry's relative cursor into a span
// (docs/bupstash-format.md §10.5).
// A cursor ending at offset 0 of leaf c+delta takes nothing from that leaf.
func spanFromCursor(c, delta uint64, start, end uint64, size uint64) span {
	s := span{first: c, last: c + delta, start: int64(start), end: int64(end), size: int64(size)}
	if delta > 0 && end == 0 {
		s.last--
		s.end = -1
	}
	return s
}

// section reads a span at any offset. It learns, leaf by leaf, where each
// leaf's bytes start within the span; a read needs the lengths of the
// leaves before its offset, which are cheap to probe (see htree.leafLen)
// when they have not been decoded yet.
type section struct {
	tree *htree
	sp   span

	mu  sync.Mutex
	cum []int64 // cum[k] = span offset where leaf first+k begins; grows as lengths are learned
}

func newSection(t *htree, sp span) *section {
	return &section{tree: t, sp: sp, cum: []int64{0}}
}

// contribution returns the range [lo, hi) that leaf k of the span
// contributes, given the leaf's length (unused when the range is fixed).
func (s *section) contribution(k uint64, leafLen int64) (lo, hi int64) {
	if k == 0 {
		lo = s.sp.start
	}
	hi = leafLen
	if s.sp.first+k == s.sp.last && s.sp.end >= 0 {
		hi = s.sp.end
	}
	return lo, hi
}

// locate returns the span-relative leaf k holding offset off, and where
// that leaf's contribution begins in the span. Leaf lengths are probed
// without holding the mutex (a probe may read a chunk), so the mutex is
// only ever held inside lookup and extend, each with its own deferred
// unlock: a panic anywhere leaves it unlocked, never doubly unlocked.
func (s *section) locate(ctx context.Context, off int64) (k uint64, leafStart int64, err error) {
	for {
		next, err := s.lookup(off)
		if err != nil || next.found {
			return next.k, next.leafStart, err
		}
		var n int64
		if next.idx != s.sp.last || s.sp.end < 0 {
			s.hintToward(next, off)
			if n, err = s.tree.leafLen(ctx, next.idx); err != nil {
				return 0, 0, err
			}
		}
		if err := s.extend(next.known, next.idx, n); err != nil {
			return 0, 0, err
		}
	}
}

// hintToward tells a far source about the leaves a seek to off must
// learn the lengths of, guessed from the lengths learned so far, so that
// they come together rather than one round trip each.
func (s *section) hintToward(next located, off int64) {
	if s.tree.repo.prefetcher == nil {
		return
	}
	s.mu.Lock()
	known := len(s.cum) - 1
	at := s.cum[known]
	s.mu.Unlock()
	avg := int64(1 << 20)
	if known > 0 && at > 0 {
		avg = max(at/int64(known), 4<<10)
	}
	leaves := uint64(min((off-at)/avg+2, hintSeekLeaves))
	s.tree.hint(next.idx, min(next.idx+leaves-1, s.sp.last))
}

// hintSeekLeaves bounds the leaves one seek hints at.
const hintSeekLeaves = 32

// located is lookup's answer: the leaf holding the offset (found), or the
// next leaf whose length must be learned (idx, span-relative known).
type located struct {
	found     bool
	k         uint64
	leafStart int64
	known     int
	idx       uint64
}

func (s *section) lookup(off int64) (located, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := len(s.cum) - 1 // leaves 0..known-1 have known bounds
	if known > 0 && off < s.cum[known] {
		// Largest k with cum[k] <= off.
		i := sort.Search(known+1, func(i int) bool { return s.cum[i] > off }) - 1
		return located{found: true, k: uint64(i), leafStart: s.cum[i]}, nil
	}
	idx := s.sp.first + uint64(known)
	if idx > s.sp.last {
		return located{}, fmt.Errorf("%w: the file's leaves hold %d bytes, its size is %d", ErrCorrupt, s.cum[known], s.sp.size)
	}
	return located{known: known, idx: idx}, nil
}

// extend records the bounds of span-relative leaf known (tree leaf idx, n
// bytes long), unless another reader recorded them meanwhile.
func (s *section) extend(known int, idx uint64, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cum)-1 != known {
		return nil
	}
	lo, hi := s.contribution(uint64(known), n)
	if lo > hi {
		return &ChunkError{Item: s.tree.item, Tree: s.tree.kind.String(), Leaf: int64(idx),
			Err: fmt.Errorf("%w: cursor range [%d, %d) does not fit the %d-byte leaf", ErrCorrupt, lo, hi, n)}
	}
	s.cum = append(s.cum, s.cum[known]+hi-lo)
	return nil
}

// readAt reads from the span like io.ReaderAt, returning also the
// span-relative index of the last leaf touched (for readahead).
func (s *section) readAt(ctx context.Context, p []byte, off int64) (n int, lastLeaf uint64, err error) {
	if off < 0 {
		return 0, 0, errors.New("negative offset")
	}
	if off >= s.sp.size {
		return 0, 0, io.EOF
	}
	want := int(min(int64(len(p)), s.sp.size-off))
	k, leafStart, err := s.locate(ctx, off)
	if err != nil {
		return 0, 0, err
	}
	for n < want {
		idx := s.sp.first + k
		if idx > s.sp.last {
			return n, k, fmt.Errorf("%w: the file's leaves end before its size %d", ErrCorrupt, s.sp.size)
		}
		ch, err := s.tree.leaf(ctx, idx)
		if err != nil {
			return n, k, err
		}
		data := ch.Bytes()
		lo, hi := s.contribution(k, int64(len(data)))
		if lo > hi || hi > int64(len(data)) {
			ch.Release()
			return n, k, &ChunkError{Item: s.tree.item, Tree: s.tree.kind.String(), Leaf: int64(idx),
				Err: fmt.Errorf("%w: cursor range [%d, %d) does not fit the %d-byte leaf", ErrCorrupt, lo, hi, len(data))}
		}
		if idx == s.sp.last && leafStart+hi-lo != s.sp.size {
			ch.Release()
			return n, k, &ChunkError{Item: s.tree.item, Tree: s.tree.kind.String(), Leaf: int64(idx),
				Err: fmt.Errorf("%w: the file's leaves hold %d bytes, its size is %d", ErrCorrupt, leafStart+hi-lo, s.sp.size)}
		}
		pos := lo + (off + int64(n) - leafStart)
		if pos < hi {
			n += copy(p[n:want], data[pos:hi])
		}
		ch.Release()
		leafStart += hi - lo
		k++
	}
	if n < len(p) {
		return n, k - 1, io.EOF
	}
	return n, k - 1, nil
}

// File is a regular file's content inside an item (or a raw item's whole
// data stream). It is safe for concurrent use; each reader should use its
// own FileReader so that sequential access can be detected per reader.
type File struct {
	sec  *section
	base int64 // offset of the file in the section (non-zero only for V1/V2 entries)
	size int64
	hash *[32]byte // BLAKE3 of the content, when the index records it
	item Xid
	path string // the entry's path; "" for a whole data stream
}

// FileError reports a failed read of a file, or of an item's whole data
// stream, naming the item and the file.
type FileError struct {
	Item Xid
	Path string // raw bytes; "" for the whole data stream
	Err  error
}

func (e *FileError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("item %s: data stream: %v", e.Item, e.Err)
	}
	return fmt.Sprintf("item %s: %q: %v", e.Item, e.Path, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// InFile returns err naming the item and file it concerns, once. A chunk
// error names its item itself and gets the path added; an error about the
// whole data stream gets the path of the file that was being read from it
// (tar output reads files out of one stream); anything else is wrapped in
// a FileError.
func InFile(err error, item Xid, path string) error {
	if err == nil || err == io.EOF || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch e := err.(type) {
	case *ChunkError:
		if e.Path == "" && path != "" {
			c := *e
			c.Path = path
			return &c
		}
		return err
	case *FileError:
		if e.Path == "" && path != "" {
			c := *e
			c.Path = path
			return &c
		}
		return err
	}
	return &FileError{Item: item, Path: path, Err: err}
}

// Size returns the file's length in bytes.
func (f *File) Size() int64 { return f.size }

// NewReader returns a reader over f.
func (f *File) NewReader() *FileReader { return &FileReader{f: f} }

// FileReader reads a File. ReadAtContext may be called concurrently; the
// io.Reader methods use an internal position and must not be.
type FileReader struct {
	f *File

	mu       sync.Mutex
	next     int64  // where the last read ended
	streak   int    // consecutive sequential reads
	prefetch uint64 // leaves (tree indexes) before this one have been prefetched
	hinted   uint64 // leaves before this one have been offered to a far source
	hasher   *blake3.Hasher
	hashed   int64  // bytes hashed so far, from 0; -1 once checked, or never to be
	scratch  []byte // for hashing what was read ahead of the hash

	pos int64
}

// maxReadahead bounds the bytes a sequential reader asks to be decoded
// ahead of it, and readaheadLeaves the number of leaves. hintLeaves is
// how many leaves past that window a far source is told about, so that
// fetching stays ahead of decoding.
const (
	maxReadahead    = 64 << 20
	readaheadLeaves = 8
	hintLeaves      = 8
)

// ReadAtContext reads len(p) bytes at off, touching only the leaves that
// cover them. Sequential readers get leaves decoded ahead of them, in
// parallel, and have the whole content checked against the index's
// content hash when they reach the end.
func (r *FileReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f := r.f
	if len(p) == 0 {
		return 0, nil
	}
	if off >= f.size {
		return 0, io.EOF
	}
	end := min(int64(len(p)), f.size-off)
	n, last, err := f.sec.readAt(ctx, p[:end], f.base+off)
	if err == io.EOF && int64(n) == end {
		err = nil
	}
	if err != nil {
		return n, InFile(err, f.item, f.path)
	}
	if herr := r.track(ctx, p[:n], off, last); herr != nil {
		return n, herr
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// seqSlack is how far from where the last read ended a read may start and
// still count as sequential: the kernel's readahead keeps several reads in
// flight, which arrive slightly out of order.
const seqSlack = 4 << 20

// track updates sequential-access state, starts readahead, and feeds the
// content hash.
func (r *FileReader) track(ctx context.Context, got []byte, off int64, last uint64) error {
	f := r.f
	r.mu.Lock()
	defer r.mu.Unlock()
	if off >= r.next-seqSlack && off <= r.next+seqSlack {
		r.streak++
	} else {
		r.streak = 0
	}
	r.next = max(r.next, off+int64(len(got)))

	if r.streak >= 1 {
		r.readahead(ctx, last)
	}

	if f.hash == nil || r.hashed < 0 {
		return nil
	}
	end := off + int64(len(got))
	switch {
	case off > r.hashed:
		// Ahead of the hash: hashed later, from the cache, once the reads
		// before it arrive (see below); unless the reader is not
		// sequential, and the content is never hashed.
		if off-r.hashed > seqSlack {
			r.hasher, r.hashed = nil, -1
		}
		return nil
	case end <= r.hashed:
		return nil // hashed already
	}
	if r.hasher == nil {
		r.hasher = blake3.New()
	}
	r.hasher.Write(got[r.hashed-off:])
	r.hashed = end
	// Reads that arrived ahead of this one (the kernel's readahead keeps
	// several in flight, slightly out of order) are hashed now, read again
	// from the leaves (cached: they were just read).
	for r.hashed < r.next {
		if r.scratch == nil {
			r.scratch = make([]byte, min(1<<20, f.size))
		}
		n, _, err := f.sec.readAt(ctx, r.scratch[:min(int64(len(r.scratch)), r.next-r.hashed)], f.base+r.hashed)
		if err != nil && err != io.EOF {
			return InFile(err, f.item, f.path)
		}
		if n == 0 {
			break
		}
		r.hasher.Write(r.scratch[:n])
		r.hashed += int64(n)
	}
	if r.hashed == f.size {
		sum := r.hasher.Sum256()
		r.hasher, r.scratch = nil, nil
		r.hashed = -1 // checked; never again for this reader
		if sum != *f.hash {
			return &FileError{Item: f.item, Path: f.path, Err: fmt.Errorf("%w: content does not match the hash in the index", ErrCorrupt)}
		}
	}
	return nil
}

// readahead asks for the leaves after last to be decoded in the background:
// the window grows with the streak, up to readaheadLeaves leaves or
// maxReadahead bytes (and a quarter of the cache, so prefetched leaves are
// not evicted before they are read).
func (r *FileReader) readahead(ctx context.Context, last uint64) {
	sec := r.f.sec
	first := sec.sp.first + last + 1
	if first > sec.sp.last {
		return
	}
	leafLen := int64(1 << 20)
	if l, ok := sec.tree.lengths.get(first - 1); ok && l > 0 {
		leafLen = l
	}
	budget := min(int64(maxReadahead), sec.tree.repo.cache.MaxBytes()/4)
	window := min(uint64(1)<<min(r.streak, 6), readaheadLeaves, uint64(max(budget/leafLen, 1)))
	stop := min(first+window-1, sec.sp.last)
	if r.prefetch < first {
		r.prefetch = first
	}
	for ; r.prefetch <= stop; r.prefetch++ {
		if !sec.tree.prefetch(ctx, r.prefetch) {
			break // every slot busy: ask again on the next read
		}
	}
	if sec.tree.repo.prefetcher != nil {
		// A far source fetches from the window's start on, several
		// leaves at once; the decoders then find them waiting.
		from := max(first, r.hinted)
		if to := min(stop+hintLeaves, sec.sp.last); from <= to {
			r.hinted = from + sec.tree.hint(from, to)
		}
	}
}

// ReadCached reads the whole file into p, which must hold Size bytes, if
// every leaf it needs is decoded in the chunk cache already, and checks
// the content hash when the index records one. It reports false, having
// read nothing, when a leaf would have to be decoded first, and for files
// located by their offset in the data stream (formats 1 and 2), whose
// leaves are found only by reading. It is for copying a small file ahead
// of a read that is likely to come: it never costs a decode.
func (f *File) ReadCached(ctx context.Context, p []byte) (bool, error) {
	sp := f.sec.sp
	if f.size == 0 || f.base != 0 || sp.end < 0 || int64(len(p)) < f.size {
		return false, nil
	}
	t := f.sec.tree
	for idx := sp.first; idx <= sp.last; idx++ {
		addr, err := t.leafAddress(ctx, idx)
		if err != nil {
			return false, InFile(err, f.item, f.path)
		}
		if !t.repo.cache.Contains(cache.Key{Space: t.space, Addr: addr}) {
			return false, nil
		}
	}
	// A leaf evicted since is decoded again: rare, and bounded by the
	// file's few leaves.
	n, _, err := f.sec.readAt(ctx, p[:f.size], 0)
	if err == io.EOF && int64(n) == f.size {
		err = nil
	}
	if err != nil {
		return false, InFile(err, f.item, f.path)
	}
	if f.hash != nil && blake3.Sum256(p[:f.size]) != *f.hash {
		return false, &FileError{Item: f.item, Path: f.path, Err: fmt.Errorf("%w: content does not match the hash in the index", ErrCorrupt)}
	}
	return true, nil
}

// ReadAt implements io.ReaderAt.
func (r *FileReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// Read implements io.Reader.
func (r *FileReader) Read(p []byte) (int, error) {
	n, err := r.ReadAtContext(context.Background(), p, r.pos)
	r.pos += int64(n)
	return n, err
}

// WriteTo implements io.WriterTo with large reads, so io.Copy moves whole
// leaves at a time.
func (r *FileReader) WriteTo(w io.Writer) (int64, error) {
	return r.WriteToContext(context.Background(), w)
}

// WriteToContext copies the rest of the file to w.
func (r *FileReader) WriteToContext(ctx context.Context, w io.Writer) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := r.ReadAtContext(ctx, buf, r.pos)
		r.pos += int64(n)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
