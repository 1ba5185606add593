package bupstash

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/backupfs/backupfs/cache"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression is the footer byte that ends every leaf plaintext, secret
// metadata blob and interior node, naming how the bytes before it are
// compressed (docs/bupstash-format.md §6).
type Compression byte

// The compression footers Bupstash 0.10 to 0.12 write.
const (
	footerNone = 0
	footerLZ4  = 1
	footerZstd = 2

	CompressionNone Compression = footerNone
	CompressionLZ4  Compression = footerLZ4
	CompressionZstd Compression = footerZstd // 0.11.0 and later
)

// maxDecompressedSize is Bupstash's COMPRESS_MAX_SIZE.
const maxDecompressedSize = 64 << 20

var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(maxDecompressedSize),
		zstd.WithDecoderMaxWindow(maxDecompressedSize),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		panic(err) // only for invalid options
	}
	return d
})

// decompress strips b's compression footer and returns the payload. With
// footer 0 the result aliases b.
func decompress(b []byte) ([]byte, error) {
	out, _, err := decompressPooled(context.Background(), b, nil)
	return out, err
}

// decompressPooled is decompress with the output in a buffer from pool,
// returned as buf for recycling (nil when out aliases b, or when the size
// was not known in advance). The buffer is admitted under the cache's
// bound with ctx (see cache.BufferPool.Alloc).
func decompressPooled(ctx context.Context, b []byte, pool *cache.BufferPool) (out, buf []byte, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: empty (no footer)", ErrCompression)
	}
	payload := b[:len(b)-1]
	switch b[len(b)-1] {
	case footerNone:
		return payload, nil, nil
	case footerLZ4:
		if len(payload) < 4 {
			return nil, nil, fmt.Errorf("%w: lz4 payload too short", ErrCompression)
		}
		size := binary.LittleEndian.Uint32(payload[len(payload)-4:])
		if size > maxDecompressedSize {
			return nil, nil, fmt.Errorf("%w: lz4 size %d exceeds the 64 MiB limit", ErrCompression, size)
		}
		out, err := pool.Alloc(ctx, int(size))
		if err != nil {
			return nil, nil, err
		}
		n, err := lz4.UncompressBlock(payload[:len(payload)-4], out)
		if err == nil && n != int(size) {
			err = fmt.Errorf("lz4 gave %d bytes, footer declares %d", n, size)
		}
		if err != nil {
			pool.Put(out)
			return nil, nil, fmt.Errorf("%w: lz4: %w", ErrCompression, err)
		}
		return out, out, nil
	case footerZstd:
		var h zstd.Header
		if err := h.Decode(payload); err != nil {
			return nil, nil, fmt.Errorf("%w: zstd header: %w", ErrCompression, err)
		}
		var dst []byte
		if h.HasFCS {
			if h.FrameContentSize > maxDecompressedSize {
				return nil, nil, fmt.Errorf("%w: zstd size %d exceeds the 64 MiB limit", ErrCompression, h.FrameContentSize)
			}
			if buf, err = pool.Alloc(ctx, int(h.FrameContentSize)); err != nil {
				return nil, nil, err
			}
			dst = buf[:0]
		}
		out, err := zstdDecoder().DecodeAll(payload, dst)
		if err == nil && h.HasFCS && uint64(len(out)) != h.FrameContentSize {
			err = fmt.Errorf("zstd gave %d bytes, header declares %d", len(out), h.FrameContentSize)
		}
		if err != nil {
			pool.Put(buf)
			return nil, nil, fmt.Errorf("%w: zstd: %w", ErrCompression, err)
		}
		return out, buf, nil
	default:
		return nil, nil, fmt.Errorf("%w: compression type %d is from a newer bupstash", ErrCompression, b[len(b)-1])
	}
}

// decompressedSize returns the payload length that decompress would return,
// reading only the head and tail of the plaintext: head holds its first
// bytes (at least zstd.HeaderMaxSize when available), tail its last 5.
// ok is false when the size is not recorded (a zstd frame without a content
// size).
func decompressedSize(plainLen int, head, tail []byte) (size int64, ok bool, err error) {
	if plainLen == 0 || len(tail) == 0 {
		return 0, false, fmt.Errorf("%w: empty (no footer)", ErrCompression)
	}
	switch tail[len(tail)-1] {
	case footerNone:
		return int64(plainLen - 1), true, nil
	case footerLZ4:
		if plainLen < 5 || len(tail) < 5 {
			return 0, false, fmt.Errorf("%w: lz4 payload too short", ErrCompression)
		}
		return int64(binary.LittleEndian.Uint32(tail[len(tail)-5:])), true, nil
	case footerZstd:
		var h zstd.Header
		if err := h.Decode(head); err != nil {
			return 0, false, fmt.Errorf("%w: zstd header: %w", ErrCompression, err)
		}
		if !h.HasFCS {
			return 0, false, nil
		}
		return int64(h.FrameContentSize), true, nil
	default:
		return 0, false, fmt.Errorf("%w: compression type %d is from a newer bupstash", ErrCompression, tail[len(tail)-1])
	}
}
