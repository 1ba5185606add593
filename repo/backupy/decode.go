package backupy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// maxZstdWindow bounds the memory one decoder may need. The agent's
// streams use 8 MiB; 128 MiB still admits zstd --long streams, and a
// hostile header cannot make a decoder allocate more.
const maxZstdWindow = 128 << 20

var decoders = sync.Pool{New: func() any {
	// Two: block decoding then overlaps with sequence execution, which made
	// a full pass about 1.5 times faster on two cores (BenchmarkDecode).
	// The decoder's goroutines end with each stream, so pooled decoders
	// hold none.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		panic(err) // only for invalid options
	}
	return d
}}

func getDecoder() *zstd.Decoder { return decoders.Get().(*zstd.Decoder) }

func putDecoder(d *zstd.Decoder) {
	d.Reset(nil) // drop the reference to the input
	decoders.Put(d)
}

// decodePass decodes an object from its first byte to its last, checking
// everything a sequential reader can: every frame tag, the end-of-stream
// marker, no trailing bytes, the zstd content checksum, and the ciphertext
// SHA-256 when one is known. Read returns io.EOF only when all of these
// held; the outcome is recorded on the Blob.
type decodePass struct {
	b    *Blob
	key  *blobKey
	obj  Object
	seq  *seqReader
	in   *ioErrReader // the object, counting I/O errors apart from damage
	sum  hash.Hash    // SHA-256 of every object byte read
	body io.Reader    // the compressed layer
	zr   *zstd.Decoder
	n    int64 // decoded bytes returned
	err  error
}

// ioErrReader remembers read errors of the object, so that a decode
// failure caused by a failing disk or network is not reported as a
// corrupt object.
type ioErrReader struct {
	r   io.Reader
	err error
}

func (r *ioErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// passesStarted counts full passes in this process; tests use it to prove
// that cached data is reused.
var passesStarted atomic.Int64

// newPass starts a full pass over the main view's decoded bytes. Its reads
// run under ctx, which must last as long as the pass.
func (b *Blob) newPass(ctx context.Context) (*decodePass, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	if err := b.dmg.whole(); err != nil {
		return nil, err
	}
	passesStarted.Add(1)
	b.store.log.Debug("backupy: full decode pass", "object", b.Path)
	seq, obj, err := b.sequential(ctx)
	if err != nil {
		return nil, err
	}
	p := &decodePass{b: b, key: b.currentKey(), obj: obj, seq: seq, sum: sha256.New()}
	p.in = &ioErrReader{r: io.TeeReader(seq, p.sum)}
	if b.index != nil {
		p.body = newReadAhead(gcmframe.NewReaderCipher(p.in, p.key.cipher))
	} else {
		p.body = bufio.NewReaderSize(p.in, 256<<10)
	}
	p.zr = getDecoder()
	if err := p.zr.Reset(p.body); err != nil {
		p.Close()
		return nil, fmt.Errorf("backupy: %s: %w", b.Path, err)
	}
	return p, nil
}

// Read returns decoded bytes.
func (p *decodePass) Read(buf []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.zr.Read(buf)
	p.n += int64(n)
	switch {
	case err == io.EOF:
		p.err = p.finish()
		if p.err == nil {
			p.err = io.EOF
		}
	case err != nil:
		p.err = p.fail(err)
	}
	if n > 0 {
		return n, nil
	}
	return 0, p.err
}

// fail classifies a decode error: I/O failures pass through, everything
// else is damage and marks the object corrupt.
func (p *decodePass) fail(err error) error {
	if p.in.err != nil {
		if errors.Is(p.in.err, ErrChanged) || errors.Is(p.in.err, ErrNotFound) {
			// Mid-pass: the bytes so far are of the old version. The
			// read fails (the caller reports it) rather than mixing them
			// with the new version's. The cause is not wrapped: this
			// read failed (EIO), the handle is not stale (ESTALE).
			return fmt.Errorf("backupy: %s: %w (%v)", p.b.Path, ErrReplaced, p.in.err)
		}
		return fmt.Errorf("backupy: reading %s: %w", p.b.Path, p.in.err)
	}
	var fe *gcmframe.FrameError
	if !errors.As(err, &fe) {
		err = fmt.Errorf("%w after %d decoded bytes: %w", errZstd, p.n, err)
	}
	return p.b.markCorrupt(err)
}

// finish runs the end-of-stream checks after the zstd stream ended.
func (p *decodePass) finish() error {
	// The rest of the layer must be empty, and reading it consumes the
	// end-of-stream marker and checks nothing follows.
	extra, err := io.Copy(io.Discard, p.body)
	if err != nil {
		return p.fail(err)
	}
	if extra > 0 {
		return p.b.markCorrupt(fmt.Errorf("%w: %d bytes follow the zstd stream", errZstd, extra))
	}
	// The stream is whole and its checksum held: the size is a fact of
	// the bytes. Whether they are the bytes the server recorded is up to
	// the hash.
	p.b.recordPass(p.n)
	return p.b.learnSHA(hex.EncodeToString(p.sum.Sum(nil)))
}

// Close releases the decoder and the file.
func (p *decodePass) Close() {
	if p.zr != nil {
		putDecoder(p.zr)
		p.zr = nil
	}
	if ra, ok := p.body.(*readAhead); ok {
		ra.stop()
	}
	p.seq.Close()
	p.obj.Close()
}

// readAhead decrypts the next frame on a second goroutine while the zstd
// decoder works on the current one, so a full pass runs at the speed of the
// slower stage rather than of both added up.
type readAhead struct {
	r      io.Reader
	ch     chan chunk
	free   chan []byte
	quit   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	cur    []byte
	curBuf []byte
	err    error
}

type chunk struct {
	buf  []byte // backing buffer, returned to free
	data []byte
	err  error
}

const readAheadChunk = gcmframe.PlainSize

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{r: r, ch: make(chan chunk, 1), free: make(chan []byte, 3), quit: make(chan struct{})}
	for range 3 {
		ra.free <- make([]byte, readAheadChunk)
	}
	ra.wg.Add(1)
	go ra.loop()
	return ra
}

func (ra *readAhead) loop() {
	defer ra.wg.Done()
	defer close(ra.ch)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.quit:
			return
		}
		n, err := io.ReadFull(ra.r, buf)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		select {
		case ra.ch <- chunk{buf: buf, data: buf[:n], err: err}:
		case <-ra.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.curBuf != nil {
			ra.free <- ra.curBuf
			ra.curBuf = nil
		}
		c, ok := <-ra.ch
		if !ok {
			ra.err = io.EOF
			return 0, ra.err
		}
		ra.cur, ra.curBuf, ra.err = c.data, c.buf, c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// stop ends the goroutine; the reader must not be used afterwards.
func (ra *readAhead) stop() {
	ra.once.Do(func() { close(ra.quit) })
	ra.wg.Wait()
}
