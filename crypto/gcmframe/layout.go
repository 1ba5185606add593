package gcmframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Frame locates one data frame inside an object and inside the plaintext.
type Frame struct {
	Index       int64 // frame number, from 0
	Offset      int64 // ciphertext offset of the length field
	Len         int   // value of the length field (nonce + ciphertext + tag)
	PlainOffset int64 // offset of the frame's first byte in the plaintext
	PlainLen    int   // plaintext bytes in the frame
}

// End returns the ciphertext offset just past the frame.
func (f Frame) End() int64 { return f.Offset + HeaderSize + int64(f.Len) }

// Index locates every frame of one object. The zero value is not useful;
// build one with Layout or Scan.
//
// An Index for the agent's regular layout (every frame full but the last)
// is a few integers. An Index built by walking headers keeps a table of
// frame offsets, 16 bytes per MiB of plaintext.
type Index struct {
	size   int64 // S: object size, end-of-stream marker included
	plain  int64 // N: plaintext size
	frames int64 // k: number of data frames

	// Only for irregular layouts: k+1 entries each, the last one being the
	// end-of-stream marker offset and the plaintext size.
	offsets      []int64
	plainOffsets []int64
}

// Layout returns the regular frame layout of an object of the given size:
//
//	k = ceil((S-4) / FullFrameSize),  N = S - 4 - 32k
//
// It fails with ErrLayout when no sequence of full frames followed by one
// shorter frame adds up to size.
func Layout(size int64) (*Index, error) {
	if size < EOFSize {
		return nil, fmt.Errorf("%w: object of %d bytes is shorter than the end-of-stream marker", ErrLayout, size)
	}
	body := size - EOFSize
	k := (body + FullFrameSize - 1) / FullFrameSize
	if k > 0 {
		last := body - (k-1)*FullFrameSize // on-disk size of the last frame
		if last < Overhead {
			return nil, fmt.Errorf("%w: %d bytes cannot end in a whole frame", ErrLayout, size)
		}
	}
	return &Index{size: size, plain: body - Overhead*k, frames: k}, nil
}

// Size returns the object size S.
func (x *Index) Size() int64 { return x.size }

// Frames returns the number of data frames k.
func (x *Index) Frames() int64 { return x.frames }

// PlainSize returns the plaintext size N.
func (x *Index) PlainSize() int64 { return x.plain }

// Regular reports whether every frame but the last is full, so that frame
// positions follow from the object size alone.
func (x *Index) Regular() bool { return x.offsets == nil }

// Frame returns frame i, which must be in [0, Frames()).
func (x *Index) Frame(i int64) Frame {
	if i < 0 || i >= x.frames {
		panic(fmt.Sprintf("gcmframe: frame %d out of range [0, %d)", i, x.frames))
	}
	if x.offsets != nil {
		off, end := x.offsets[i], x.offsets[i+1]
		return Frame{
			Index:       i,
			Offset:      off,
			Len:         int(end - off - HeaderSize),
			PlainOffset: x.plainOffsets[i],
			PlainLen:    int(x.plainOffsets[i+1] - x.plainOffsets[i]),
		}
	}
	plainLen := int64(PlainSize)
	if i == x.frames-1 {
		plainLen = x.plain - i*PlainSize
	}
	return Frame{
		Index:       i,
		Offset:      i * FullFrameSize,
		Len:         int(plainLen) + NonceSize + TagSize,
		PlainOffset: i * PlainSize,
		PlainLen:    int(plainLen),
	}
}

// FrameAt returns the index of the frame holding plaintext offset off, which
// must be in [0, PlainSize()).
func (x *Index) FrameAt(off int64) int64 {
	if off < 0 || off >= x.plain {
		panic(fmt.Sprintf("gcmframe: plaintext offset %d out of range [0, %d)", off, x.plain))
	}
	if x.plainOffsets == nil {
		return off / PlainSize
	}
	// Irregular frames may be empty; the first frame whose end is past off
	// is the one that holds it.
	return int64(sort.Search(int(x.frames), func(i int) bool { return x.plainOffsets[i+1] > off }))
}

