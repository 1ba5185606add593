// Package gcmframe implements the Backupy v1 encrypted frame stream: the
// only container the Backupy agent ever uploads when a run has a data
// encryption key.
//
//	blob  := frame* eof
//	frame := len:u32be nonce:12 ciphertext_and_tag:(len-12)
//	eof   := 00 00 00 00
//
// Each frame is one AES-256-GCM message with a random nonce and empty
// additional data, sealed over at most 1 MiB of the zstd stream. The agent
// fills every frame but the last with exactly 1 MiB, which makes the offset
// of every frame a function of the object size alone (see Layout): this is
// what lets a reader decrypt any frame without reading the ones before it.
//
// The format has no magic, no version and no binding of a frame to its
// position. A frame's tag proves only that the frame came from the holder of
// the key; whole frames of equal size can be swapped, duplicated or dropped
// without any tag failing. Only a whole-object check (the server's SHA-256
// of the ciphertext, or the zstd content checksum after a full decode)
// catches that, so callers that need certainty must read the whole stream.
package gcmframe

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout constants of format v1.
const (
	// PlainSize is the plaintext carried by every frame but the last.
	PlainSize = 1 << 20
	// KeySize is the size of a data encryption key (AES-256).
	KeySize = 32
	// NonceSize and TagSize are the AES-GCM nonce and tag sizes.
	NonceSize = 12
	TagSize   = 16
	// HeaderSize is the size of the big-endian length prefix of a frame.
	HeaderSize = 4
	// MinFrameLen and MaxFrameLen bound the length field of a data frame.
	// The length counts the nonce, the ciphertext and the tag.
	MinFrameLen = NonceSize + TagSize
	MaxFrameLen = NonceSize + PlainSize + TagSize
	// FullFrameSize is the on-disk size of a frame carrying PlainSize bytes.
	FullFrameSize = HeaderSize + MaxFrameLen
	// Overhead is what a frame adds to its plaintext on disk.
	Overhead = HeaderSize + NonceSize + TagSize
	// EOFSize is the size of the end-of-stream marker (a zero length).
	EOFSize = 4
)

// Sentinel errors. Errors about one frame come wrapped in a *FrameError that
// names the frame and its ciphertext offset.
var (
	// ErrAuth means a frame's GCM tag did not verify: wrong key or altered data.
	ErrAuth = errors.New("frame failed authentication (wrong key or corrupt data)")
	// ErrTruncated means the stream ended before its end-of-stream marker,
	// inside a frame header or inside a frame body.
	ErrTruncated = errors.New("stream is truncated")
	// ErrFrameSize means a frame length is outside [MinFrameLen, MaxFrameLen].
	ErrFrameSize = errors.New("frame length out of range")
	// ErrTrailingData means bytes follow the end-of-stream marker. The
	// agent never writes any, and they change the object's SHA-256.
	ErrTrailingData = errors.New("data after the end-of-stream marker")
	// ErrLayout means a frame header disagrees with where the object size
	// says frames are, or the object size fits no frame layout at all.
	ErrLayout = errors.New("frame header does not match the object layout")
	// ErrKeySize means a key is not KeySize bytes long.
	ErrKeySize = errors.New("data encryption key must be 32 bytes")
)

// FrameError reports a problem with one frame.
type FrameError struct {
	Frame  int64 // frame index, from 0
	Offset int64 // ciphertext offset of the frame's length field
	Err    error
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("frame %d at ciphertext offset %d: %v", e.Frame, e.Offset, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

func frameErr(frame, offset int64, err error) error {
	return &FrameError{Frame: frame, Offset: offset, Err: err}
}

// Cipher seals and opens frames under one data encryption key. It is safe
// for concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher returns a Cipher for a 32-byte data encryption key. The key is
// copied into the AES key schedule; the caller may wipe its slice afterwards.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("gcmframe: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcmframe: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// ParseHeader returns the length field of a data frame, 0 for the
// end-of-stream marker, or ErrFrameSize.
func ParseHeader(h []byte) (int, error) {
	n := binary.BigEndian.Uint32(h[:HeaderSize])
	if n == 0 {
		return 0, nil
	}
	if n < MinFrameLen {
		return 0, fmt.Errorf("%w: %d < %d", ErrFrameSize, n, MinFrameLen)
	}
	if n > MaxFrameLen {
		return 0, fmt.Errorf("%w: %d > %d", ErrFrameSize, n, MaxFrameLen)
	}
	return int(n), nil
}

// Open authenticates and decrypts a frame body (nonce, ciphertext and tag,
// without the length field) in place and returns the plaintext, which
// aliases body. On failure body is left unspecified and ErrAuth returned.
func (c *Cipher) Open(body []byte) ([]byte, error) {
	if len(body) < MinFrameLen || len(body) > MaxFrameLen {
		return nil, fmt.Errorf("%w: %d", ErrFrameSize, len(body))
	}
	nonce, ct := body[:NonceSize], body[NonceSize:]
	pt, err := c.aead.Open(ct[:0], nonce, ct, nil)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// AppendFrame seals plain (at most PlainSize bytes) with nonce and appends
// the whole frame, length field included, to dst.
func (c *Cipher) AppendFrame(dst []byte, nonce *[NonceSize]byte, plain []byte) []byte {
	if len(plain) > PlainSize {
		panic("gcmframe: frame plaintext larger than PlainSize")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(NonceSize+len(plain)+TagSize))
	dst = append(dst, nonce[:]...)
	return c.aead.Seal(dst, nonce[:], plain, nil)
}
