package bupstashtest

import (
	"sort"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// Entry is an index entry, encodable in every format
// (docs/bupstash-format.md §10.3).
type Entry struct {
	Path    string
	Mode    uint32 // st_mode, type bits included
	Content []byte // a regular file's data; its length is the entry's size

	UID, GID                           uint64
	Mtime, MtimeNsec, Ctime, CtimeNsec uint64
	Dev, Ino, Nlink                    uint64 // Dev is raw st_dev in V1, norm_dev after
	Link                               *string
	DevMajor, DevMinor                 uint64
	Sparse                             bool // V4/V5 only
	Xattrs                             map[string][]byte
	NoHash                             bool      // write ContentHash None even for a regular file
	Hash                               *[32]byte // write this content hash instead of the true one
}

// Relative is a V3–V5 data cursor.
type Relative struct{ ChunkDelta, Start, End uint64 }

// Absolute is a V1/V2 data cursor: chunk_start_idx, chunk_end_idx,
// start_byte_offset, end_byte_offset.
type Absolute [4]uint64

// Encode returns the VersionedIndexEntry of e in format 1 to 5. V1/V2 use
// abs, the others rel.
func (e *Entry) Encode(format int, rel Relative, abs Absolute) []byte {
	var b bare.Encoder
	b.Uint(uint64(format - 1))
	size := uint64(len(e.Content))
	if format <= 3 {
		b.String(e.Path)
		for _, v := range []uint64{uint64(e.Mode), size, e.UID, e.GID, e.Mtime, e.MtimeNsec, e.Ctime, e.CtimeNsec, e.Dev, e.Ino, e.Nlink} {
			b.Uint(v)
		}
		b.Option(e.Link != nil)
		if e.Link != nil {
			b.String(*e.Link)
		}
		b.Uint(e.DevMajor)
		b.Uint(e.DevMinor)
		e.encodeXattrs(&b, format)
		if format == 3 {
			rel.encode(&b)
		} else {
			for _, v := range abs {
				b.Uint(v)
			}
		}
		if format >= 2 {
			e.encodeHash(&b)
		}
		return b.Buf
	}
	b.Data([]byte(e.Path))
	for _, v := range []uint64{size, e.Mtime, e.MtimeNsec, e.Ctime, e.CtimeNsec, e.Ino, e.Dev, uint64(e.Mode), e.UID, e.GID, e.Nlink} {
		b.Uint(v)
	}
	b.Option(e.Link != nil)
	if e.Link != nil {
		b.Data([]byte(*e.Link))
	}
	b.Uint(e.DevMajor)
	b.Uint(e.DevMinor)
	b.Bool(e.Sparse)
	e.encodeXattrs(&b, format)
	rel.encode(&b)
	e.encodeHash(&b)
	return b.Buf
}

func (c Relative) encode(b *bare.Encoder) {
	b.Uint(c.ChunkDelta)
	b.Uint(c.Start)
	b.Uint(c.End)
}

func (e *Entry) encodeXattrs(b *bare.Encoder, format int) {
	b.Option(e.Xattrs != nil)
	if e.Xattrs == nil {
		return
	}
	names := make([]string, 0, len(e.Xattrs))
	for n := range e.Xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	b.Uint(uint64(len(names)))
	for _, n := range names {
		switch format {
		case 1, 2, 3:
			b.String(n)
		case 4:
			b.Uint(0) // OsString "Unix" variant
			b.Data([]byte(n))
		default:
			b.Data([]byte(n))
		}
		b.Data(e.Xattrs[n])
	}
}

func (e *Entry) encodeHash(b *bare.Encoder) {
	if e.Mode&bupstash.ModeType != bupstash.ModeRegular || e.NoHash {
		b.Uint(0)
		return
	}
	h := blake3.Sum256(e.Content)
	if e.Hash != nil {
		h = *e.Hash
	}
	b.Uint(1)
	b.Fixed(h[:])
}

// Snapshot is a snapshot item to forge: its entries, in index order, and
// how to cut its streams.
type Snapshot struct {
	Item        // metadata; trees and sizes are filled in
	EntryFormat int
	Entries     []Entry
	// LeafSize cuts the data stream every LeafSize bytes, across file
	// boundaries (default 1 MiB); IndexLeafSize cuts the index stream the
	// same way (default: one leaf).
	LeafSize, IndexLeafSize int
	Compression             bupstash.Compression // of all leaves
}

// cut splits b into pieces of n bytes (the last may be shorter).
func cut(b []byte, n int) [][]byte {
	if n <= 0 {
		return [][]byte{b}
	}
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// AddSnapshot stores the data stream (the entries' contents in order) and
// the index, then the item. Relative cursors are the true positions of
// each file in the fixed-size leaves; absolute (V1/V2) cursors are written
// stale, all zero, as Bupstash's stat cache could leave them, so a reader
// that trusted them would read the wrong bytes.
func (r *Repo) AddSnapshot(s Snapshot) bupstash.Xid {
	r.t.Helper()
	leafSize := s.LeafSize
	if leafSize <= 0 {
		leafSize = 1 << 20
	}
	var data, index []byte
	for i := range s.Entries {
		e := &s.Entries[i]
		start := uint64(len(data))
		data = append(data, e.Content...)
		end := uint64(len(data))
		L := uint64(leafSize)
		rel := Relative{ChunkDelta: end/L - start/L, Start: start % L, End: end % L}
		index = append(index, e.Encode(s.EntryFormat, rel, Absolute{})...)
	}
	var dataLeaves [][]byte
	if len(data) > 0 {
		dataLeaves = cut(data, leafSize)
	}
	dt := r.DataHTree(dataLeaves, s.Compression)
	it := r.IndexHTree(cut(index, s.IndexLeafSize), s.Compression)
	s.Item.DataHTree, s.Item.IndexHTree = dt, &it
	s.Item.DataSize, s.Item.IndexSize = uint64(len(data)), uint64(len(index))
	return r.AddItem(s.Item)
}

// AddRaw stores data as a raw item cut into leaves of leafSize bytes.
func (r *Repo) AddRaw(it Item, data []byte, leafSize int, c bupstash.Compression) bupstash.Xid {
	r.t.Helper()
	var leaves [][]byte
	if len(data) > 0 {
		leaves = cut(data, leafSize)
	}
	it.DataHTree, it.IndexHTree = r.DataHTree(leaves, c), nil
	it.DataSize, it.IndexSize = uint64(len(data)), 0
	return r.AddItem(it)
}
