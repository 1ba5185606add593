package serve

import (
	"errors"
	"fmt"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// maxItemMetadata bounds one item's metadata in an operation; Bupstash
// writes at most 34 KiB, and local item files are refused over the same
// 1 MiB.
const maxItemMetadata = 1 << 20

// OpKind is the kind of an operation in Bupstash's operation log
// (repo.oplog, oplog.rs LogOp).
type OpKind uint8

const (
	OpAddItem        OpKind = 0 // an item was added
	OpRemoveItems    OpKind = 1 // items were removed
	OpRecoverRemoved OpKind = 2 // every removed, not yet collected item is live again
)

// LogOp is one operation of the log, as the server sent it.
type LogOp struct {
	Kind OpKind
	ID   bupstash.Xid   // OpAddItem: the item
	Meta []byte         // OpAddItem: its VersionedItemMetadata, as stored
	IDs  []bupstash.Xid // OpRemoveItems: the items
}

// errNewerOp reports an operation kind Bupstash reserves for later
// versions.
var errNewerOp = errors.New("operation is from a newer bupstash")

// DecodeLogOp decodes the operation at the start of b and returns it
// with its encoded length. Meta aliases b.
func DecodeLogOp(b []byte) (LogOp, int, error) {
	d := bare.NewDecoder(b)
	op := decodeLogOp(d, b)
	if err := d.Err(); err != nil {
		return LogOp{}, 0, err
	}
	return op, d.Offset(), nil
}

// decodeLogOp decodes an operation from d, which reads buf.
func decodeLogOp(d *bare.Decoder, buf []byte) LogOp {
	var op LogOp
	switch k := d.Uint(); {
	case d.Err() != nil:
	case k == uint64(OpAddItem):
		op.Kind = OpAddItem
		op.ID = d.Array16()
		start := d.Offset()
		skipItemMetadata(d)
		if d.Err() == nil {
			// The decoder aliases its input; re-slice it by offsets.
			op.Meta = buf[start:d.Offset():d.Offset()]
		}
	case k == uint64(OpRemoveItems):
		op.Kind = OpRemoveItems
		n := d.Uint()
		if d.Err() == nil && n > uint64(d.Remaining()/xidSize) {
			d.Fail(fmt.Errorf("RemoveItems of %d items in %d bytes: %w", n, d.Remaining(), bare.ErrShort))
			break
		}
		op.IDs = make([]bupstash.Xid, n)
		for i := range op.IDs {
			op.IDs[i] = d.Array16()
		}
	case k == uint64(OpRecoverRemoved):
		op.Kind = OpRecoverRemoved
	case k <= 5:
		d.Fail(fmt.Errorf("%w (kind %d)", errNewerOp, k))
	default:
		d.Fail(fmt.Errorf("unknown operation kind %d", k))
	}
	return op
}

// skipItemMetadata steps over a VersionedItemMetadata, checking its
// structure but nothing it means: the reader of the item checks that.
func skipItemMetadata(d *bare.Decoder) {
	start := d.Offset()
	v := d.Uint()
	switch {
	case d.Err() != nil:
		return
	case v > 5:
		d.Fail(fmt.Errorf("unknown item metadata format %d", v+1))
		return
	case v > 2:
		d.Fail(fmt.Errorf("item metadata format %d is from a newer bupstash", v+1))
		return
	}
	d.Fixed(xidSize) // primary key id
	if v >= 1 {
		d.U64() // timestamp
	}
	skipTreeMeta(d)
	if d.Option() {
		skipTreeMeta(d)
	}
	d.Data() // encrypted secret metadata
	if d.Err() == nil && d.Offset()-start > maxItemMetadata {
		d.Fail(fmt.Errorf("item metadata of %d bytes", d.Offset()-start))
	}
}

func skipTreeMeta(d *bare.Decoder) {
	d.Uint()
	d.Uint()
	d.Fixed(addressSize)
}

// rawOp is an operation with the length of its encoding, from which the
// log's byte offsets follow.
type rawOp struct {
	LogOp
	size uint64
}

// decodeSyncLogOps decodes a SyncLogOps packet: a count and that many
// operations. An empty list ends the stream.
func decodeSyncLogOps(p []byte) ([]rawOp, error) {
	d := bare.NewDecoder(p)
	n := d.Uint()
	if d.Err() == nil && n > uint64(d.Remaining()) {
		return nil, fmt.Errorf("%w: SyncLogOps of %d operations in %d bytes", ErrProtocol, n, len(p))
	}
	ops := make([]rawOp, 0, n)
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		start := d.Offset()
		op := decodeLogOp(d, p)
		ops = append(ops, rawOp{op, uint64(d.Offset() - start)})
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: SyncLogOps: %w", ErrProtocol, err)
	}
	return ops, nil
}
