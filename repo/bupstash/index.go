package bupstash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// File type bits of IndexEntry.Mode (st_mode).
const (
	ModeType     = 0o170000
	ModeRegular  = 0o100000
	ModeDir      = 0o040000
	ModeSymlink  = 0o120000
	ModeCharDev  = 0o020000
	ModeBlockDev = 0o060000
	ModeFIFO     = 0o010000
	ModeSocket   = 0o140000
)

// IndexEntry is one entry of a snapshot's index
// (docs/bupstash-format.md §10): a file, directory, symlink, device or
// fifo, with the location of its content in the item's data stream.
type IndexEntry struct {
	Version int    // entry format, 1 to 5
	Path    []byte // relative to the snapshot root, '/'-separated; "." is the root; raw bytes
	Mode    uint32 // st_mode: type and permission bits, setuid/setgid/sticky
	Size    uint64 // content bytes in the data stream (regular files only)
	UID     uint64
	GID     uint64

	Mtime, Ctime         int64 // seconds since the epoch
	MtimeNsec, CtimeNsec uint32

	NormDev  uint64 // device number, normalised per snapshot (raw st_dev in format 1)
	Ino      uint64
	Nlink    uint64
	Sparse   bool   // the source file had holes (formats 4 and 5)
	Link     []byte // symlink target
	DevMajor uint64
	DevMinor uint64
	Xattrs   []Xattr
	DataHash *[32]byte // BLAKE3 of the content, when recorded

	// StreamOffset is where the content starts in the data stream: the sum
	// of the sizes of all earlier entries.
	StreamOffset uint64
	// Relative cursor (formats 3 to 5): the content starts in leaf
	// FirstChunk at StartOffset and ends in leaf FirstChunk+ChunkDelta at
	// EndOffset (exclusive).
	HasCursor   bool
	FirstChunk  uint64
	ChunkDelta  uint64
	StartOffset uint64
	EndOffset   uint64
}

// Xattr is an extended attribute.
type Xattr struct {
	Name  string // raw bytes
	Value []byte
}

// Type returns the file type bits of the mode.
func (e *IndexEntry) Type() uint32 { return e.Mode & ModeType }

// IsDir reports whether the entry is a directory.
func (e *IndexEntry) IsDir() bool { return e.Type() == ModeDir }

// IsRegular reports whether the entry is a regular file.
func (e *IndexEntry) IsRegular() bool { return e.Type() == ModeRegular }

// decodeEntry decodes one VersionedIndexEntry. Byte fields alias the input.
func decodeEntry(d *bare.Decoder, e *IndexEntry) error {
	tag := d.Uint()
	if err := d.Err(); err != nil {
		return err
	}
	switch tag {
	case 0, 1, 2:
		e.Version = int(tag) + 1
		e.Path = d.StringBytes()
		e.Mode = mode32(d)
		e.Size = d.Uint()
		e.UID = d.Uint()
		e.GID = d.Uint()
		e.Mtime, e.MtimeNsec = int64(d.Uint()), nsec(d)
		e.Ctime, e.CtimeNsec = int64(d.Uint()), nsec(d)
		e.NormDev = d.Uint()
		e.Ino = d.Uint()
		e.Nlink = d.Uint()
		if d.Option() {
			e.Link = d.StringBytes()
		}
		e.DevMajor = d.Uint()
		e.DevMinor = d.Uint()
		if d.Option() {
			e.Xattrs = decodeXattrs(d, false, true)
		}
		if tag == 2 {
			decodeRelativeCursor(d, e)
		} else {
			// Absolute cursors are unreliable
			// (docs/bupstash-format.md §10.6): stat-cache reuse copied
			// stale positions. Only the stream offset is used.
			for range 4 {
				d.Uint()
			}
		}
		if tag >= 1 {
			e.DataHash = decodeContentHash(d)
		}
	case 3, 4:
		e.Version = int(tag) + 1
		e.Path = d.Data()
		e.Size = d.Uint()
		e.Mtime, e.MtimeNsec = int64(d.Uint()), nsec(d)
		e.Ctime, e.CtimeNsec = int64(d.Uint()), nsec(d)
		e.Ino = d.Uint()
		e.NormDev = d.Uint()
		e.Mode = mode32(d)
		e.UID = d.Uint()
		e.GID = d.Uint()
		e.Nlink = d.Uint()
		if d.Option() {
			e.Link = d.Data()
		}
		e.DevMajor = d.Uint()
		e.DevMinor = d.Uint()
		e.Sparse = d.Bool()
		if d.Option() {
			e.Xattrs = decodeXattrs(d, tag == 3, false)
		}
		decodeRelativeCursor(d, e)
		e.DataHash = decodeContentHash(d)
	case 5, 6, 7:
		return fmt.Errorf("index entry format %d is from a newer bupstash", tag+1)
	default:
		return fmt.Errorf("%w: unknown index entry format %d", ErrCorrupt, tag+1)
	}
	return d.Err()
}

