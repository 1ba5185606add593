// Package bupstash reads Bupstash repositories (Bupstash 0.9 to 0.12.x,
// repository schemas 5 to 8) strictly read-only.
//
// A Repository lists items; OpenItem gives access to one item's index (its
// saved file tree, decoded as a stream) and data (through io.ReaderAt-style
// readers that fetch only the chunks covering the requested bytes). Every
// chunk is read through a cache.ChunkCache, and every chunk's content is
// verified against its address before it is used: keyed BLAKE3 for leaves,
// plain BLAKE3 for interior tree nodes.
//
// What the reader relies on about the byte-level format is written down in
// docs/bupstash-format.md; comments cite its sections ("§7.3" there).
package bupstash

import (
	"encoding/hex"
	"fmt"
)

// Xid is a 16-byte identifier of an item or key.
type Xid [16]byte

func (x Xid) String() string { return hex.EncodeToString(x[:]) }

// ParseXid parses 32 hex characters (either case, as Bupstash accepts).
func ParseXid(s string) (Xid, error) {
	var x Xid
	if len(s) != 32 {
		return x, fmt.Errorf("id %q: want 32 hex characters", s)
	}
	if _, err := hex.Decode(x[:], []byte(s)); err != nil {
		return x, fmt.Errorf("id %q: %w", s, err)
	}
	return x, nil
}

// Address is the 32-byte address of a chunk: keyed BLAKE3 of a leaf's
// plaintext, or plain BLAKE3 of an interior node.
type Address [32]byte

func (a Address) String() string { return hex.EncodeToString(a[:]) }

// isHexName reports whether s is exactly n lowercase or uppercase hex digits.
func isHexName(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
