package testrepo

import (
	"fmt"
	"runtime"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// Compression selects how data leaves are compressed. The zero value is
// zstd, Bupstash 0.12's default (`--compression zstd:3`).
type Compression int

// The schemes `bupstash put --compression` offers.
const (
	Zstd Compression = iota
	LZ4
	None
)

func (c Compression) footer() (bupstash.Compression, error) {
	switch c {
	case Zstd:
		return bupstash.CompressionZstd, nil
	case LZ4:
		return bupstash.CompressionLZ4, nil
	case None:
		return bupstash.CompressionNone, nil
	}
	return 0, fmt.Errorf("unknown compression %d", int(c))
}

func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case LZ4:
		return "lz4"
	case None:
		return "none"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// ParseCompression parses "zstd", "lz4" or "none".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "zstd", "zstd:3":
		return Zstd, nil
	case "lz4":
		return LZ4, nil
	case "none":
		return None, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want zstd, lz4 or none)", s)
}

// Chunk size limits. Bupstash 0.12 cuts leaves of 256 KiB to 20 MiB, and
// closes interior nodes within the same bounds.
const (
	DefaultMinChunkSize = 256 << 10
	DefaultMaxChunkSize = 8 << 20
	MaxChunkSizeLimit   = 20 << 20
	// DefaultSplitBits makes a content-defined cut about every 2 MiB past
	// the minimum, as Bupstash 0.12's rolling hash does.
	DefaultSplitBits = 21
	// minNodeSize is the smallest interior node size limit Bupstash's tree
	// writer accepts: two entries. With fewer a tree would never close.
	minNodeSize = 2 * nodeEntrySize
)

// Options shape the repository's trees. The zero value writes what
// Bupstash 0.12 writes, with 8 MiB leaves at most.
type Options struct {
	// Compression of data leaves. Index leaves and secret metadata are
	// always zstd, as with Bupstash 0.12.
	Compression Compression

	// MinChunkSize and MaxChunkSize bound leaf sizes (defaults 256 KiB and
	// 8 MiB; at most 20 MiB). Only the last leaf of a stream, and in a
	// snapshot the last leaf of each batch of entries (whose data ends with
	// a forced split), may be shorter than the minimum. Tests use small
	// values to get many leaves from little data.
	MinChunkSize, MaxChunkSize int
	// SplitBits sets the content-defined cut probability to 2^-SplitBits
	// per byte past the minimum (default 21: about 2 MiB).
	SplitBits int

	// NodeMinSize and NodeMaxSize bound interior nodes in bytes (40 per
	// entry). A node is closed once it holds NodeMinSize bytes and its last
	// child's address starts with ff ff, or before it would exceed
	// NodeMaxSize. They default to the leaf bounds, as in Bupstash; a small
	// NodeMaxSize forces tall trees.
	NodeMinSize, NodeMaxSize int

	// Workers is the number of goroutines chunking, compressing and
	// sealing per item (default GOMAXPROCS).
	Workers int

	// NoLock skips the fcntl locks Bupstash writers take (for filesystems
	// without locking).
	NoLock bool

	// batchBytes overrides Bupstash's 128 MiB batch data limit, so tests
	// can reach it with little data.
	batchBytes int64
}

// normalize fills defaults and checks the limits.
func (o Options) normalize() (Options, error) {
	if _, err := o.Compression.footer(); err != nil {
		return o, err
	}
	if o.MaxChunkSize == 0 {
		o.MaxChunkSize = DefaultMaxChunkSize
	}
	if o.MinChunkSize == 0 {
		o.MinChunkSize = min(DefaultMinChunkSize, o.MaxChunkSize)
	}
	if o.SplitBits == 0 {
		o.SplitBits = DefaultSplitBits
	}
	if o.NodeMaxSize == 0 {
		o.NodeMaxSize = max(o.MaxChunkSize, minNodeSize)
	}
	if o.NodeMinSize == 0 {
		o.NodeMinSize = min(max(o.MinChunkSize, minNodeSize), o.NodeMaxSize)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.batchBytes <= 0 {
		o.batchBytes = maxBatchBytes
	}
	switch {
	case o.MinChunkSize < 1 || o.MinChunkSize > o.MaxChunkSize:
		return o, fmt.Errorf("chunk sizes: want 1 <= min (%d) <= max (%d)", o.MinChunkSize, o.MaxChunkSize)
	case o.MaxChunkSize > MaxChunkSizeLimit:
		return o, fmt.Errorf("max chunk size %d exceeds Bupstash's %d", o.MaxChunkSize, MaxChunkSizeLimit)
	case o.SplitBits < 1 || o.SplitBits > 31:
		return o, fmt.Errorf("split bits %d: want 1 to 31", o.SplitBits)
	case o.NodeMinSize < minNodeSize || o.NodeMinSize > o.NodeMaxSize:
		return o, fmt.Errorf("node sizes: want %d <= min (%d) <= max (%d)", minNodeSize, o.NodeMinSize, o.NodeMaxSize)
	case o.NodeMaxSize > MaxChunkSizeLimit:
		return o, fmt.Errorf("max node size %d exceeds Bupstash's %d", o.NodeMaxSize, MaxChunkSizeLimit)
	}
	return o, nil
}

// ItemMeta describes an item's tags and time.
type ItemMeta struct {
	// Timestamp of the item (kept to the millisecond). Zero means the time
	// of the commit, or 1 ms after the latest timestamp the Repo wrote if
	// that is later, so that listing order (by time) equals oplog order
	// as with a real Bupstash.
	Timestamp time.Time
	// Source is the path `bupstash put` was given; it sets the default
	// "name" tag: "<base>.tar" for a snapshot ("snapshot.tar" when empty),
	// "<base>" for a raw item (none when empty, as for stdin).
	Source string
	// Tags are added to the default ones (and may override "name").
	Tags map[string]string
	// NoDefaultTags drops the "name" tag, like `put --no-default-tags`.
	NoDefaultTags bool
}

// ItemInfo reports what an Add call wrote.
type ItemInfo struct {
	ID        bupstash.Xid
	Timestamp time.Time
	Tags      map[string]string
	Snapshot  bool // has an index (file tree)

	DataHTree  bupstash.HTreeMeta
	IndexHTree bupstash.HTreeMeta // zero for a raw item
	DataSize   uint64             // bytes in the data stream
	IndexSize  uint64             // bytes in the index stream
	Entries    int                // index entries

	Nodes    int   // interior nodes written (both trees)
	Stored   int64 // bytes of new chunk files
	Duration time.Duration
}
