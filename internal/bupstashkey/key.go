// Package bupstashkey is Bupstash's key file with its secrets in the
// open: the armored BARE encoding `bupstash new-key` writes, its parts,
// and making new keys. It is shared by the reader (repo/bupstash, whose
// Key keeps the secrets out of its public API) and the writers of test
// repositories (internal/testrepo, repo/bupstash/bupstashtest), which
// need the secrets to seal. Being internal, it is out of reach of any
// program but backupfs's own.
//
// A key file is comments, then a PEM-like block (BEGIN BUPSTASH KEY, or
// BUPSTASH SUB KEY) of base64 over a BARE union: variant 0 a primary key
// (its id and all fourteen 32-byte parts), variant 1 a sub key (its id,
// its primary key's id, and each part optional). Bupstash writes it in
// src/crypto.rs and src/keys.rs.
package bupstashkey

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// ErrBadKey reports a key file that cannot be parsed.
var ErrBadKey = errors.New("not a valid bupstash key")

// Part is an optional 32-byte key part; primary keys have all of them.
type Part struct {
	V  [32]byte
	OK bool
}

// Key is a key's contents. Every part but the public keys (DataPK, IdxPK,
// MetadataPK) is secret; a Key formats itself as its kind and id only.
type Key struct {
	ID           [16]byte
	PrimaryKeyID [16]byte // ID itself for a primary key
	Primary      bool

	RollsumKey       Part
	DataHashKeyPart1 Part
	DataHashKeyPart2 Part
	DataPK           Part
	DataSK           Part
	DataPSK          Part
	IdxHashKeyPart1  Part
	IdxHashKeyPart2  Part
	IdxPK            Part
	IdxSK            Part
	IdxPSK           Part
	MetadataPK       Part
	MetadataSK       Part
	MetadataPSK      Part
}

// Parts lists the key's parts in their on-disk order.
func (k *Key) Parts() []*Part {
	return []*Part{
		&k.RollsumKey, &k.DataHashKeyPart1, &k.DataHashKeyPart2,
		&k.DataPK, &k.DataSK, &k.DataPSK,
		&k.IdxHashKeyPart1, &k.IdxHashKeyPart2, &k.IdxPK, &k.IdxSK, &k.IdxPSK,
		&k.MetadataPK, &k.MetadataSK, &k.MetadataPSK,
	}
}

// Kind describes the key for messages: "primary", "list-only sub", ….
func (k *Key) Kind() string {
	switch {
	case k.Primary:
		return "primary"
	case k.DataSK.OK && k.DataPSK.OK && k.DataHashKeyPart1.OK:
		return "sub (data)"
	case k.MetadataSK.OK && k.MetadataPSK.OK && k.MetadataPK.OK && k.IdxSK.OK && k.IdxPSK.OK && k.IdxHashKeyPart1.OK:
		return "list-contents sub"
	case k.MetadataSK.OK && k.MetadataPSK.OK && k.MetadataPK.OK:
		return "list-only sub"
	default:
		return "put-only sub"
	}
}

// Describe is how a key shows in messages and logs: its kind and id (and
// its primary key's id for a sub key), never a secret.
func (k *Key) Describe() string {
	if k.Primary {
		return fmt.Sprintf("%s %s", k.Kind(), hex.EncodeToString(k.ID[:]))
	}
	return fmt.Sprintf("%s %s of %s", k.Kind(), hex.EncodeToString(k.ID[:]), hex.EncodeToString(k.PrimaryKeyID[:]))
}

const (
	armorPrimary = "BUPSTASH KEY"
	armorSub     = "BUPSTASH SUB KEY"
)

// Parse parses a key file: comments, then an armored block whose tag must
// match the kind of key inside.
func Parse(data []byte) (*Key, error) {
	tag, body, err := dearmor(data)
	if err != nil {
		return nil, err
	}
	k, err := decode(body)
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
		// The decoder's error quotes no input: only an offset.
		return "", nil, fmt.Errorf("%w: bad base64: %w", ErrBadKey, err)
	}
	return tag, body, nil
}

func decode(b []byte) (*Key, error) {
	d := bare.NewDecoder(b)
	k := &Key{}
	switch v := d.Uint(); {
	case d.Err() != nil:
	case v == 0:
		k.Primary = true
		k.ID = d.Array16()
		k.PrimaryKeyID = k.ID
		for _, p := range k.Parts() {
			p.V, p.OK = d.Array32(), true
		}
	case v == 1:
		k.ID = d.Array16()
		k.PrimaryKeyID = d.Array16()
		for _, p := range k.Parts() {
			if d.Option() {
				p.V, p.OK = d.Array32(), true
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

// NewPrimary makes a new random primary key, as `bupstash new-key` does.
func NewPrimary() (*Key, error) {
	k := &Key{Primary: true}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return nil, err
	}
	k.PrimaryKeyID = k.ID
	for _, p := range k.Parts() {
		if _, err := rand.Read(p.V[:]); err != nil {
			return nil, err
		}
		p.OK = true
	}
	// The public halves follow from the secret ones.
	for _, pair := range [][2]*Part{{&k.DataPK, &k.DataSK}, {&k.IdxPK, &k.IdxSK}, {&k.MetadataPK, &k.MetadataSK}} {
		pk, err := box.PublicKey(&pair[1].V)
		if err != nil {
			return nil, err
		}
		pair[0].V = pk
	}
	return k, nil
}

// Encode returns the armored key file for k, in the layout Bupstash
// writes.
func (k *Key) Encode() []byte {
	var e bare.Encoder
	tag := armorPrimary
	if k.Primary {
		e.Uint(0)
		e.Fixed(k.ID[:])
		for _, p := range k.Parts() {
			e.Fixed(p.V[:])
		}
	} else {
		tag = armorSub
		e.Uint(1)
		e.Fixed(k.ID[:])
		e.Fixed(k.PrimaryKeyID[:])
		for _, p := range k.Parts() {
			e.Option(p.OK)
			if p.OK {
				e.Fixed(p.V[:])
			}
		}
	}
	enc := base64.StdEncoding.EncodeToString(e.Buf)
	var out bytes.Buffer
	fmt.Fprintf(&out, "# This file contains a cryptographic key used by 'bupstash' to encrypt and decrypt data.\n#\n# key-id=%s\n", hex.EncodeToString(k.ID[:]))
	if !k.Primary {
		fmt.Fprintf(&out, "# derived-from-key-id=%s\n", hex.EncodeToString(k.PrimaryKeyID[:]))
	}
	fmt.Fprintf(&out, "\n-----BEGIN %s-----\n", tag)
	for len(enc) > 64 {
		out.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	fmt.Fprintf(&out, "%s\n-----END %s-----\n", enc, tag)
	return out.Bytes()
}
