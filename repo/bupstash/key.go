package bupstash

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// Key is a parsed Bupstash key: a primary key, or a sub key holding a subset
// of the primary key's fields (see its capability methods).
type Key struct {
	ID           Xid
	PrimaryKeyID Xid // ID itself for a primary key
	Primary      bool

	RollsumKey       keyField
	DataHashKeyPart1 keyField
	DataHashKeyPart2 keyField
	DataPK           keyField
	DataSK           keyField
	DataPSK          keyField
	IdxHashKeyPart1  keyField
	IdxHashKeyPart2  keyField
	IdxPK            keyField
	IdxSK            keyField
	IdxPSK           keyField
	MetadataPK       keyField
	MetadataSK       keyField
	MetadataPSK      keyField
}

// keyField is an optional 32-byte key part; primary keys have all of them.
type keyField struct {
	V  [32]byte
	OK bool
}

// fields lists the key's parts in their on-disk order.
func (k *Key) fields() []*keyField {
	return []*keyField{
		&k.RollsumKey, &k.DataHashKeyPart1, &k.DataHashKeyPart2,
		&k.DataPK, &k.DataSK, &k.DataPSK,
		&k.IdxHashKeyPart1, &k.IdxHashKeyPart2, &k.IdxPK, &k.IdxSK, &k.IdxPSK,
		&k.MetadataPK, &k.MetadataSK, &k.MetadataPSK,
	}
}

// CanListItems reports whether the key can decrypt item metadata (tags,
// timestamps, sizes).
func (k *Key) CanListItems() bool {
	return k.MetadataSK.OK && k.MetadataPSK.OK && k.MetadataPK.OK
}

// CanListContents reports whether the key can decrypt and verify item
// indexes (the saved file trees).
func (k *Key) CanListContents() bool {
	return k.CanListItems() && k.IdxSK.OK && k.IdxPSK.OK && k.IdxHashKeyPart1.OK
}

// CanReadData reports whether the key can decrypt file data. In practice
// only primary keys can.
func (k *Key) CanReadData() bool {
	return k.DataSK.OK && k.DataPSK.OK && k.DataHashKeyPart1.OK
}

// Kind describes the key for messages: "primary", "list-only sub", ….
func (k *Key) Kind() string {
	switch {
	case k.Primary:
		return "primary"
	case k.CanReadData():
		return "sub (data)"
	case k.CanListContents():
		return "list-contents sub"
	case k.CanListItems():
		return "list-only sub"
	default:
		return "put-only sub"
	}
}

func (k *Key) metadataOpener() *box.Opener { return box.NewOpener(k.MetadataSK.V, k.MetadataPSK.V) }
func (k *Key) indexOpener() *box.Opener    { return box.NewOpener(k.IdxSK.V, k.IdxPSK.V) }
func (k *Key) dataOpener() *box.Opener     { return box.NewOpener(k.DataSK.V, k.DataPSK.V) }

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

const (
	armorPrimary = "BUPSTASH KEY"
	armorSub     = "BUPSTASH SUB KEY"
)

// ParseKey parses a key file: comments, then a PEM-like armored block
// whose tag must match the decoded key kind.
func ParseKey(data []byte) (*Key, error) {
	tag, body, err := dearmor(data)
	if err != nil {
		return nil, err
	}
	k, err := decodeKey(body)
	if err != nil {
		return nil, err
	}
	switch {
	case k.Primary && tag != armorPrimary, !k.Primary && tag != armorSub:
		return nil, fmt.Errorf("%w: armor says %q but the key inside is a %s key", ErrBadKey, tag, k.Kind())
	}
	return k, nil
}