// ReadFrame reads frame i of the object r, checks its length field against
// the index, and authenticates and decrypts it. buf is used for the
// ciphertext if large enough; the returned plaintext aliases it or a new
// buffer. Errors are *FrameError.
func (x *Index) ReadFrame(r io.ReaderAt, c *Cipher, i int64, buf []byte) ([]byte, error) {
	f := x.Frame(i)
	n := HeaderSize + f.Len
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := r.ReadAt(buf, f.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w (frame body)", ErrTruncated)
		}
		return nil, frameErr(i, f.Offset, err)
	}
	if got := binary.BigEndian.Uint32(buf); got != uint32(f.Len) {
		return nil, frameErr(i, f.Offset, fmt.Errorf("%w: length field %d, layout says %d", ErrLayout, got, f.Len))
	}
	pt, err := c.Open(buf[HeaderSize:])
	if err != nil {
		return nil, frameErr(i, f.Offset, err)
	}
	return pt, nil
}

// Scan builds the Index of an object of the given size without a key.
//
// It first tries the structural check, three small reads that need no key:
// the first length field, the length field of the last frame where the
// regular layout puts it, and the end-of-stream marker in the last four
// bytes. When that fails (a writer other than the agent, or damage) it walks
// every length field from the start.
//
// On damage Scan returns an error (a *FrameError wrapping ErrTruncated,
// ErrFrameSize, ErrTrailingData or ErrLayout) together with an Index of the
// intact frames before the damage, which may be empty.
func Scan(r io.ReaderAt, size int64) (*Index, error) {
	if x, err := Layout(size); err == nil && structureMatches(r, x) {
		return x, nil
	}
	return walk(r, size)
}

func structureMatches(r io.ReaderAt, x *Index) bool {
	var h [HeaderSize]byte
	readU32 := func(off int64) (uint32, bool) {
		if _, err := r.ReadAt(h[:], off); err != nil {
			return 0, false
		}
		return binary.BigEndian.Uint32(h[:]), true
	}
	if end, ok := readU32(x.size - EOFSize); !ok || end != 0 {
		return false
	}
	if x.frames == 0 {
		return true
	}
	if x.frames > 1 {
		if first, ok := readU32(0); !ok || first != MaxFrameLen {
			return false
		}
	}
	last := x.Frame(x.frames - 1)
	got, ok := readU32(last.Offset)
	return ok && got == uint32(last.Len)
}

// walk follows length fields from offset 0.
func walk(r io.ReaderAt, size int64) (*Index, error) {
	offsets := []int64{0}
	plainOffsets := []int64{0}
	partial := func(err error) (*Index, error) {
		k := int64(len(offsets) - 1)
		return &Index{
			size:         offsets[k],
			plain:        plainOffsets[k],
			frames:       k,
			offsets:      offsets,
			plainOffsets: plainOffsets,
		}, err
	}
	var h [HeaderSize]byte
	for i := int64(0); ; i++ {
		off := offsets[i]
		if off+HeaderSize > size {
			what := "no end-of-stream marker"
			if off < size {
				what = "frame header"
			}
			return partial(frameErr(i, off, fmt.Errorf("%w (%s)", ErrTruncated, what)))
		}
		if _, err := r.ReadAt(h[:], off); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w (object shrank while reading)", ErrTruncated)
			}
			return partial(frameErr(i, off, err))
		}
		n, err := ParseHeader(h[:])
		if err != nil {
			return partial(frameErr(i, off, err))
		}
		if n == 0 {
			if end := off + EOFSize; end != size {
				return partial(frameErr(i, off, fmt.Errorf("%w: %d bytes", ErrTrailingData, size-end)))
			}
			x, _ := partial(nil)
			x.size = size
			if regularTable(x) {
				x.offsets, x.plainOffsets = nil, nil
			}
			return x, nil
		}
		end := off + HeaderSize + int64(n)
		if end > size {
			return partial(frameErr(i, off, fmt.Errorf("%w (frame body)", ErrTruncated)))
		}
		offsets = append(offsets, end)
		plainOffsets = append(plainOffsets, plainOffsets[i]+int64(n-MinFrameLen))
	}
}

// regularTable reports whether a walked table is the regular layout, which
// happens when the structural check failed only because a read failed.
func regularTable(x *Index) bool {
	reg, err := Layout(x.size)
	if err != nil || reg.frames != x.frames || reg.plain != x.plain {
		return false
	}
	for i := range x.frames {
		if reg.Frame(i) != x.Frame(i) {
			return false
		}
	}
	return true
}