func mode32(d *bare.Decoder) uint32 {
	m := d.Uint()
	if m > 0xffffffff {
		d.Fail(fmt.Errorf("%w: mode %#o does not fit 32 bits", ErrCorrupt, m))
	}
	return uint32(m)
}

func nsec(d *bare.Decoder) uint32 {
	n := d.Uint()
	if n >= 1e9 {
		d.Fail(fmt.Errorf("%w: %d nanoseconds", ErrCorrupt, n))
	}
	return uint32(n)
}

func decodeRelativeCursor(d *bare.Decoder, e *IndexEntry) {
	e.HasCursor = true
	e.ChunkDelta = d.Uint()
	e.StartOffset = d.Uint()
	e.EndOffset = d.Uint()
}

func decodeContentHash(d *bare.Decoder) *[32]byte {
	switch v := d.Uint(); v {
	case 0:
		return nil
	case 1:
		h := d.Array32()
		return &h
	default:
		d.Fail(fmt.Errorf("%w: unknown content hash kind %d", ErrCorrupt, v))
		return nil
	}
}

// decodeXattrs decodes a map of attribute name to value. Format 4 (0.11.0)
// encodes each name as an OsString: a variant number (0, "Unix") before the
// bytes. Format 5 drops the variant. Bupstash 0.11.1 wrote format-5 maps
// under tag 3 in memory (its issue #346); should such an entry ever reach a
// repository, a name variant other than 0 gives it away, and the map is
// decoded again as format 5.
func decodeXattrs(d *bare.Decoder, osStringNames, utf8Names bool) []Xattr {
	if osStringNames {
		saved := *d
		xs, badVariant := decodeXattrMap(d, true, false)
		if !badVariant {
			return xs // errors, including a short buffer, stay in d
		}
		*d = saved
	}
	xs, _ := decodeXattrMap(d, false, utf8Names)
	return xs
}

// decodeXattrMap decodes the map; badVariant reports an OsString name whose
// variant is not 0, the only one Bupstash writes.
func decodeXattrMap(d *bare.Decoder, osStringNames, utf8Names bool) (xs []Xattr, badVariant bool) {
	n := d.Uint()
	if n > uint64(d.Remaining()) {
		d.Fail(bare.ErrShort)
		return nil, false
	}
	xs = make([]Xattr, 0, n)
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		if osStringNames {
			if v := d.Uint(); d.Err() == nil && v != 0 {
				return nil, true
			}
		}
		var name []byte
		if utf8Names {
			name = d.StringBytes()
		} else {
			name = d.Data()
		}
		xs = append(xs, Xattr{Name: string(name), Value: d.Data()})
	}
	return xs, false
}

// validPath reports whether an index path is safe to present: "." or
// relative components that are neither empty, "." nor "..", without NUL.
func validPath(p []byte) bool {
	if len(p) == 0 || p[0] == '/' || bytes.IndexByte(p, 0) >= 0 {
		return false
	}
	if string(p) == "." {
		return true
	}
	for _, c := range bytes.Split(p, []byte{'/'}) {
		if len(c) == 0 || string(c) == "." || string(c) == ".." {
			return false
		}
	}
	return true
}

// leafSource supplies a tree's leaves in order; htree is the real one.
// A leaf's bytes stay valid until its release function is called.
type leafSource interface {
	leafCount() uint64
	leafBytes(ctx context.Context, n uint64) (data []byte, release func(), err error)
	prefetch(ctx context.Context, n uint64) bool
}

