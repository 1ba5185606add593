package treediff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"github.com/pierrec/lz4/v4"
)

// Source yields index entries in index order, then io.EOF.
type Source interface {
	Next(ctx context.Context) (*bupstash.IndexEntry, error)
}

// Index is one side of a diff held in memory as Bupstash holds it: the
// entries serialized in the current index entry format and compressed
// with LZ4, a few dozen bytes per entry.
type Index struct {
	compressed []byte
	entries    int
	sizeDigits int // longest FormatSize of an entry's size
}

// wideIndex is the compressed size above which Bupstash stops measuring
// the size column and assumes the widest ("nnnn.nn UUU", 11 characters);
// see fmtutil::estimate_index_human_display_widths.
const (
	wideIndex     = 512 << 10
	wideSizeWidth = 11
)

// Len returns the number of entries.
func (x *Index) Len() int { return x.entries }

// sizeWidth is the width of the human listing's size column for this
// index. Bupstash decides on the size of its own LZ4 stream, which LZ4
// here approximates: only indexes near 512 KiB compressed (tens of
// thousands of entries) can get a different width.
func (x *Index) sizeWidth() int {
	if len(x.compressed) > wideIndex {
		return wideSizeWidth
	}
	return x.sizeDigits
}

// Collect reads a source to its end into an Index.
func Collect(ctx context.Context, src Source) (*Index, error) {
	b := newBuilder()
	for {
		e, err := src.Next(ctx)
		if err == io.EOF {
			return b.finish()
		}
		if err != nil {
			return nil, err
		}
		if err := b.add(e); err != nil {
			return nil, err
		}
	}
}

type builder struct {
	buf bytes.Buffer
	w   *lz4.Writer
	enc bare.Encoder
	x   Index
}

func newBuilder() *builder {
	b := &builder{}
	b.w = lz4.NewWriter(&b.buf)
	// Bupstash's lz4 frames: 64 KiB blocks, no content checksum.
	if err := b.w.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ChecksumOption(false), lz4.ConcurrencyOption(1)); err != nil {
		panic(err) // the options are constant
	}
	return b
}

func (b *builder) add(e *bupstash.IndexEntry) error {
	b.enc.Buf = b.enc.Buf[:0]
	encodeEntry(&b.enc, e)
	if _, err := b.w.Write(b.enc.Buf); err != nil {
		return err
	}
	b.x.entries++
	b.x.sizeDigits = max(b.x.sizeDigits, len(formatSize(e.Size)))
	return nil
}

func (b *builder) finish() (*Index, error) {
	if err := b.w.Close(); err != nil {
		return nil, err
	}
	b.x.compressed = b.buf.Bytes()
	return &b.x, nil
}

// entryKind is the union tag of Bupstash's current entry format (V5).
const entryKind = 4

// encodeEntry writes e as Bupstash's IndexWriter does. An entry without a
// relative cursor gets the cursor Bupstash gives old entries (all
// u64::MAX), which diff refuses.
func encodeEntry(enc *bare.Encoder, e *bupstash.IndexEntry) {
	enc.U8(entryKind)
	enc.Data(e.Path)
	enc.Uint(e.Size)
	enc.Uint(uint64(e.Mtime))
	enc.Uint(uint64(e.MtimeNsec))
	enc.Uint(uint64(e.Ctime))
	enc.Uint(uint64(e.CtimeNsec))
	enc.Uint(e.Ino)
	enc.Uint(e.NormDev)
	enc.Uint(uint64(e.Mode))
	enc.Uint(e.UID)
	enc.Uint(e.GID)
	enc.Uint(e.Nlink)
	enc.Option(e.Link != nil)
	if e.Link != nil {
		enc.Data(e.Link)
	}
	enc.Uint(e.DevMajor)
	enc.Uint(e.DevMinor)
	enc.Bool(e.Sparse)
	enc.Option(e.Xattrs != nil)
	if e.Xattrs != nil {
		xs := sortedXattrs(e.Xattrs)
		enc.Uint(uint64(len(xs)))
		for _, x := range xs {
			enc.Data([]byte(x.Name))
			enc.Data(x.Value)
		}
	}
	if e.HasCursor {
		enc.Uint(e.ChunkDelta)
		enc.Uint(e.StartOffset)
		enc.Uint(e.EndOffset)
	} else {
		enc.Uint(math.MaxUint64)
		enc.Uint(math.MaxUint64)
		enc.Uint(math.MaxUint64)
	}
	if e.DataHash != nil {
		enc.Uint(1)
		enc.Fixed(e.DataHash[:])
	} else {
		enc.Uint(0)
	}
}

var errBadEntry = errors.New("damaged in-memory index entry")

// reader iterates an Index.
type reader struct {
	r   *lz4.Reader
	buf []byte // undecoded bytes
	off int
	eof bool
}

func (x *Index) reader() *reader {
	return &reader{r: lz4.NewReader(bytes.NewReader(x.compressed))}
}

// fill makes at least n bytes available, or as many as remain.
func (r *reader) fill(n int) error {
	if len(r.buf)-r.off >= n || r.eof {
		return nil
	}
	r.buf = append(r.buf[:0], r.buf[r.off:]...)
	r.off = 0
	for len(r.buf) < n && !r.eof {
		if cap(r.buf)-len(r.buf) < 64<<10 {
			r.buf = append(r.buf, make([]byte, 64<<10)...)[:len(r.buf)]
		}
		k, err := r.r.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+k]
		if err == io.EOF {
			r.eof = true
		} else if err != nil {
			return err
		}
	}
	return nil
}

