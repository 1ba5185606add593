package testrepo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"lukechampine.com/blake3"
)

// This file is a second, minimal decoder written for the tests only, so
// that the tests can check what the writer produced (leaf sizes, node
// shapes, compression footers, cursor arithmetic) without going through
// the project's reader, which the tests exercise separately.

// decodedTree is a hash tree read back leaf by leaf.
type decodedTree struct {
	leafLens []int
	footers  []byte     // compression footer of each leaf
	levels   [][]int    // node sizes (entries) per height, for shape checks
	lastAddr [][][]byte // per height: last child address of each node
	stream   []byte     // concatenated plaintext, when kept
}

// decodeTree reads a tree with the given recipient key and hash key,
// verifying every address and count.
func decodeTree(t testing.TB, dir string, meta bupstash.HTreeMeta, sk, psk, hk [32]byte, keep bool) *decodedTree {
	t.Helper()
	d := &decodedTree{levels: make([][]int, meta.Height+1), lastAddr: make([][][]byte, meta.Height+1)}
	opener := box.NewOpener(sk, psk)
	var walk func(addr bupstash.Address, height, count uint64)
	walk = func(addr bupstash.Address, height, count uint64) {
		b, err := os.ReadFile(filepath.Join(dir, "data", addr.String()))
		if err != nil {
			t.Fatalf("chunk %s: %v", addr, err)
		}
		if height == 0 {
			if count != 1 {
				t.Fatalf("leaf %s counted %d", addr, count)
			}
			plain, err := opener.Open(nil, b)
			if err != nil {
				t.Fatalf("leaf %s: %v", addr, err)
			}
			data := testDecompress(t, plain)
			h := blake3.New(32, hk[:])
			h.Write(data)
			if !bytes.Equal(h.Sum(nil), addr[:]) {
				t.Fatalf("leaf %s: keyed address mismatch", addr)
			}
			d.leafLens = append(d.leafLens, len(data))
			d.footers = append(d.footers, plain[len(plain)-1])
			if keep {
				d.stream = append(d.stream, data...)
			}
			return
		}
		if len(b) == 0 || b[len(b)-1] != 0 {
			t.Fatalf("node %s: missing footer 0", addr)
		}
		entries := b[:len(b)-1]
		if sum := blake3.Sum256(entries); !bytes.Equal(sum[:], addr[:]) {
			t.Fatalf("node %s: address mismatch", addr)
		}
		if len(entries) == 0 || len(entries)%40 != 0 {
			t.Fatalf("node %s: %d bytes", addr, len(entries))
		}
		d.levels[height] = append(d.levels[height], len(entries))
		d.lastAddr[height] = append(d.lastAddr[height], entries[len(entries)-32:])
		var sum uint64
		for i := 0; i < len(entries); i += 40 {
			c := binary.LittleEndian.Uint64(entries[i:])
			var child bupstash.Address
			copy(child[:], entries[i+8:i+40])
			sum += c
			walk(child, height-1, c)
		}
		if sum != count {
			t.Fatalf("node %s: children hold %d leaves, parent says %d", addr, sum, count)
		}
	}
	walk(meta.Address, meta.Height, meta.DataChunkCount)
	if uint64(len(d.leafLens)) != meta.DataChunkCount {
		t.Fatalf("tree has %d leaves, metadata says %d", len(d.leafLens), meta.DataChunkCount)
	}
	return d
}

func testDecompress(t testing.TB, b []byte) []byte {
	t.Helper()
	if len(b) == 0 {
		t.Fatal("plaintext without footer")
	}
	payload := b[:len(b)-1]
	switch b[len(b)-1] {
	case 0:
		return payload
	case 1:
		size := binary.LittleEndian.Uint32(payload[len(payload)-4:])
		out := make([]byte, size)
		n, err := lz4.UncompressBlock(payload[:len(payload)-4], out)
		if err != nil || n != int(size) {
			t.Fatalf("lz4: %d of %d bytes, %v", n, size, err)
		}
		return out
	case 2:
		dec, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		var h zstd.Header
		if err := h.Decode(payload); err != nil || !h.HasFCS {
			t.Fatalf("zstd frame without content size: %v", err)
		}
		out, err := dec.DecodeAll(payload, nil)
		if err != nil || uint64(len(out)) != h.FrameContentSize {
			t.Fatalf("zstd: %d bytes, header says %d: %v", len(out), h.FrameContentSize, err)
		}
		return out
	}
	t.Fatalf("unknown footer %d", b[len(b)-1])
	return nil
}

