package backupy

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Kind is what an object is, decided from its first bytes, its size and,
// for encrypted objects, the keyless structural check.
type Kind string

// Object kinds.
const (
	// KindEncrypted is a v1 frame stream (package gcmframe).
	KindEncrypted Kind = "encrypted-v1"
	// KindPlainZstd is a raw zstd stream, uploaded by a job without
	// encryption.
	KindPlainZstd Kind = "plain-zstd"
	// KindEmpty is the upload of an empty dump: zero bytes if unencrypted,
	// just the end-of-stream marker if encrypted. It needs no key.
	KindEmpty Kind = "empty"
	// KindForeign is anything else; it is shown byte for byte.
	KindForeign Kind = "foreign"
)

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// classify sorts an object. For encrypted objects it returns the frame
// index and, if the object is damaged, the structural error together with
// an index of the intact frames.
//
// A damaged frame stream is still reported as encrypted, so that reads fail
// with an error naming the damage rather than showing the object as an
// unrelated file, when the name says so (".enc") or at least its first
// frame is whole and followed by another frame header or the marker. Other
// objects that merely start with a plausible length are foreign.
func classify(r io.ReaderAt, size int64, name string) (Kind, *gcmframe.Index, error) {
	if size == 0 {
		return KindEmpty, nil, nil
	}
	var head [4]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", nil, err
	}
	if n == 4 && string(head[:]) == string(zstdMagic) {
		return KindPlainZstd, nil, nil
	}
	if n < 4 || head[0] != 0 {
		return KindForeign, nil, nil
	}
	if size == gcmframe.EOFSize && binary.BigEndian.Uint32(head[:]) == 0 {
		x, _ := gcmframe.Layout(size)
		return KindEmpty, x, nil
	}
	if _, err := gcmframe.ParseHeader(head[:]); err != nil || binary.BigEndian.Uint32(head[:]) == 0 {
		return KindForeign, nil, nil
	}
	x, serr := gcmframe.Scan(r, size)
	if serr == nil {
		return KindEncrypted, x, nil
	}
	if plausiblyDamaged(x, serr, size, name) {
		return KindEncrypted, x, serr
	}
	return KindForeign, nil, nil
}

// plausiblyDamaged decides whether a frame stream that failed the scan is
// a damaged Backupy object or an unrelated file that happens to start with
// a plausible length. It is a Backupy object if its name says so (".enc"),
// or if at least two frames are intact, or if exactly one frame is intact
// and it is followed by nothing (a lost end-of-stream marker) or by the
// marker and extra bytes.
func plausiblyDamaged(x *gcmframe.Index, serr error, size int64, name string) bool {
	if strings.HasSuffix(name, ".enc") {
		return true
	}
	var fe *gcmframe.FrameError
	if !errors.As(serr, &fe) {
		return false
	}
	switch {
	case fe.Frame >= 2:
		return true
	case fe.Frame == 1:
		return errors.Is(serr, gcmframe.ErrTrailingData) || x.Size() == size
	}
	return false
}