// leafHinter is a leafSource that can have leaves fetched ahead from a
// far source (htree.hint).
type leafHinter interface {
	hint(from, to uint64) uint64
}

// IndexReader decodes an item's index as a stream, one entry at a time,
// holding at most one leaf and a partial entry in memory. Entries straddle
// leaf boundaries freely.
type IndexReader struct {
	item   *Item
	leaves leafSource
	log    *slog.Logger

	leaf    uint64 // next leaf to load
	hinted  uint64 // leaves before this one have been offered to a far source
	buf     []byte // current leaf
	release func() // releases the leaf buf aliases
	pos     int
	carry   []byte // the start of an entry that continues in the next leaf
	joined  []byte // carry joined with the start of the next leaf

	streamBytes uint64 // index bytes loaded so far
	dataOffset  uint64 // running data stream offset
	chunk       uint64 // running leaf index c(i)
	entries     int
	skipped     int
	err         error
}

// Index returns a reader over the item's index.
func (o *OpenItem) Index() (*IndexReader, error) {
	if o.item.IndexHTree == nil {
		return nil, ErrNoIndex
	}
	if o.index == nil {
		return nil, ErrCannotListContents
	}
	return &IndexReader{item: o.item, leaves: o.index, log: o.repo.log}, nil
}

// Skipped returns how many entries were left out for having unsafe paths.
func (r *IndexReader) Skipped() int { return r.skipped }

// Next returns the next entry, or io.EOF after the last one, once the
// stream's size and cursors have been checked. Entries with unsafe paths
// (absolute, "..", empty components, NUL) are skipped, but still advance
// the stream positions.
func (r *IndexReader) Next(ctx context.Context) (*IndexEntry, error) {
	e := new(IndexEntry)
	if err := r.nextBorrowed(ctx, e); err != nil {
		return nil, err
	}
	cloneEntry(e)
	return e, nil
}

// nextBorrowed decodes the next entry into e without copying: its byte
// fields alias the reader's buffer and are valid until the next call.
func (r *IndexReader) nextBorrowed(ctx context.Context, e *IndexEntry) error {
	if r.err != nil {
		return r.err
	}
	err := r.next(ctx, e)
	if err != nil {
		r.err = err
		if err != io.EOF {
			r.releaseLeaf()
		}
	}
	return err
}

func (r *IndexReader) next(ctx context.Context, e *IndexEntry) error {
	for {
		var err error
		switch {
		case len(r.carry) > 0 && r.pos < len(r.buf):
			err = r.decodeStraddling(e)
		case r.pos < len(r.buf):
			d := bare.NewDecoder(r.buf[r.pos:])
			*e = IndexEntry{}
			if err = decodeEntry(d, e); err == nil {
				r.pos += d.Offset()
			} else if errors.Is(err, io.ErrUnexpectedEOF) {
				// The entry goes on in the next leaf.
				r.carry = append(r.carry[:0], r.buf[r.pos:]...)
				r.pos = len(r.buf)
				err = errNeedLeaf
			}
		default:
			err = errNeedLeaf
		}
		switch {
		case err == nil:
			if err := r.place(e); err != nil {
				return err
			}
			if !validPath(e.Path) {
				r.skipped++
				if r.skipped == 1 {
					r.log.Warn("skipping index entry with an unsafe path", "item", r.item.ID, "path", fmt.Sprintf("%q", e.Path))
				}
				continue
			}
			return nil
		case err != errNeedLeaf:
			return fmt.Errorf("item %s: index entry %d: %w", r.item.ID, r.entries, wrapCorrupt(err))
		}
		if r.leaf >= r.leaves.leafCount() {
			r.releaseLeaf()
			return r.finish()
		}
		data, release, err := r.leaves.leafBytes(ctx, r.leaf)
		if err != nil {
			return err
		}
		r.leaves.prefetch(ctx, r.leaf+1)
		if h, ok := r.leaves.(leafHinter); ok && r.hinted < r.leaf+1+hintLeaves {
			from := max(r.leaf+1, r.hinted)
			r.hinted = from + h.hint(from, r.leaf+hintLeaves)
		}
		r.leaf++
		r.streamBytes += uint64(len(data))
		r.releaseLeaf()
		r.buf, r.release, r.pos = data, release, 0 // the cache's copy: never modified
	}
}

