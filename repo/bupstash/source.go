package bupstash

import (
	"context"
	"io"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
)

// A Source is where a repository is read from: a directory (OpenDir), or
// a `bupstash serve` process reached over ssh or a command (package
// serve). A Repository reads everything through one; nothing a source
// returns is trusted: the Repository verifies every byte against keys and
// addresses before using it. Sources are safe for concurrent use.
type Source interface {
	// String names the source in messages: a directory or a URL (without
	// secrets).
	String() string
	ItemSource
	ChunkSource
	io.Closer
}

// An ItemSource is where item metadata comes from: the files of items/
// in a directory, the oplog a server streams.
type ItemSource interface {
	// Items returns the live items. known reports the items whose
	// metadata the caller already holds (metadata never changes once
	// written), for which the source may return no Meta.
	//
	// Errors: one wrapping ErrUnavailable when the source cannot be
	// reached now (the caller keeps showing what it had); ctx's error when
	// ctx ends; any other error means the items cannot be listed at all
	// (a damaged repository). Items that are listed but cannot be read go
	// in ItemSet.Problems instead, so that the others stay usable.
	Items(ctx context.Context, known func(Xid) bool) (*ItemSet, error)

	// Changed reports whether the live items may differ from the set that
	// carried token. It is cheap and never waits for the repository's
	// locks; a source that cannot tell cheaply reports true, and Items
	// then does the work.
	Changed(ctx context.Context, token string) (bool, error)
}

// ItemSet is what an ItemSource lists.
type ItemSet struct {
	// Token describes this state of the items, for Changed.
	Token string
	// Items are the live items, in no particular order.
	Items []RawItem
	// Problems are live items whose metadata could not be read.
	Problems []*ItemError
}

// RawItem is a live item as its source stores it.
type RawItem struct {
	ID Xid
	// Meta is the item's metadata as stored (an item file; the same bytes
	// as an oplog AddItem), or nil when the caller said it knows the item.
	Meta []byte
}

// A ChunkSource is where chunks come from.
type ChunkSource interface {
	// ReadChunk returns the chunk ref names exactly as it is stored (a
	// sealed leaf, or an interior node with its footer) in a buffer taken
	// from pool (a fresh one when pool is nil), which the caller then
	// owns. The buffer is taken with pool.Alloc(ctx, …) once the size is
	// known: ctx carries the cache's admission, which keeps chunks being
	// fetched within the cache's bound. Nothing is verified: the caller checks every byte against
	// ref.Addr.
	//
	// Errors, always wrapped: ErrChunkMissing when the source does not
	// hold the chunk; ErrCorrupt when what it holds cannot be a chunk
	// (too large); ErrUnavailable when the source cannot be reached now;
	// ErrPermission when the source refuses to hand out data; ctx's error
	// when ctx ends.
	ReadChunk(ctx context.Context, ref ChunkRef, pool *cache.BufferPool) ([]byte, error)
}

// ChunkRef names a chunk by its address, and says where it sits in an
// item's tree, for sources that can send chunks only as part of a walk of
// a tree (bupstash serve 0.10 has no fetch by address).
type ChunkRef struct {
	Addr Address
	Item Xid
	Tree HTreeKind
	// HTree is the tree's root, height and leaf count.
	HTree HTreeMeta
	// Leaf is the index of the leaf this chunk is, or, for an interior
	// node, of the leaf the walk through it is heading for.
	Leaf uint64
	// Height is 0 for a leaf, else the interior node's height.
	Height uint64
}

// HTreeKind says which of an item's two hash trees a chunk belongs to.
type HTreeKind uint8

const (
	DataKind  HTreeKind = iota // the item's data stream
	IndexKind                  // the item's index: its saved file tree
)

func (k HTreeKind) String() string {
	if k == IndexKind {
		return "index"
	}
	return "data"
}

// A ChunkRejecter is told when a chunk it supplied failed verification,
// so that it forgets any copy it kept (a disk cache of fetched chunks).
type ChunkRejecter interface {
	RejectChunk(addr Address)
}

// A ChunkPrefetcher is a source far from its reader (a server over ssh),
// where every read waits a round trip: told which chunks a reader will
// need next, it fetches them ahead, several at once, and keeps them (on
// disk, or in a small bounded window of buffers from pool, which then
// count against the chunk cache) until ReadChunk asks. It returns how
// many of refs, from the first, it took on; the caller offers the rest
// again later. Sequential file readers and index readers offer the
// leaves after their readahead window.
//
// A Repository on such a source also decodes a leaf whose length it
// needs rather than only probing it, since a probe costs the chunk's
// whole transfer anyway, and hints the leaves a seek must learn the
// lengths of, so that they come in one round trip.
type ChunkPrefetcher interface {
	PrefetchChunks(refs []ChunkRef, pool *cache.BufferPool) int
}

// A StoredSizer can tell how many bytes a chunk occupies in storage
// without reading it (a directory: one stat), or -1. Sparse files' holes
// are recognised from it without decompressing their zero leaves.
type StoredSizer interface {
	StoredSize(addr Address) int64
}

// MaxStoredChunkSize bounds a chunk as stored: a leaf's envelope around
// at most 64 MiB of compressed plaintext (Bupstash's own limit on what it
// decompresses), or an interior node. Sources refuse anything larger
// before reading it.
const MaxStoredChunkSize = maxDecompressedSize + box.Overhead + 1024

// maxChunkFileSize is MaxStoredChunkSize, by the name the checks use.
const maxChunkFileSize = MaxStoredChunkSize
