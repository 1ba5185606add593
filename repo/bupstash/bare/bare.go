// Package bare decodes and encodes the subset of the BARE wire format that
// serde_bare 0.4 (used by Bupstash 0.9 to 0.12) produces for Bupstash's types.
//
// Two integer encodings coexist in Bupstash's data and mixing them up is the
// most likely decoding bug: serde_bare::Uint fields are ULEB128 varints
// (Decoder.Uint), while plain Rust u64 fields are 8 bytes little-endian
// (Decoder.U64).
//
// The Decoder works on an in-memory slice and never copies: byte strings it
// returns alias the input. Errors are sticky, so a caller may decode a whole
// struct and check Err once at the end.
package bare

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// ErrShort reports that the input ended inside a value. It wraps
// io.ErrUnexpectedEOF so callers streaming values across buffer boundaries
// can refill and retry.
var ErrShort = fmt.Errorf("bare: value runs past the end of the data: %w", io.ErrUnexpectedEOF)

// ErrOverflow reports a varint longer than 10 bytes or above 2^64-1.
var ErrOverflow = errors.New("bare: varint overflows 64 bits")

// ErrInvalidUTF8 reports a string field that is not valid UTF-8; serde
// refuses such strings, so Bupstash would too.
var ErrInvalidUTF8 = errors.New("bare: string is not valid UTF-8")

// Decoder reads BARE values from a byte slice.
type Decoder struct {
	buf []byte
	off int
	err error
}

// NewDecoder returns a Decoder reading from b.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Err returns the first error encountered, if any.
func (d *Decoder) Err() error { return d.err }

// Offset returns the number of bytes consumed so far.
func (d *Decoder) Offset() int { return d.off }

// Remaining returns the number of unread bytes.
func (d *Decoder) Remaining() int { return len(d.buf) - d.off }

// Fail records err as the decoder's error unless one is already recorded.
// Callers use it for semantic errors (an unknown enum variant, say) so that
// every error surfaces through Err.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// Finish returns the sticky error, or an error if bytes remain unread.
// Bupstash requires every object to be consumed exactly.
func (d *Decoder) Finish() error {
	if d.err != nil {
		return d.err
	}
	if n := d.Remaining(); n != 0 {
		return fmt.Errorf("bare: %d unexpected trailing bytes", n)
	}
	return nil
}

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.buf)-d.off {
		d.err = ErrShort
		return nil
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

// Uint reads a ULEB128 varint (serde_bare::Uint). Non-minimal encodings are
// accepted, as serde_bare accepts them.
func (d *Decoder) Uint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < 10; i++ {
		if d.off >= len(d.buf) {
			d.err = ErrShort
			return 0
		}
		c := d.buf[d.off]
		d.off++
		if i == 9 && c > 1 {
			d.err = ErrOverflow
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v
		}
	}
	d.err = ErrOverflow
	return 0
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// U32 reads a fixed 4-byte little-endian integer.
func (d *Decoder) U32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// U64 reads a fixed 8-byte little-endian integer (a plain Rust u64).
func (d *Decoder) U64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// Bool reads one byte; like serde_bare, any non-zero value is true.
func (d *Decoder) Bool() bool { return d.U8() != 0 }

// Option reads the presence byte of an Option<T>.
func (d *Decoder) Option() bool { return d.U8() != 0 }

// Fixed reads exactly n raw bytes (a [u8; n] array).
func (d *Decoder) Fixed(n int) []byte { return d.take(n) }

// Array32 reads a [u8; 32].
func (d *Decoder) Array32() (a [32]byte) {
	copy(a[:], d.take(32))
	return a
}

// Array16 reads a [u8; 16].
func (d *Decoder) Array16() (a [16]byte) {
	copy(a[:], d.take(16))
	return a
}

// Data reads a length-prefixed byte string (Vec<u8>, &[u8]).
func (d *Decoder) Data() []byte {
	n := d.Uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(d.Remaining()) {
		d.err = ErrShort
		return nil
	}
	return d.take(int(n))
}

// String reads a length-prefixed UTF-8 string (String, PathBuf).
func (d *Decoder) String() string {
	b := d.Data()
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.err = ErrInvalidUTF8
		return ""
	}
	return string(b)
}

// StringBytes reads a length-prefixed UTF-8 string without converting it,
// returning a slice that aliases the input.
func (d *Decoder) StringBytes() []byte {
	b := d.Data()
	if d.err != nil {
		return nil
	}
	if !utf8.Valid(b) {
		d.err = ErrInvalidUTF8
		return nil
	}
	return b
}

// Encoder appends BARE values to a byte slice.
type Encoder struct {
	Buf []byte
}

// Uint appends a minimal ULEB128 varint.
func (e *Encoder) Uint(v uint64) { e.Buf = binary.AppendUvarint(e.Buf, v) }

// U8 appends one byte.
func (e *Encoder) U8(v uint8) { e.Buf = append(e.Buf, v) }

// U32 appends a fixed 4-byte little-endian integer.
func (e *Encoder) U32(v uint32) { e.Buf = binary.LittleEndian.AppendUint32(e.Buf, v) }

// U64 appends a fixed 8-byte little-endian integer.
func (e *Encoder) U64(v uint64) { e.Buf = binary.LittleEndian.AppendUint64(e.Buf, v) }

// Bool appends 0 or 1.
func (e *Encoder) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// Option appends the presence byte of an Option<T>.
func (e *Encoder) Option(present bool) { e.Bool(present) }

// Fixed appends raw bytes without a length.
func (e *Encoder) Fixed(b []byte) { e.Buf = append(e.Buf, b...) }

// Data appends a length-prefixed byte string.
func (e *Encoder) Data(b []byte) {
	e.Uint(uint64(len(b)))
	e.Buf = append(e.Buf, b...)
}

// String appends a length-prefixed string.
func (e *Encoder) String(s string) {
	e.Uint(uint64(len(s)))
	e.Buf = append(e.Buf, s...)
}