// Next decodes the next entry. Entries never exceed what one entry of a
// Bupstash index can hold, so the reader asks for more until it has one.
func (r *reader) Next(context.Context) (*bupstash.IndexEntry, error) {
	want := 4 << 10
	for {
		if err := r.fill(want); err != nil {
			return nil, err
		}
		if r.off == len(r.buf) {
			return nil, io.EOF
		}
		d := bare.NewDecoder(r.buf[r.off:])
		e, err := decodeEntry(d)
		if err == nil {
			r.off += d.Offset()
			return e, nil
		}
		if !errors.Is(err, bare.ErrShort) || r.eof {
			return nil, fmt.Errorf("%w: %w", errBadEntry, err)
		}
		want = 2 * (len(r.buf) - r.off)
	}
}

func decodeEntry(d *bare.Decoder) (*bupstash.IndexEntry, error) {
	if k := d.U8(); d.Err() == nil && k != entryKind {
		return nil, fmt.Errorf("kind %d", k)
	}
	e := &bupstash.IndexEntry{Version: 5, HasCursor: true}
	e.Path = bytes.Clone(d.Data())
	e.Size = d.Uint()
	e.Mtime = int64(d.Uint())
	e.MtimeNsec = uint32(d.Uint())
	e.Ctime = int64(d.Uint())
	e.CtimeNsec = uint32(d.Uint())
	e.Ino = d.Uint()
	e.NormDev = d.Uint()
	e.Mode = uint32(d.Uint())
	e.UID = d.Uint()
	e.GID = d.Uint()
	e.Nlink = d.Uint()
	if d.Option() {
		e.Link = bytes.Clone(d.Data())
		if e.Link == nil {
			e.Link = []byte{}
		}
	}
	e.DevMajor = d.Uint()
	e.DevMinor = d.Uint()
	e.Sparse = d.Bool()
	if d.Option() {
		n := d.Uint()
		if n > uint64(d.Remaining()) {
			return nil, bare.ErrShort
		}
		e.Xattrs = make([]bupstash.Xattr, 0, n)
		for i := uint64(0); i < n && d.Err() == nil; i++ {
			name := d.Data()
			e.Xattrs = append(e.Xattrs, bupstash.Xattr{Name: string(name), Value: bytes.Clone(d.Data())})
		}
	}
	e.ChunkDelta = d.Uint()
	e.StartOffset = d.Uint()
	e.EndOffset = d.Uint()
	if d.Uint() == 1 {
		h := d.Array32()
		e.DataHash = &h
	}
	return e, d.Err()
}

// Pick returns the part of the index under dir, as Bupstash's
// --left-pick and --right-pick select it (index::pick_dir_without_data):
// dir's own entry becomes ".", entries under it lose the "dir/" prefix,
// and dir must be a directory of the index. "." picks the whole index.
func (x *Index) Pick(ctx context.Context, dir string) (*Index, error) {
	r := x.reader()
	for {
		e, err := r.Next(ctx)
		if err == io.EOF {
			return nil, fmt.Errorf("%w %s: not found in content index", ErrPick, dir)
		}
		if err != nil {
			return nil, err
		}
		if oldIndex(e) {
			return nil, fmt.Errorf("%w: this index was created by an older version of bupstash and we longer supports pick operations on it due to an unfortunate bug", ErrPick)
		}
		if !componentsEqual(e.Path, []byte(dir)) {
			continue
		}
		if !e.IsDir() {
			return nil, fmt.Errorf("%w %s: unable to pick %s in this context, it is not a directory", ErrPick, dir, dir)
		}
		b := newBuilder()
		e.Path = []byte(".")
		if err := b.add(e); err != nil {
			return nil, err
		}
		prefix := []byte(dir + "/")
		if dir == "." {
			prefix = nil
		}
		for {
			e, err := r.Next(ctx)
			if err == io.EOF {
				return b.finish()
			}
			if err != nil {
				return nil, err
			}
			rest, ok := stripPrefix(e.Path, prefix)
			if !ok {
				continue
			}
			e.Path = rest
			if err := b.add(e); err != nil {
				return nil, err
			}
		}
	}
}

func componentsEqual(a, b []byte) bool {
	ai, bi := components(a), components(b)
	for {
		ac, aok := ai.next()
		bc, bok := bi.next()
		if aok != bok || !bytes.Equal(ac, bc) {
			return false
		}
		if !aok {
			return true
		}
	}
}

// stripPrefix removes a leading "dir/" the way Rust's Path::starts_with
// and strip_prefix do: by whole components.
func stripPrefix(p, prefix []byte) ([]byte, bool) {
	if len(prefix) == 0 {
		return p, true
	}
	pi, qi := components(p), components(prefix)
	for {
		qc, qok := qi.next()
		if !qok {
			return bytes.Clone(bytes.TrimLeft(pi.p, "/")), true
		}
		pc, pok := pi.next()
		if !pok || !bytes.Equal(pc, qc) {
			return nil, false
		}
	}
}