// dearmor finds the first BEGIN line and its END line, like Bupstash's
// parser: the text between is base64 with trailing whitespace stripped from
// every line.
func dearmor(data []byte) (tag string, body []byte, err error) {
	const begin, end, dashes = "-----BEGIN ", "-----END ", "-----"
	s := string(data)
	i := strings.Index(s, begin)
	if i < 0 {
		return "", nil, fmt.Errorf("%w: no -----BEGIN line", ErrBadKey)
	}
	s = s[i+len(begin):]
	j := strings.Index(s, dashes)
	if j <= 0 {
		return "", nil, fmt.Errorf("%w: malformed BEGIN line", ErrBadKey)
	}
	tag, s = s[:j], s[j+len(dashes):]
	k := strings.Index(s, end)
	if k < 0 {
		return "", nil, fmt.Errorf("%w: no -----END line", ErrBadKey)
	}
	inner, rest := s[:k], s[k+len(end):]
	l := strings.Index(rest, dashes)
	if l < 0 || rest[:l] != tag {
		return "", nil, fmt.Errorf("%w: BEGIN and END tags differ", ErrBadKey)
	}
	var b strings.Builder
	for _, line := range strings.Split(inner, "\n") {
		b.WriteString(strings.TrimRight(line, " \t\r\n\v\f"))
	}
	body, err = base64.StdEncoding.Strict().DecodeString(b.String())
	if err != nil {
		return "", nil, fmt.Errorf("%w: bad base64: %w", ErrBadKey, err)
	}
	return tag, body, nil
}

func decodeKey(b []byte) (*Key, error) {
	d := bare.NewDecoder(b)
	k := &Key{}
	switch v := d.Uint(); {
	case d.Err() != nil:
	case v == 0:
		k.Primary = true
		k.ID = d.Array16()
		k.PrimaryKeyID = k.ID
		for _, f := range k.fields() {
			f.V, f.OK = d.Array32(), true
		}
	case v == 1:
		k.ID = d.Array16()
		k.PrimaryKeyID = d.Array16()
		for _, f := range k.fields() {
			if d.Option() {
				f.V, f.OK = d.Array32(), true
			}
		}
	case v <= 5:
		return nil, fmt.Errorf("%w: key format %d is from a newer bupstash", ErrBadKey, v)
	default:
		return nil, fmt.Errorf("%w: unknown key format %d", ErrBadKey, v)
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return k, nil
}

// NewPrimaryKey makes a new random primary key, as `bupstash new-key`
// does. It is used by tests and the test-repository generator.
func NewPrimaryKey() (*Key, error) {
	k := &Key{Primary: true}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return nil, err
	}
	k.PrimaryKeyID = k.ID
	for _, f := range k.fields() {
		if _, err := rand.Read(f.V[:]); err != nil {
			return nil, err
		}
		f.OK = true
	}
	// The public halves follow from the secret ones.
	for _, pair := range [][2]*keyField{{&k.DataPK, &k.DataSK}, {&k.IdxPK, &k.IdxSK}, {&k.MetadataPK, &k.MetadataSK}} {
		pk, err := box.PublicKey(&pair[1].V)
		if err != nil {
			return nil, err
		}
		pair[0].V = pk
	}
	return k, nil
}

// EncodeKey returns the armored key file for k, in the layout Bupstash
// writes. It is used by tests and the test-repository generator.
func EncodeKey(k *Key) []byte {
	var e bare.Encoder
	tag := armorPrimary
	if k.Primary {
		e.Uint(0)
		e.Fixed(k.ID[:])
		for _, f := range k.fields() {
			e.Fixed(f.V[:])
		}
	} else {
		tag = armorSub
		e.Uint(1)
		e.Fixed(k.ID[:])
		e.Fixed(k.PrimaryKeyID[:])
		for _, f := range k.fields() {
			e.Option(f.OK)
			if f.OK {
				e.Fixed(f.V[:])
			}
		}
	}
	enc := base64.StdEncoding.EncodeToString(e.Buf)
	var out bytes.Buffer
	fmt.Fprintf(&out, "# This file contains a cryptographic key used by 'bupstash' to encrypt and decrypt data.\n#\n# key-id=%s\n", k.ID)
	if !k.Primary {
		fmt.Fprintf(&out, "# derived-from-key-id=%s\n", k.PrimaryKeyID)
	}
	fmt.Fprintf(&out, "\n-----BEGIN %s-----\n", tag)
	for len(enc) > 64 {
		out.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	fmt.Fprintf(&out, "%s\n-----END %s-----\n", enc, tag)
	return out.Bytes()
}
