package testrepo

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"lukechampine.com/blake3"
)

// An item is written by a small pipeline: producers cut leaves and hand
// them to sealing workers, which address, compress, encrypt and store
// them; a collector adds the leaves' addresses to the hash trees in stream
// order. Leaves in flight are bounded by the job queue, so memory stays at
// a few leaves per worker whatever the item's size.

// tree describes one of an item's two trees.
type tree struct {
	sealer  *box.Sealer // one ephemeral key per tree per item, as in a put
	hashKey [32]byte
	comp    bupstash.Compression
}

// future is a leaf being sealed.
type future struct {
	done chan struct{}
	addr bupstash.Address
	size int
	err  error
}

func (f *future) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

type leafJob struct {
	t    *tree
	data []byte
	fut  *future
}

// itemWriter runs the sealing workers of one item.
type itemWriter struct {
	r      *Repo
	o      *Options
	ctx    context.Context
	cancel context.CancelCauseFunc
	bufs   *bufPool
	jobs   chan *leafJob
	wg     sync.WaitGroup
	data   tree
	index  tree
	stored atomic.Int64
	nodes  int
}

func (r *Repo) newItemWriter(ctx context.Context) (*itemWriter, error) {
	comp, err := r.opts.Compression.footer()
	if err != nil {
		return nil, err
	}
	dataSealer, err := box.NewSealer(r.key.DataPK.V, r.key.DataPSK.V)
	if err != nil {
		return nil, err
	}
	idxSealer, err := box.NewSealer(r.key.IdxPK.V, r.key.IdxPSK.V)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &itemWriter{
		r:      r,
		o:      &r.opts,
		ctx:    ctx,
		cancel: cancel,
		bufs:   r.bufs,
		jobs:   make(chan *leafJob, 1),
		data:   tree{sealer: dataSealer, hashKey: r.dataHashKey, comp: comp},
		// Bupstash 0.12 always compresses index leaves with zstd.
		index: tree{sealer: idxSealer, hashKey: r.idxHashKey, comp: bupstash.CompressionZstd},
	}
	for range r.opts.Workers {
		w.wg.Add(1)
		go w.sealLoop()
	}
	return w, nil
}

// fail stops the item with err (the first error wins).
func (w *itemWriter) fail(err error) { w.cancel(err) }

// err returns the item's first error, if any.
func (w *itemWriter) err() error {
	if w.ctx.Err() != nil {
		return context.Cause(w.ctx)
	}
	return nil
}

// stop ends the sealing workers; no submit may follow.
func (w *itemWriter) stop() {
	close(w.jobs)
	w.wg.Wait()
	w.cancel(nil)
}

// submit queues a leaf for sealing. The leaf buffer passes to the worker.
func (w *itemWriter) submit(t *tree, leaf []byte) (*future, error) {
	f := &future{done: make(chan struct{})}
	select {
	case w.jobs <- &leafJob{t: t, data: leaf, fut: f}:
		return f, nil
	case <-w.ctx.Done():
		w.bufs.put(leaf)
		return nil, context.Cause(w.ctx)
	}
}

func (w *itemWriter) sealLoop() {
	defer w.wg.Done()
	// The worker's payload and envelope buffers grow to the largest leaf
	// and are reused, by the repository's next items too.
	zbuf, env := w.r.scratch.get(), w.r.scratch.get()
	defer func() { w.r.scratch.put(zbuf); w.r.scratch.put(env) }()
	for j := range w.jobs {
		if err := w.err(); err != nil {
			j.fut.err = err
		} else {
			j.fut.addr = leafAddress(&j.t.hashKey, j.data)
			j.fut.size = len(j.data)
			zbuf = reserve(zbuf, zstdBound(len(j.data)))
			plain := compressInto(zbuf, j.data, j.t.comp) // may be j.data plus its footer
			env = reserve(env, len(plain)+box.Overhead)
			env = j.t.sealer.Seal(env[:0], plain)
			n, err := w.r.writeChunk(j.fut.addr, env)
			w.stored.Add(n)
			if err != nil {
				j.fut.err = err
				w.fail(err)
			}
		}
		w.bufs.put(j.data)
		close(j.fut.done)
	}
}

// reserve returns b emptied, with room for n bytes.
func reserve(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, 0, max(n, 2*cap(b)))
	}
	return b[:0]
}

// storeNode writes an interior node (for treeWriter).
func (w *itemWriter) storeNode(addr bupstash.Address, node []byte) error {
	n, err := w.r.writeChunk(addr, node)
	w.stored.Add(n)
	w.nodes++
	return err
}

// leafAddress is the keyed BLAKE3 of a leaf's plaintext
// (docs/bupstash-format.md §5.4).
func leafAddress(key *[32]byte, data []byte) bupstash.Address {
	h := blake3.New(32, key[:])
	h.Write(data)
	var a bupstash.Address
	h.Sum(a[:0])
	return a
}

// emptyLeaf adds the one empty leaf Bupstash stores for an empty stream.
func (w *itemWriter) emptyLeaf(t *tree, tw *treeWriter) error {
	f, err := w.submit(t, w.bufs.get())
	if err != nil {
		return err
	}
	if err := f.wait(w.ctx); err != nil {
		return err
	}
	return tw.addLeaf(f.addr)
}

// compressInto frames b with its compression footer
// (docs/bupstash-format.md §6): compressed with c into dst when that makes
// it smaller, else b itself with footer 0 appended (b's buffer has room for
// it), the rule Bupstash's compress() applies.
func compressInto(dst, b []byte, c bupstash.Compression) []byte {
	switch c {
	case bupstash.CompressionLZ4:
		need := lz4.CompressBlockBound(len(b)) + 5
		dst = reserve(dst, need)
		var lc lz4.Compressor
		n, err := lc.CompressBlock(b, dst[:need])
		if err == nil && n > 0 && n+5 <= len(b) {
			dst = binary.LittleEndian.AppendUint32(dst[:n], uint32(len(b)))
			return append(dst, byte(bupstash.CompressionLZ4))
		}
	case bupstash.CompressionZstd:
		// dst has room for incompressible input (block headers and the
		// frame header make it a little larger): EncodeAll never grows it.
		out := zstdEncoder().EncodeAll(b, dst[:0])
		if len(out) < len(b) {
			return append(out, byte(bupstash.CompressionZstd))
		}
	}
	return append(b, byte(bupstash.CompressionNone))
}

// zstdBound bounds the size of a zstd frame of n bytes, and of an lz4
// block with its footer.
func zstdBound(n int) int { return max(n+n>>8+64, lz4.CompressBlockBound(n)+5) }

// zstdEncoder writes what Bupstash's zstd_safe::compress (libzstd's
// ZSTD_compress at level 3) writes: one single-segment frame with the
// content size in its header and no checksum, matches within 2 MiB (level
// 3's window). Readers use the size to learn a leaf's length cheaply;
// without the single-segment option the Go encoder would omit it for
// payloads under 256 bytes. The small window also keeps the encoders'
// history buffers small.
var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true), zstd.WithWindowSize(2<<20))
	if err != nil {
		panic(fmt.Sprintf("zstd encoder: %v", err)) // only for invalid options
	}
	return e
})
