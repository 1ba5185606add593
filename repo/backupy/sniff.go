package backupy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// payload is what the first bytes of an object's compressed layer say
// about the dump inside.
type payload struct {
	// zstd is false when the compressed layer is not a zstd stream that
	// decodes; the main view then shows those bytes as they are.
	zstd bool
	ext  string // extension of the main view, with the dot
	// fcs is the zstd Frame_Content_Size, or -1. It is the decoded size
	// only if the stream is that one frame; see singleFrameEnd.
	fcs         int64
	headerSize  int  // zstd frame header size
	hasChecksum bool // zstd frame has a content checksum
}

// sniffPrefix is how much decoded output sniffing looks at.
const sniffPrefix = 64 << 10

// sniffPayload inspects a prefix of the compressed layer (frame 0 of an
// encrypted object, the first MiB of a plain one).
func sniffPayload(prefix []byte) payload {
	p := payload{ext: ".bin", fcs: -1}
	if !bytes.HasPrefix(prefix, zstdMagic) {
		return p
	}
	var h zstd.Header
	if err := h.Decode(prefix); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return p
	}
	d := getDecoder()
	defer putDecoder(d)
	// A bytes.Reader, not a Buffer: the decoder would decode a whole Buffer
	// in one go, and a MiB of zstd can hold gigabytes.
	if err := d.Reset(bytes.NewReader(prefix)); err != nil {
		return p
	}
	out, err := io.ReadAll(io.LimitReader(d, sniffPrefix))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && len(out) == 0 {
		// Magic but nothing decodes: not ours to interpret. A stream that
		// decodes and then fails (a bad checksum, say) is a damaged zstd
		// stream, which the full pass reports.
		return p
	}
	p.zstd = true
	p.headerSize = h.HeaderSize
	p.hasChecksum = h.HasCheckSum
	if h.HasFCS {
		p.fcs = int64(h.FrameContentSize)
	}
	p.ext = sniffExt(out)
	return p
}

// MariaDB clients since 10.5.25 and friends print this before the banner.
const mariadbSandboxLine = "/*M!999999\\- enable the sandbox mode */"

var sqlBanners = []string{"-- mysql dump", "-- mariadb dump", "-- mysqldump", "-- mariadb-dump"}

// sniffExt names a decoded dump by its first bytes
// (docs/backupy-format.md §5.2).
//
// Beyond the agent's drivers, a gzip stream that is none of the known dumps
// is ".gz" and an unknown tar inside gzip is ".tar.gz" rather than ".bin":
// the magic bytes make these certain, and the name then tells the user which
// tool opens the file.
func sniffExt(d []byte) string {
	switch {
	case bytes.HasPrefix(d, []byte("PGDMP")):
		return ".pgdump"
	case isSQLDump(d):
		return ".sql"
	case bytes.HasPrefix(d, []byte{0x1f, 0x8b, 0x08}):
		return sniffGzip(d)
	}
	return ".bin"
}

func isSQLDump(d []byte) bool {
	s := string(d[:min(len(d), 512)])
	if strings.HasPrefix(s, mariadbSandboxLine) {
		return true
	}
	low := strings.ToLower(s)
	for _, b := range sqlBanners {
		if strings.HasPrefix(low, b) {
			return true
		}
	}
	return false
}

func sniffGzip(d []byte) string {
	zr, err := gzip.NewReader(bytes.NewReader(d))
	if err != nil {
		return ".gz"
	}
	var head [1024]byte
	n, _ := io.ReadFull(zr, head[:])
	h := head[:n]
	switch {
	case bytes.HasPrefix(h, []byte{0x6d, 0xe2, 0x99, 0x81}):
		return ".archive.gz"
	case bytes.HasPrefix(h, []byte("SQLite format 3\x00")):
		return ".db.gz"
	case len(h) >= 512 && string(h[257:262]) == "ustar":
		name := string(bytes.TrimRight(h[:100], "\x00"))
		// The Redis driver writes one entry named dump.rdb; an RDB of
		// 8 GiB or more gets a PAX header first.
		if name == "dump.rdb" || h[156] == 'x' || bytes.HasPrefix(h[512:], []byte("REDIS")) {
			return ".rdb.tar.gz"
		}
		return ".tar.gz"
	}
	return ".gz"
}

// singleFrameEnd walks the block headers of the zstd frame starting at 0
// in a compressed layer of size n and returns where the frame ends. read
// fills p from offset off. The Frame_Content_Size is the decoded size of the
// whole layer only if the frame ends exactly at n.
func singleFrameEnd(read func(p []byte, off int64) error, p payload, n int64) (int64, error) {
	off := int64(p.headerSize)
	var bh [3]byte
	for {
		if off+3 > n {
			return 0, io.ErrUnexpectedEOF
		}
		if err := read(bh[:], off); err != nil {
			return 0, err
		}
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, size := v&1 == 1, (v>>1)&3, int64(v>>3)
		switch typ {
		case 1: // RLE: one byte repeated size times
			size = 1
		case 3:
			return 0, errors.New("reserved zstd block type")
		}
		off += 3 + size
		if last {
			break
		}
	}
	if p.hasChecksum {
		off += 4
	}
	return off, nil
}
