package bupstash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"lukechampine.com/blake3"
)

// OpenItem gives access to one item's index and data. It holds what is
// learned while reading (leaf lengths, the last interior node walked), so
// callers should keep one per item and share it. It is safe for concurrent
// use.
type OpenItem struct {
	repo  *Repository
	item  *Item
	data  *htree // nil when the key cannot read data
	index *htree // nil for raw items or when the key cannot list contents

	streamOnce sync.Once
	stream     *section // the whole data stream, for raw items and format 1–2 entries
}

// OpenItem prepares access to an item's trees. Nothing is read until a
// reader asks for bytes.
func (r *Repository) OpenItem(it *Item) *OpenItem {
	o := &OpenItem{repo: r, item: it}
	dataPart2, indexPart2 := it.hashParts()
	if r.dataOpener != nil {
		o.data = r.newHTree(it, DataKind, it.DataHTree, r.dataOpener, r.key.dataHashPart1(), dataPart2)
	}
	if it.IndexHTree != nil && r.idxOpener != nil {
		o.index = r.newHTree(it, IndexKind, *it.IndexHTree, r.idxOpener, r.key.indexHashPart1(), indexPart2)
	}
	return o
}

// Item returns the item's metadata.
func (o *OpenItem) Item() *Item { return o.item }

// Repository returns the repository the item belongs to.
func (o *OpenItem) Repository() *Repository { return o.repo }

func (o *OpenItem) wholeStream() *section {
	o.streamOnce.Do(func() {
		o.stream = newSection(o.data, span{
			first: 0, last: o.item.DataHTree.DataChunkCount - 1,
			start: 0, end: -1, size: int64(o.item.DataSize),
		})
	})
	return o.stream
}

// Data returns the item's whole data stream: a raw item's content, or a
// snapshot's file contents concatenated in index order.
func (o *OpenItem) Data() (*File, error) {
	if o.data == nil {
		return nil, fmt.Errorf("item %s: %w", o.item.ID, ErrCannotReadData)
	}
	return &File{
		sec:  o.wholeStream(),
		size: int64(o.item.DataSize),
		item: o.item.ID,
	}, nil
}

// File returns the content of a regular file entry. With formats 3 to 5 it
// is located by the entry's chunk cursor and reads only the leaves covering
// it; with formats 1 and 2, whose cursors are unreliable, by its offset in
// the data stream.
func (o *OpenItem) File(e *IndexEntry) (*File, error) {
	if o.data == nil {
		return nil, &FileError{Item: o.item.ID, Path: string(e.Path), Err: ErrCannotReadData}
	}
	f := &File{size: int64(e.Size), hash: e.DataHash, item: o.item.ID, path: string(e.Path)}
	switch {
	case e.Size == 0:
		if e.DataHash != nil && *e.DataHash != blake3.Sum256(nil) {
			return nil, &FileError{Item: o.item.ID, Path: f.path, Err: fmt.Errorf("%w: empty file with the hash of non-empty content", ErrCorrupt)}
		}
		f.sec = newSection(o.data, span{})
	case e.HasCursor:
		f.sec = newSection(o.data, spanFromCursor(e.FirstChunk, e.ChunkDelta, e.StartOffset, e.EndOffset, e.Size))
	default:
		f.sec = o.wholeStream()
		f.base = int64(e.StreamOffset)
	}
	return f, nil
}

// RootAttr returns the attributes and xattrs of a snapshot's root
// directory from the first entry of its index, which is the root (".")
// in what Bupstash writes, so that they cost one index leaf rather than
// the whole index. found is false when the index does not start with the
// root; the root is then implied, and Tree.RootAttr gives it.
func (o *OpenItem) RootAttr(ctx context.Context) (a NodeAttr, xattrs []Xattr, found bool, err error) {
	idx, err := o.Index()
	if err != nil {
		return NodeAttr{}, nil, false, err
	}
	defer idx.Close()
	e, err := idx.Next(ctx)
	switch {
	case err == nil && string(e.Path) == ".":
		a = e.Attr()
		a.Nlink = max(a.Nlink, 2) // as the tree gives a directory
		return asRoot(a), e.Xattrs, true, nil
	case err == nil || errors.Is(err, io.EOF):
		return NodeAttr{}, nil, false, nil
	}
	return NodeAttr{}, nil, false, err
}

// RootAttr returns the attributes and xattrs of the tree's root
// directory, as OpenItem.RootAttr does.
func (t *Tree) RootAttr() (NodeAttr, []Xattr) { return asRoot(t.Attr(0)), t.Xattrs(0) }

// asRoot keeps a root entry that is not a directory (a snapshot of one
// file) a directory, with its permissions.
func asRoot(a NodeAttr) NodeAttr {
	if a.Mode&ModeType != ModeDir {
		a.Mode = ModeDir | a.Mode&0o7777
	}
	return a
}
