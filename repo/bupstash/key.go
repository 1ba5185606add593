package bupstash

import (
	"fmt"
	"log/slog"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/internal/bupstashkey"
	"github.com/backupfs/backupfs/internal/redact"
	"lukechampine.com/blake3"
)

// Key is a parsed Bupstash key: a primary key, or a sub key holding a
// subset of the primary key's parts (see its capability methods). Its
// secrets never leave it: printed with any verb, or logged, a Key shows
// its kind and id only. (They are behind a pointer so that even fmt's
// paths that bypass Format, a %p of a Key value, show only an address.)
type Key struct {
	k *bupstashkey.Key
}

var (
	_ fmt.Formatter  = Key{}
	_ fmt.Stringer   = Key{}
	_ fmt.GoStringer = Key{}
	_ slog.LogValuer = Key{}
)

// ParseKey parses a key file: comments, then a PEM-like armored block
// whose tag must match the decoded key kind. Errors wrap ErrBadKey and
// quote nothing of the file.
func ParseKey(data []byte) (*Key, error) {
	k, err := bupstashkey.Parse(data)
	if err != nil {
		return nil, err
	}
	return &Key{k: k}, nil
}

// noKey stands for the parts of a Key not made by ParseKey: none.
var noKey bupstashkey.Key

// parts returns the key's contents (none for a zero Key).
func (k *Key) parts() *bupstashkey.Key {
	if k.k == nil {
		return &noKey
	}
	return k.k
}

// ID returns the key's id.
func (k *Key) ID() Xid { return k.parts().ID }

// PrimaryKeyID returns the id of the primary key the key derives from: its
// own for a primary key. Items record it.
func (k *Key) PrimaryKeyID() Xid { return k.parts().PrimaryKeyID }

// IsPrimary reports whether the key is a primary key.
func (k *Key) IsPrimary() bool { return k.parts().Primary }

// CanListItems reports whether the key can decrypt item metadata (tags,
// timestamps, sizes).
func (k *Key) CanListItems() bool {
	m := k.parts()
	return m.MetadataSK.OK && m.MetadataPSK.OK && m.MetadataPK.OK
}

// CanListContents reports whether the key can decrypt and verify item
// indexes (the saved file trees).
func (k *Key) CanListContents() bool {
	m := k.parts()
	return k.CanListItems() && m.IdxSK.OK && m.IdxPSK.OK && m.IdxHashKeyPart1.OK
}

// CanReadData reports whether the key can decrypt file data. In practice
// only primary keys can.
func (k *Key) CanReadData() bool {
	m := k.parts()
	return m.DataSK.OK && m.DataPSK.OK && m.DataHashKeyPart1.OK
}

// Kind describes the key for messages: "primary", "list-only sub", ….
func (k *Key) Kind() string { return k.parts().Kind() }

// String returns the key's kind and id, as in
// "bupstash.Key(primary b4516a10824916f79b9e909e0f8d42b8)".
func (k Key) String() string {
	if k.k == nil {
		return "bupstash.Key(none)"
	}
	return "bupstash.Key(" + k.k.Describe() + ")"
}

// GoString is String: %#v shows no secret either.
func (k Key) GoString() string { return k.String() }

// Format prints String for every verb (%v, %+v, %#v, %s, %q, %x …).
func (k Key) Format(f fmt.State, verb rune) { redact.Format(f, verb, k.String()) }

// LogValue logs the key as its kind and id.
func (k Key) LogValue() slog.Value {
	if k.k == nil {
		return slog.StringValue(k.String())
	}
	return slog.GroupValue(slog.String("kind", k.k.Kind()), slog.String("id", Xid(k.k.ID).String()))
}

func (k *Key) metadataOpener() *box.Opener { return box.NewOpener(k.k.MetadataSK.V, k.k.MetadataPSK.V) }
func (k *Key) indexOpener() *box.Opener    { return box.NewOpener(k.k.IdxSK.V, k.k.IdxPSK.V) }
func (k *Key) dataOpener() *box.Opener     { return box.NewOpener(k.k.DataSK.V, k.k.DataPSK.V) }

// dataHashPart1 and indexHashPart1 are the key's halves of the keyed-BLAKE3
// keys that address leaves; items hold the other halves.
func (k *Key) dataHashPart1() [32]byte  { return k.k.DataHashKeyPart1.V }
func (k *Key) indexHashPart1() [32]byte { return k.k.IdxHashKeyPart1.V }

// hashKey derives a keyed-BLAKE3 key from its two parts: part 1 from the
// reader's key file, part 2 from the item's secret metadata.
func hashKey(part1, part2 [32]byte) [32]byte {
	h := blake3.New(32, nil)
	h.Write(part1[:])
	h.Write(part2[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}
