// Package bupstashwrite holds what Bupstash's writers do and its readers
// never need, for the writers of test repositories (internal/testrepo,
// repo/bupstash/bupstashtest) and the reader's own tests: compressing a
// payload behind the one-byte footer that names its compression.
package bupstashwrite

import (
	"encoding/binary"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// The compression footers Bupstash 0.10 to 0.12 write (repo/bupstash
// names them Compression*): the last byte of every leaf plaintext, secret
// metadata blob and interior node.
const (
	FooterNone = 0
	FooterLZ4  = 1 // lz4 block, then the decompressed size (u32 LE)
	FooterZstd = 2 // a zstd frame; 0.11.0 and later
)

// Compress returns the footer-framed encoding of b: compressed as footer
// says if that makes it smaller, else stored with FooterNone, as
// Bupstash's writers do (src/compression.rs).
func Compress(b []byte, footer byte) []byte {
	switch footer {
	case FooterLZ4:
		out := make([]byte, lz4.CompressBlockBound(len(b))+5)
		n, err := lz4.CompressBlock(b, out, nil)
		if err == nil && n > 0 && n+4 < len(b) {
			out = binary.LittleEndian.AppendUint32(out[:n], uint32(len(b)))
			return append(out, FooterLZ4)
		}
	case FooterZstd:
		out := zstdEncoder().EncodeAll(b, nil)
		if len(out) < len(b) {
			return append(out, FooterZstd)
		}
	}
	out := make([]byte, 0, len(b)+1)
	return append(append(out, b...), FooterNone)
}

var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false))
	if err != nil {
		panic(err) // only for invalid options
	}
	return e
})
