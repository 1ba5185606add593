package bupstash

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/blake3"
	"github.com/backupfs/backupfs/crypto/box"
	"github.com/klauspost/compress/zstd"
)

// A hash tree turns a byte stream, split into content-defined leaves, into
// one root address (docs/bupstash-format.md §7). Leaves are encrypted and
// addressed by keyed BLAKE3 of their plaintext; interior nodes are plain
// lists of (leaf count, child address) entries addressed by unkeyed BLAKE3.
// The counts let a reader reach leaf N by reading only `height` nodes.

// nodeEntrySize is the size of one interior node entry: a u64 leaf count
// and a child address.
const nodeEntrySize = 8 + 32

// ChunkError reports a chunk that is missing or fails verification. It names
// the item, the tree and the chunk, so that one log line is enough to find
// the damage.
type ChunkError struct {
	Item    Xid
	Path    string // the file being read, when known; raw bytes
	Tree    string // "data" or "index"
	Leaf    int64  // leaf index, or -1 for an interior node
	Address Address
	Err     error
}

func (e *ChunkError) Error() string {
	what := "interior node"
	if e.Leaf >= 0 {
		what = fmt.Sprintf("leaf %d", e.Leaf)
	}
	file := ""
	if e.Path != "" {
		file = fmt.Sprintf(" %q:", e.Path)
	}
	return fmt.Sprintf("item %s:%s %s %s, chunk %s: %v", e.Item, file, e.Tree, what, e.Address, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// htree reads one tree of one item.
type htree struct {
	repo    *Repository
	item    Xid
	kind    HTreeKind
	meta    HTreeMeta
	opener  *box.Opener
	hashKey [32]byte // keyed-BLAKE3 key of the leaves
	space   uint64   // cache space of the leaves

	lengths leafLengths

	probeMu sync.Mutex
	probes  map[uint64]*probeCall // leaf lengths being probed

	// window remembers the last height-1 node walked, so consecutive
	// leaves cost no descent.
	window atomic.Pointer[nodeWindow]
}

type nodeWindow struct {
	first   uint64 // index of the node's first leaf
	entries []byte
}

func (r *Repository) newHTree(it *Item, kind HTreeKind, meta HTreeMeta, opener *box.Opener, part1, part2 [32]byte) *htree {
	hk := hashKey(part1, part2)
	return &htree{
		repo:    r,
		item:    it.ID,
		kind:    kind,
		meta:    meta,
		opener:  opener,
		hashKey: hk,
		space:   r.leafSpace(hk),
		lengths: leafLengths{count: meta.DataChunkCount},
	}
}

func (t *htree) chunkErr(leaf int64, addr Address, err error) error {
	var ce *ChunkError
	if errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &ChunkError{Item: t.item, Tree: t.kind.String(), Leaf: leaf, Address: addr, Err: err}
}

// node returns the verified entries of an interior node. Node buffers are
// not pooled: the last node walked is kept (window) beyond its cache
// reference, and nodes are small next to leaves.
func (t *htree) node(ctx context.Context, addr Address, height, towards uint64) ([]byte, error) {
	ch, err := t.repo.cache.Get(ctx, cache.Key{Space: t.repo.nodeSpace, Addr: addr}, func(ctx context.Context) ([]byte, []byte, error) {
		b, err := t.read(ctx, t.ref(addr, height, towards), nil)
		if err != nil {
			return nil, nil, err
		}
		entries, err := parseNode(b, addr)
		if err != nil {
			t.reject(addr)
		}
		return entries, nil, err
	})
	if err != nil {
		return nil, t.chunkErr(-1, addr, err)
	}
	defer ch.Release()
	return ch.Bytes(), nil
}

// ref names a chunk of the tree for the source: a leaf (height 0), or an
// interior node on the way to leaf towards.
func (t *htree) ref(addr Address, height, towards uint64) ChunkRef {
	return ChunkRef{Addr: addr, Item: t.item, Tree: t.kind, HTree: t.meta, Leaf: towards, Height: height}
}

// read reads a chunk from the repository's source.
func (t *htree) read(ctx context.Context, ref ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	return t.repo.src.ReadChunk(ctx, ref, pool)
}

// reject tells a source that keeps copies of what it fetched that a chunk
// failed verification.
func (t *htree) reject(addr Address) {
	if rj, ok := t.repo.src.(ChunkRejecter); ok {
		rj.RejectChunk(addr)
	}
}

// parseNode checks a stored interior node against its address and returns
// its entries.
func parseNode(b []byte, addr Address) ([]byte, error) {
	if len(b) == 0 || b[len(b)-1] != footerNone {
		// Bupstash refuses this too: nodes are not authenticated by a key,
		// so decompressing them would expose the decompressor to anyone
		// who can write to the repository.
		return nil, fmt.Errorf("%w: interior node is compressed", ErrCorrupt)
	}
	entries := b[:len(b)-1]
	if len(entries) == 0 || len(entries)%nodeEntrySize != 0 {
		return nil, fmt.Errorf("%w: interior node of %d bytes", ErrCorrupt, len(entries))
	}
	if blake3.Sum256(entries) != [32]byte(addr) {
		return nil, fmt.Errorf("%w: interior node does not match its address", ErrCorrupt)
	}
	return entries, nil
}

// leafAddress returns the address of leaf n, descending from the root and
// checking at every level that the children's counts add up to what the
// parent promised (docs/bupstash-format.md §7.3, §7.4).
func (t *htree) leafAddress(ctx context.Context, n uint64) (Address, error) {
	if n >= t.meta.DataChunkCount {
		return Address{}, &ChunkError{Item: t.item, Tree: t.kind.String(), Leaf: int64(n), Address: t.meta.Address,
			Err: fmt.Errorf("%w: leaf %d is past the tree's %d leaves", ErrCorrupt, n, t.meta.DataChunkCount)}
	}
	if t.meta.Height == 0 {
		return t.meta.Address, nil
	}
	if w := t.window.Load(); w != nil && n >= w.first && n-w.first < uint64(len(w.entries)/nodeEntrySize) {
		return entryAddress(w.entries, n-w.first), nil
	}
	addr, count, base := t.meta.Address, t.meta.DataChunkCount, uint64(0)
	for h := t.meta.Height; h > 0; h-- {
		entries, err := t.node(ctx, addr, h, n)
		if err != nil {
			return Address{}, err
		}
		var sum, childCount, childBase uint64
		var child Address
		found := false
		for i := 0; i < len(entries); i += nodeEntrySize {
			c := binary.LittleEndian.Uint64(entries[i:])
			if c == 0 || (h == 1 && c != 1) || sum+c < sum {
				return Address{}, t.chunkErr(-1, addr, fmt.Errorf("%w: bad leaf count %d at height %d", ErrCorrupt, c, h))
			}
			if !found && n < base+sum+c {
				found = true
				child, childCount, childBase = entryAddress(entries, uint64(i/nodeEntrySize)), c, base+sum
			}
			sum += c
		}
		if sum != count {
			return Address{}, t.chunkErr(-1, addr, fmt.Errorf("%w: node holds %d leaves, its parent says %d", ErrCorrupt, sum, count))
		}
		if !found {
			return Address{}, t.chunkErr(-1, addr, fmt.Errorf("%w: leaf %d not under this node", ErrCorrupt, n))
		}
		if h == 1 {
			t.window.Store(&nodeWindow{first: base, entries: entries})
		}
		addr, count, base = child, childCount, childBase
	}
	return addr, nil
}

func entryAddress(entries []byte, i uint64) (a Address) {
	copy(a[:], entries[i*nodeEntrySize+8:])
	return a
}

func (t *htree) leafCount() uint64 { return t.meta.DataChunkCount }

// leaf returns the verified plaintext of leaf n, which the caller must
// release.
func (t *htree) leaf(ctx context.Context, n uint64) (*cache.Chunk, error) {
	addr, err := t.leafAddress(ctx, n)
	if err != nil {
		return nil, err
	}
	ch, err := t.repo.cache.Get(ctx, cache.Key{Space: t.space, Addr: addr}, t.leafFill(n, addr))
	if err != nil {
		return nil, t.chunkErr(int64(n), addr, err)
	}
	// The fill recorded the length under the index it was started for;
	// identical leaves elsewhere in the tree share its address.
	if err := t.lengths.set(n, int64(ch.Len())); err != nil {
		ch.Release()
		return nil, t.chunkErr(int64(n), addr, err)
	}
	return ch, nil
}

// leafBytes is leaf for leafSource: the bytes and their release.
func (t *htree) leafBytes(ctx context.Context, n uint64) ([]byte, func(), error) {
	ch, err := t.leaf(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	return ch.Bytes(), ch.Release, nil
}

// prefetch starts decoding leaf n in the background. It reports false when
// no prefetch slot is free, so the caller can ask again later.
func (t *htree) prefetch(ctx context.Context, n uint64) bool {
	if n >= t.meta.DataChunkCount {
		return true
	}
	addr, err := t.leafAddress(ctx, n)
	if err != nil {
		return true // the foreground read will report it
	}
	return t.repo.cache.Prefetch(ctx, cache.Key{Space: t.space, Addr: addr}, t.leafFill(n, addr))
}

// hint offers leaves [from, to] to a far source (ChunkPrefetcher) to
// fetch ahead, as far as the last bottom node walked names them: a hint
// reads nothing itself. Leaves already decoded in the cache count as
// taken. It returns how many leaves from from on are taken care of.
func (t *htree) hint(from, to uint64) uint64 {
	pf := t.repo.prefetcher
	if pf == nil || from > to || from >= t.meta.DataChunkCount {
		return 0
	}
	to = min(to, t.meta.DataChunkCount-1)
	addrOf := func(n uint64) (Address, bool) {
		if t.meta.Height == 0 {
			return t.meta.Address, n == 0
		}
		w := t.window.Load()
		if w == nil || n < w.first || n-w.first >= uint64(len(w.entries)/nodeEntrySize) {
			return Address{}, false
		}
		return entryAddress(w.entries, n-w.first), true
	}
	var refs []ChunkRef
	var leafOf []uint64 // the leaf each ref is
	var lead uint64     // decoded leaves before the first ref
	n := from
	for ; n <= to; n++ {
		addr, ok := addrOf(n)
		if !ok {
			break
		}
		if t.repo.cache.Contains(cache.Key{Space: t.space, Addr: addr}) {
			if len(refs) == 0 {
				lead++
			}
			continue
		}
		refs = append(refs, t.ref(addr, 0, n))
		leafOf = append(leafOf, n)
	}
	if len(refs) == 0 {
		return n - from
	}
	took := pf.PrefetchChunks(refs, t.repo.cache.Buffers())
	if took >= len(refs) {
		return n - from
	}
	if took == 0 {
		return lead
	}
	return leafOf[took] - from
}

// leafFill fetches, decrypts, decompresses and verifies a leaf. The chunk
// file is read into a pooled buffer and decrypted in place; a compressed
// leaf is decompressed into another pooled buffer and the first goes back
// at once, an uncompressed one stays in the buffer it was read into.
func (t *htree) leafFill(n uint64, addr Address) cache.FillFunc {
	return func(ctx context.Context) (data, buf []byte, err error) {
		pool := t.repo.cache.Buffers()
		env, err := t.read(ctx, t.ref(addr, 0, n), pool)
		if err != nil {
			return nil, nil, err
		}
		plain, err := t.opener.OpenInPlace(env)
		if err == nil {
			data, buf, err = decompressPooled(ctx, plain, pool)
		}
		switch {
		case err != nil:
			pool.Put(env)
			t.reject(addr)
			return nil, nil, err
		case buf == nil && len(data) > 0 && &data[0] == &plain[0]:
			buf = env // uncompressed: the data lives in the envelope
		default:
			pool.Put(env)
		}
		if Address(blake3.SumKeyed(&t.hashKey, data)) != addr {
			err = fmt.Errorf("%w: leaf content does not match its address", ErrCorrupt)
			t.reject(addr)
		} else {
			err = t.lengths.set(n, int64(len(data)))
		}
		if err != nil {
			pool.Put(buf)
			return nil, nil, err
		}
		return data, buf, nil
	}
}

// leafLen returns the plaintext length of leaf n. Lengths are recorded
// nowhere in the format; they are learned from decoded leaves, or probed:
// the envelope is authenticated and only its first and last bytes are
// decrypted, which hold the decompressed size for every footer except a
// zstd frame without a content size. On a far source (ChunkPrefetcher)
// the leaf is decoded instead: a probe would cost its whole transfer,
// and the read that follows would fetch it again. Readers locating
// offsets past the same leaves at once share one probe per leaf: without
// that, each reader at a distinct offset of a large file read every
// envelope before it.
func (t *htree) leafLen(ctx context.Context, n uint64) (int64, error) {
	for {
		if l, ok := t.lengths.get(n); ok {
			return l, nil
		}
		t.probeMu.Lock()
		p, joined := t.probes[n]
		if !joined {
			p = &probeCall{done: make(chan struct{})}
			if t.probes == nil {
				t.probes = make(map[uint64]*probeCall)
			}
			t.probes[n] = p
		}
		t.probeMu.Unlock()
		if !joined {
			return t.leadProbe(ctx, n, p)
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
		// The reader that probed may have given up (or panicked): then
		// look again.
		if p.err != errProbeAbandoned && !errors.Is(p.err, context.Canceled) && !errors.Is(p.err, context.DeadlineExceeded) {
			return p.n, p.err
		}
	}
}

// errProbeAbandoned is what readers sharing a probe see if the probe's own
// reader panicked: they probe again themselves.
var errProbeAbandoned = errors.New("probe abandoned")

// leadProbe runs the probe others may be waiting for, and lets them go
// whatever happens to it.
func (t *htree) leadProbe(ctx context.Context, n uint64, p *probeCall) (int64, error) {
	p.err = errProbeAbandoned
	defer func() {
		t.probeMu.Lock()
		delete(t.probes, n)
		t.probeMu.Unlock()
		close(p.done)
	}()
	p.n, p.err = t.learnLen(ctx, n)
	return p.n, p.err
}

// probeCall is a probe of one leaf's length under way.
type probeCall struct {
	done chan struct{}
	n    int64
	err  error
}

// learnLen finds leaf n's length: from the cache, a probe, or a decode.
func (t *htree) learnLen(ctx context.Context, n uint64) (int64, error) {
	addr, err := t.leafAddress(ctx, n)
	if err != nil {
		return 0, err
	}
	if l, ok := t.repo.cache.Len(cache.Key{Space: t.space, Addr: addr}); ok {
		return int64(l), t.lengths.set(n, int64(l))
	}
	if t.repo.prefetcher != nil {
		ch, err := t.leaf(ctx, n)
		if err != nil {
			return 0, err
		}
		defer ch.Release()
		return int64(ch.Len()), nil
	}
	size, ok, err := t.probeLen(ctx, n, addr)
	if err != nil {
		return 0, t.chunkErr(int64(n), addr, err)
	}
	if !ok {
		ch, err := t.leaf(ctx, n)
		if err != nil {
			return 0, err
		}
		defer ch.Release()
		return int64(ch.Len()), nil
	}
	return size, t.lengths.set(n, size)
}

func (t *htree) probeLen(ctx context.Context, n uint64, addr Address) (int64, bool, error) {
	pool := t.repo.cache.Buffers()
	env, err := t.read(ctx, t.ref(addr, 0, n), pool)
	if err != nil {
		return 0, false, err
	}
	defer pool.Put(env)
	k, err := t.opener.Key(env)
	if err == nil {
		err = box.VerifyWithKey(&k, env)
	}
	if err != nil {
		t.reject(addr)
		return 0, false, err
	}
	plainLen := box.PlaintextLen(len(env))
	if plainLen <= 0 {
		return 0, false, fmt.Errorf("%w: empty leaf plaintext (no footer)", ErrCorrupt)
	}
	head := make([]byte, min(plainLen, zstd.HeaderMaxSize))
	tail := make([]byte, min(plainLen, 5))
	if err := box.DecryptAtWithKey(&k, env, 0, head); err != nil {
		return 0, false, err
	}
	if err := box.DecryptAtWithKey(&k, env, plainLen-len(tail), tail); err != nil {
		return 0, false, err
	}
	size, ok, err := decompressedSize(plainLen, head, tail)
	if err == nil && ok && size > maxDecompressedSize {
		err = fmt.Errorf("%w: leaf declares %d bytes", ErrCompression, size)
	}
	return size, ok, err
}

// leafLengths records the plaintext lengths of a tree's leaves as they are
// learned. The leaf count comes from unauthenticated-by-key metadata and
// may be anything up to maxLeafCount, so the table is sparse: pages of
// lengthPageLen entries, allocated as leaves in them are learned. Memory
// thus follows what was actually read, never what the tree claims.
type leafLengths struct {
	count uint64
	mu    sync.Mutex
	pages map[uint64]*lengthPage
}

const (
	lengthPageBits = 9 // 512 lengths, 4 KiB, per page
	lengthPageLen  = 1 << lengthPageBits
)

// lengthPage holds length+1 per leaf; 0 means unknown.
type lengthPage [lengthPageLen]int64

func (l *leafLengths) get(i uint64) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pages[i>>lengthPageBits]
	if p == nil || p[i&(lengthPageLen-1)] == 0 {
		return 0, false
	}
	return p[i&(lengthPageLen-1)] - 1, true
}

// set records leaf i's length. Learning two different lengths for the same
// leaf (a probe and a decode disagreeing) means corruption.
func (l *leafLengths) set(i uint64, n int64) error {
	if n < 0 {
		return fmt.Errorf("%w: leaf %d has a negative length %d", ErrCorrupt, i, n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= l.count {
		return nil
	}
	if l.pages == nil {
		l.pages = make(map[uint64]*lengthPage)
	}
	p := l.pages[i>>lengthPageBits]
	if p == nil {
		p = new(lengthPage)
		l.pages[i>>lengthPageBits] = p
	}
	slot := &p[i&(lengthPageLen-1)]
	if old := *slot - 1; *slot != 0 && old != n {
		return fmt.Errorf("%w: leaf %d decodes to %d bytes but its header declared %d", ErrCorrupt, i, n, old)
	}
	*slot = n + 1
	return nil
}