// checkNodeShapes verifies Bupstash's node-closing rule: every node but the
// last of its level holds at least nodeMin bytes and was closed at an
// ff ff address or because one more entry would exceed nodeMax.
func checkNodeShapes(t testing.TB, d *decodedTree, o Options) {
	t.Helper()
	for h, sizes := range d.levels {
		for i, n := range sizes {
			if n > o.NodeMaxSize {
				t.Errorf("height %d node %d: %d bytes > max %d", h, i, n, o.NodeMaxSize)
			}
			if i == len(sizes)-1 {
				continue
			}
			last := d.lastAddr[h][i]
			split := last[0] == 0xff && last[1] == 0xff
			if n < o.NodeMinSize || !(split || n+40 > o.NodeMaxSize) {
				t.Errorf("height %d node %d: %d bytes closed without reason", h, i, n)
			}
		}
	}
}

// checkLeafSizes verifies leaf bounds: at most max, and at least min
// except for the leaves in short (leaves that end a batch or the stream).
func checkLeafSizes(t testing.TB, lens []int, o Options, short map[int]bool) {
	t.Helper()
	for i, n := range lens {
		if n > o.MaxChunkSize {
			t.Errorf("leaf %d: %d bytes > max %d", i, n, o.MaxChunkSize)
		}
		if n < o.MinChunkSize && !short[i] && i != len(lens)-1 {
			t.Errorf("leaf %d: %d bytes < min %d and not the end of a batch", i, n, o.MinChunkSize)
		}
	}
}

// cursorEntry is what the cursor check needs from an index entry.
type cursorEntry struct {
	path              string
	size              uint64
	delta, start, end uint64
}

// checkCursors replays docs/bupstash-format.md §10.5 against the real leaf
// lengths: every entry's relative cursor must point at exactly its bytes of
// the data stream, batches (recomputed here from the paths) must start at
// offset 0 of a fresh leaf and end on a leaf boundary, and the last entry
// must account for every leaf. It returns the leaves that end a batch.
func checkCursors(t testing.TB, es []cursorEntry, lens []int, batchBytes int64) map[int]bool {
	t.Helper()
	leafStart := make([]uint64, len(lens)+1)
	for i, n := range lens {
		leafStart[i+1] = leafStart[i] + uint64(n)
	}
	short := map[int]bool{}
	var c, off uint64 // running leaf, stream offset
	batchLen, curParent := 0, ""
	var batchBytesSoFar int64
	for i, e := range es {
		parent := rootParent
		if e.path != "." {
			parent, _ = splitPath(e.path)
		}
		first := i == 0 || parent != curParent || batchLen >= maxBatchEntries || batchBytesSoFar >= batchBytes
		if first {
			batchLen, batchBytesSoFar, curParent = 0, 0, parent
		}
		batchLen++
		batchBytesSoFar += int64(e.size)
		last := i == len(es)-1
		if !last {
			np := rootParent
			if es[i+1].path != "." {
				np, _ = splitPath(es[i+1].path)
			}
			last = np != parent || batchLen >= maxBatchEntries || batchBytesSoFar >= batchBytes
		}
		where := fmt.Sprintf("entry %d %q (cursor %d %d..%d at leaf %d)", i, e.path, e.delta, e.start, e.end, c)

		if c >= uint64(len(lens)) {
			if e.size != 0 || e.delta != 0 || e.start != 0 || e.end != 0 || off != leafStart[len(lens)] {
				t.Fatalf("%s: past the last leaf", where)
			}
			continue
		}
		if first && (e.start != 0 || leafStart[c] != off) {
			t.Fatalf("%s: a batch must start at offset 0 of a fresh leaf", where)
		}
		if leafStart[c]+e.start != off || e.start > uint64(lens[c]) {
			t.Fatalf("%s: starts at stream offset %d, want %d", where, leafStart[c]+e.start, off)
		}
		endLeaf := c + e.delta
		if endLeaf > uint64(len(lens)) || (endLeaf == uint64(len(lens)) && e.end != 0) {
			t.Fatalf("%s: ends past the last leaf", where)
		}
		if endLeaf < uint64(len(lens)) && e.end > uint64(lens[endLeaf]) {
			t.Fatalf("%s: ends past its leaf", where)
		}
		if e.delta == 0 && e.end < e.start {
			t.Fatalf("%s: ends before it starts", where)
		}
		if leafStart[endLeaf]+e.end != off+e.size {
			t.Fatalf("%s: covers %d bytes, size is %d", where, leafStart[endLeaf]+e.end-off, e.size)
		}
		if last {
			if e.end != 0 || (e.delta == 0 && e.start != 0) {
				t.Fatalf("%s: a batch must end with a forced split", where)
			}
			if e.delta > 0 {
				short[int(endLeaf)-1] = true
			}
		}
		c = endLeaf
		off += e.size
	}
	if c != uint64(len(lens)) && !(off == 0 && len(lens) == 1 && lens[0] == 0) {
		t.Fatalf("cursors end at leaf %d of %d", c, len(lens))
	}
	return short
}
