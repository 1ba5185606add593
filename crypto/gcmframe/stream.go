package gcmframe

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Writer encrypts a stream into frames exactly as the Backupy agent does:
// it collects PlainSize bytes per frame, seals each with a fresh random
// nonce, and on Close seals the remainder (if any) and writes the
// end-of-stream marker. A stream whose length is a multiple of PlainSize
// therefore has no short frame, and an empty stream is just the marker.
type Writer struct {
	w      io.Writer
	c      *Cipher
	nonces io.Reader
	buf    []byte // plaintext collected for the next frame
	per    int    // plaintext per frame: PlainSize, but for tests
	out    []byte // sealed frame
	off    int64  // ciphertext bytes written
	frame  int64
	err    error
	closed bool
}

// NewWriter returns a Writer sealing under key with nonces from crypto/rand.
func NewWriter(w io.Writer, key []byte) (*Writer, error) {
	return NewWriterNonces(w, key, rand.Reader)
}

// NewWriterNonces is NewWriter with nonces read from the given source.
// Reusing a nonce under one key breaks GCM; only known-answer tests should
// pass anything but crypto/rand.Reader.
func NewWriterNonces(w io.Writer, key []byte, nonces io.Reader) (*Writer, error) {
	c, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	return newWriterFrames(w, c, nonces, PlainSize), nil
}

// newWriterFrames is a Writer cutting frames of frame plaintext bytes
// (at most PlainSize): the agent's layout in miniature, so that fuzzing
// explores streams of many frames without sealing megabytes each time.
func newWriterFrames(w io.Writer, c *Cipher, nonces io.Reader, frame int) *Writer {
	return &Writer{w: w, c: c, nonces: nonces, per: frame, buf: make([]byte, 0, frame)}
}

// Write buffers p, sealing and writing every full frame.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("gcmframe: write after Close")
	}
	n := 0
	for len(p) > 0 {
		if len(w.buf) == w.per {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
		c := copy(w.buf[len(w.buf):w.per], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

// ReadFrom encrypts everything r yields, filling each frame with
// io.ReadFull as the agent's encryptor does. io.Copy uses it.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("gcmframe: write after Close")
	}
	var total int64
	for {
		if len(w.buf) == w.per {
			if err := w.flush(); err != nil {
				return total, err
			}
		}
		n, err := io.ReadFull(r, w.buf[len(w.buf):w.per])
		w.buf = w.buf[:len(w.buf)+n]
		total += int64(n)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}

func (w *Writer) flush() error {
	var nonce [NonceSize]byte
	if _, err := io.ReadFull(w.nonces, nonce[:]); err != nil {
		w.err = fmt.Errorf("gcmframe: reading nonce: %w", err)
		return w.err
	}
	w.out = w.c.AppendFrame(w.out[:0], &nonce, w.buf)
	if _, err := w.w.Write(w.out); err != nil {
		w.err = fmt.Errorf("gcmframe: writing frame %d at offset %d: %w", w.frame, w.off, err)
		return w.err
	}
	w.off += int64(len(w.out))
	w.frame++
	w.buf = w.buf[:0]
	return nil
}

// Close seals the last frame, writes the end-of-stream marker and releases
// the buffers. It does not close the underlying writer. Calling it twice is
// an error, as a second marker would corrupt the stream.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("gcmframe: Writer closed twice")
	}
	w.closed = true
	if len(w.buf) > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if _, err := w.w.Write(make([]byte, EOFSize)); err != nil {
		w.err = fmt.Errorf("gcmframe: writing end-of-stream marker: %w", err)
		return w.err
	}
	w.buf, w.out = nil, nil
	return nil
}

// Reader decrypts a frame stream sequentially. It returns io.EOF only after
// the end-of-stream marker when nothing follows it, so reading a Reader to
// EOF proves the stream is complete and every frame authentic (though not
// that frames are in their original order; see the package comment).
//
// It accepts any frame sizes within the format limits, as the upstream
// decrypt tool does, not just the agent's regular layout.
type Reader struct {
	r     io.Reader
	c     *Cipher
	buf   []byte
	plain []byte // decrypted bytes not yet returned
	off   int64  // ciphertext offset of the next frame
	frame int64
	err   error
}

// NewReader returns a Reader decrypting r under key.
func NewReader(r io.Reader, key []byte) (*Reader, error) {
	c, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	return NewReaderCipher(r, c), nil
}

// NewReaderCipher returns a Reader decrypting r with an existing Cipher.
func NewReaderCipher(r io.Reader, c *Cipher) *Reader {
	return &Reader{r: r, c: c}
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// Frames returns the number of data frames decrypted so far.
func (r *Reader) Frames() int64 { return r.frame }

// next reads and opens one frame, or consumes the end-of-stream marker and
// returns io.EOF.
func (r *Reader) next() error {
	var h [HeaderSize]byte
	if n, err := io.ReadFull(r.r, h[:]); err != nil {
		what := "frame header"
		if n == 0 && errors.Is(err, io.EOF) {
			what = "no end-of-stream marker"
		}
		return r.fail(eofAsTruncated(err, what))
	}
	n, err := ParseHeader(h[:])
	if err != nil {
		return r.fail(err)
	}
	if n == 0 {
		var probe [1]byte
		switch m, err := io.ReadFull(r.r, probe[:]); {
		case m > 0:
			return r.fail(ErrTrailingData)
		case !errors.Is(err, io.EOF):
			return r.fail(err)
		}
		return io.EOF
	}
	if r.buf == nil {
		r.buf = make([]byte, MaxFrameLen)
	}
	body := r.buf[:n]
	if _, err := io.ReadFull(r.r, body); err != nil {
		return r.fail(eofAsTruncated(err, "frame body"))
	}
	pt, err := r.c.Open(body)
	if err != nil {
		return r.fail(err)
	}
	r.plain = pt
	r.off += HeaderSize + int64(n)
	r.frame++
	return nil
}

func (r *Reader) fail(err error) error { return frameErr(r.frame, r.off, err) }

func eofAsTruncated(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%s)", ErrTruncated, what)
	}
	return err
}