// errNeedLeaf says the stream needs its next leaf to go on.
var errNeedLeaf = errors.New("need the next leaf")

// decodeStraddling decodes the entry begun in earlier leaves (r.carry) and
// continued in the current one, joining the carried bytes with as little
// of the leaf as the entry needs: copying whole leaves cost more than
// decoding them. It returns errNeedLeaf if the entry goes on past this
// leaf too.
func (r *IndexReader) decodeStraddling(e *IndexEntry) error {
	rest := r.buf[r.pos:]
	for n := min(len(rest), 4096); ; n = min(2*n, len(rest)) {
		r.joined = append(append(r.joined[:0], r.carry...), rest[:n]...)
		d := bare.NewDecoder(r.joined)
		*e = IndexEntry{}
		err := decodeEntry(d, e)
		switch {
		case err == nil:
			r.pos += d.Offset() - len(r.carry)
			r.carry = r.carry[:0]
			return nil // e aliases r.joined until the next call
		case !errors.Is(err, io.ErrUnexpectedEOF):
			return err
		case n == len(rest):
			r.carry = append(r.carry, rest...)
			r.pos = len(r.buf)
			return errNeedLeaf
		}
	}
}

// place records where the entry's content lies and advances the running
// positions.
func (r *IndexReader) place(e *IndexEntry) error {
	r.entries++
	e.StreamOffset = r.dataOffset
	if r.dataOffset+e.Size < r.dataOffset || r.dataOffset+e.Size > r.item.DataSize {
		return fmt.Errorf("item %s: index entry %d (%q): %w: content runs past the %d-byte data stream",
			r.item.ID, r.entries, e.Path, ErrCorrupt, r.item.DataSize)
	}
	r.dataOffset += e.Size
	if e.HasCursor {
		e.FirstChunk = r.chunk
		if r.chunk+e.ChunkDelta < r.chunk {
			return fmt.Errorf("item %s: index entry %d: %w: chunk cursor overflows", r.item.ID, r.entries, ErrCorrupt)
		}
		r.chunk += e.ChunkDelta
	}
	return nil
}

// releaseLeaf lets go of the leaf the buffer aliases, if any.
func (r *IndexReader) releaseLeaf() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
}

// Close releases what the reader holds. Reading to the end (io.EOF) or to
// an error does so too.
func (r *IndexReader) Close() {
	r.releaseLeaf()
	r.buf, r.carry, r.joined = nil, nil, nil
}

// finish checks the end of the stream (docs/bupstash-format.md §10.12).
func (r *IndexReader) finish() error {
	switch {
	case r.pos < len(r.buf) || len(r.carry) > 0:
		return fmt.Errorf("item %s: %w: index ends inside an entry", r.item.ID, ErrCorrupt)
	case r.streamBytes != r.item.IndexSize:
		return fmt.Errorf("item %s: %w: index is %d bytes, metadata says %d", r.item.ID, ErrCorrupt, r.streamBytes, r.item.IndexSize)
	case r.dataOffset != r.item.DataSize:
		return fmt.Errorf("item %s: %w: index entries hold %d bytes, the data stream has %d", r.item.ID, ErrCorrupt, r.dataOffset, r.item.DataSize)
	case r.chunk > r.item.DataHTree.DataChunkCount:
		return fmt.Errorf("item %s: %w: index cursors end at leaf %d of %d", r.item.ID, ErrCorrupt, r.chunk, r.item.DataHTree.DataChunkCount)
	}
	return io.EOF
}

func wrapCorrupt(err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// cloneEntry copies the entry's byte fields out of the shared leaf buffer,
// so that holding an entry never pins a whole leaf.
func cloneEntry(e *IndexEntry) {
	e.Path = bytes.Clone(e.Path)
	if e.Link != nil {
		e.Link = bytes.Clone(e.Link)
	}
	if e.Xattrs != nil {
		xs := make([]Xattr, len(e.Xattrs))
		for i, x := range e.Xattrs {
			xs[i] = Xattr{Name: x.Name, Value: bytes.Clone(x.Value)}
		}
		e.Xattrs = xs
	}
}
