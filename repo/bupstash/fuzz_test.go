package bupstash

import (
	"bytes"
	"context"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashwrite"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// Seed corpora come from the real fixtures, so the fuzzers start from
// genuine Bupstash bytes and mutate from there.

func addFiles(f *testing.F, pattern string) {
	paths, _ := filepath.Glob(filepath.Join(testdata, pattern))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	addFiles(f, "bupstash-0.12.1/keys/*.key")
	addFiles(f, "bupstash-0.10.3/*.key")
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKey(b)
		if err != nil {
			return
		}
		k2, err := ParseKey(k.k.Encode())
		if err != nil || *k2.k != *k.k {
			t.Fatalf("re-encoded key does not round-trip: %v", err)
		}
	})
}

func FuzzDecodeItem(f *testing.F) {
	addFiles(f, "bupstash-0.12.1/repo/items/*")
	addFiles(f, "bupstash-versions/*/repo/items/*")
	r := openFixtureKey(f, "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key")
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := r.decodeItem(Xid{1}, b)
		if err == nil && it.Format == 3 {
			// Format 3 binds the metadata to the item id; id {1} is not
			// any real item's, so a success would be a forgery.
			t.Fatal("metadata accepted under the wrong item id")
		}
	})
}

// indexStreams returns the decrypted index streams of the fixtures.
func indexStreams(f *testing.F) [][]byte {
	var out [][]byte
	for _, fx := range fixtures {
		r := openFixture(f, fx)
		for _, it := range listItems(f, r) {
			o := r.OpenItem(it)
			if o.index == nil {
				continue
			}
			var s []byte
			for n := uint64(0); n < o.index.meta.DataChunkCount; n++ {
				leaf, release, err := o.index.leafBytes(context.Background(), n)
				if err != nil {
					f.Fatal(err)
				}
				s = append(s, leaf...)
				release()
			}
			out = append(out, s)
		}
	}
	return out
}

func FuzzDecodeEntries(f *testing.F) {
	for _, s := range indexStreams(f) {
		f.Add(s)
		// Single entries too, so mutations stay local.
		d := bare.NewDecoder(s)
		for d.Remaining() > 0 {
			start := d.Offset()
			var e IndexEntry
			if decodeEntry(d, &e) != nil {
				break
			}
			f.Add(s[start:d.Offset()])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := bare.NewDecoder(b)
		for d.Remaining() > 0 {
			var e IndexEntry
			before := d.Offset()
			if err := decodeEntry(d, &e); err != nil {
				return
			}
			if d.Offset() <= before {
				t.Fatal("decoding made no progress")
			}
			validPath(e.Path)
		}
	})
}

func FuzzParseNode(f *testing.F) {
	addFiles(f, "bupstash-0.12.1/repo/data/72234dc7ffbbdbc1cfbb1041d5c96b355c09f3e7f9565fbc82f316b66e4695dd")
	addFiles(f, "bupstash-0.10.3/small-0.10.3/data/1f210bf57fb0e5fa809f18befbbc0d8a0e9f642bcf4d73e28ceb40262053bd15")
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var addr Address
		if len(b) > 0 {
			addr = blake3.Sum256(b[:len(b)-1])
		}
		entries, err := parseNode(b, addr)
		if err != nil {
			return
		}
		if len(entries)%nodeEntrySize != 0 || len(entries) == 0 {
			t.Fatalf("accepted a node of %d bytes", len(entries))
		}
		for i := 0; i < len(entries); i += nodeEntrySize {
			binary.LittleEndian.Uint64(entries[i:])
		}
	})
}

// fixtureLeaves returns the decrypted (still compressed, footer included)
// plaintexts of the fixtures' leaves whose chunk files are at most max
// bytes, in both trees of every item.
func fixtureLeaves(f *testing.F, fx fixture, max int64) [][]byte {
	var out [][]byte
	r := openFixture(f, fx)
	for _, it := range listItems(f, r) {
		o := r.OpenItem(it)
		for _, tr := range []*htree{o.data, o.index} {
			if tr == nil {
				continue
			}
			for n := uint64(0); n < tr.leafCount(); n++ {
				addr, err := tr.leafAddress(context.Background(), n)
				if err != nil {
					f.Fatal(err)
				}
				if r.storedSize(addr) > max {
					continue
				}
				env, err := r.src.ReadChunk(context.Background(), ChunkRef{Addr: addr}, nil)
				if err != nil {
					f.Fatal(err)
				}
				plain, err := tr.opener.Open(nil, env)
				if err != nil {
					f.Fatal(err)
				}
				out = append(out, plain)
			}
		}
	}
	return out
}

func FuzzDecompress(f *testing.F) {
	text := bytes.Repeat([]byte("backupfs "), 500)
	for _, c := range []Compression{CompressionNone, CompressionLZ4, CompressionZstd} {
		f.Add(bupstashwrite.Compress(text, byte(c)))
		f.Add(bupstashwrite.Compress(nil, byte(c)))
	}
	f.Add([]byte{3})
	// Genuine payloads: lz4 leaves of 0.10.3, zstd (and uncompressed)
	// leaves of 0.12.1, and the zstd index leaves of 0.11.x.
	footers := map[byte]int{}
	for _, fx := range fixtures {
		if fx.name == "maxbupst-small-0.10.3" || fx.name == "v0.12.1" || fx.name == "v0.11.1" {
			for _, p := range fixtureLeaves(f, fx, 64<<10) {
				if out, err := decompress(p); err != nil || len(out) > 256<<10 {
					continue // keep each run fast: no 8 MiB runs of zeros
				}
				f.Add(p)
				footers[p[len(p)-1]]++
			}
		}
	}
	if footers[footerLZ4] == 0 || footers[footerZstd] == 0 || footers[footerNone] == 0 {
		f.Fatalf("fixture seeds by footer: %v", footers)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decompress(b)
		if err != nil || len(b) == 0 {
			return
		}
		head := b[:min(len(b), 18)]
		tail := b[max(0, len(b)-5):]
		if size, ok, err := decompressedSize(len(b), head, tail); err == nil && ok && size != int64(len(out)) {
			t.Fatalf("decompressed %d bytes, header/footer declare %d", len(out), size)
		}
	})
}

// fixtureSecrets returns the plaintext parts of the fixtures' item files
// and their decrypted, decompressed secret metadata.
func fixtureSecrets(f *testing.F) (plains []*Item, secrets [][]byte) {
	for _, fx := range fixtures {
		r := openFixture(f, fx)
		paths, _ := filepath.Glob(filepath.Join(testdata, fx.repo, "items", "*"))
		for _, p := range paths {
			id, err := ParseXid(strings.TrimSuffix(filepath.Base(p), ".removed"))
			if err != nil {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			it, enc, err := decodePlain(id, b)
			if err != nil {
				f.Fatal(err)
			}
			plain, err := r.metaOpener.Open(nil, enc)
			if err != nil {
				f.Fatal(err)
			}
			secret, err := decompress(plain)
			if err != nil {
				f.Fatal(err)
			}
			plains = append(plains, it)
			secrets = append(secrets, bytes.Clone(secret))
		}
	}
	return plains, secrets
}

// encodeSecret is the secret metadata of it, with the given hash
// (docs/bupstash-format.md §8.3).
func encodeSecret(it *Item, hash [32]byte) []byte {
	var e bare.Encoder
	e.Fixed(hash[:])
	e.Fixed(it.SendKeyID[:])
	e.Fixed(it.secret.indexHashPart2[:])
	e.Fixed(it.secret.dataHashPart2[:])
	if it.Format == 1 {
		e.String(it.Timestamp.Format(time.RFC3339Nano))
	}
	keys := slices.Sorted(maps.Keys(it.Tags))
	e.Uint(uint64(len(keys)))
	for _, k := range keys {
		e.String(k)
		e.String(it.Tags[k])
	}
	e.Uint(it.DataSize)
	e.Uint(it.IndexSize)
	return e.Buf
}

// plainPart is a copy of it's plaintext metadata, in the given format.
func plainPart(it *Item, format int) *Item {
	p := &Item{ID: it.ID, Format: format, PrimaryKeyID: it.PrimaryKeyID, DataHTree: it.DataHTree, IndexHTree: it.IndexHTree}
	if format >= 2 {
		p.Timestamp = it.Timestamp
	}
	return p
}

// FuzzDecodeSecret decodes secret metadata against the plaintext part of a
// fixture item, as format 1, 2 or 3. Whatever is accepted must carry the
// plaintext's hash, bound the trees by the stream sizes, and encode back
// to the same metadata.
func FuzzDecodeSecret(f *testing.F) {
	plains, secrets := fixtureSecrets(f)
	for i, s := range secrets {
		f.Add(uint8(i), uint8(2), s) // format 3, as Bupstash wrote it
		full := plainPart(plains[i], 3)
		if err := full.decodeSecret(s); err != nil {
			f.Fatalf("fixture item %s: %v", plains[i].ID, err)
		}
		for _, format := range []int{1, 2} { // the same item as older Bupstash would have written it
			old := *full
			old.Format = format
			f.Add(uint8(i), uint8(format-1), encodeSecret(&old, plainPart(&old, format).plainHash()))
		}
	}
	f.Fuzz(func(t *testing.T, which, format uint8, b []byte) {
		base := plains[int(which)%len(plains)]
		it := plainPart(base, int(format%3)+1)
		if err := it.decodeSecret(b); err != nil {
			return
		}
		if want := it.plainHash(); !bytes.Equal(b[:32], want[:]) {
			t.Fatal("accepted secret metadata whose hash is not the plaintext's")
		}
		if err := it.checkLeafCounts(); err != nil {
			t.Fatalf("accepted %v", err)
		}
		again := plainPart(base, it.Format)
		if err := again.decodeSecret(encodeSecret(it, it.plainHash())); err != nil {
			t.Fatalf("re-encoded secret metadata refused: %v", err)
		}
		if again.SendKeyID != it.SendKeyID || again.secret.dataHashPart2 != it.secret.dataHashPart2 || again.secret.indexHashPart2 != it.secret.indexHashPart2 ||
			!maps.Equal(again.Tags, it.Tags) || again.DataSize != it.DataSize || again.IndexSize != it.IndexSize ||
			!again.Timestamp.Equal(it.Timestamp) {
			t.Fatalf("round trip: %+v, then %+v", it, again)
		}
	})
}

func FuzzTransactionLogs(f *testing.F) {
	addFiles(f, "bupstash-0.12.1/repo/wal/*.wal")
	f.Add([]byte{1, 0x10, 'i', 't', 'e', 'm', 's', '/', 'x', 0})
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		o := &overlay{files: map[string][]byte{}, base: base}
		_ = o.applyWAL(b)
		o = &overlay{files: map[string][]byte{}, base: base}
		_ = o.applyRollback(b)
		for p := range o.files {
			if _, err := journalPath(p); err != nil {
				t.Fatalf("overlay holds unsafe path %q", p)
			}
		}
		hotJournal(b)
	})
}

// memLeaves is a leafSource over in-memory leaves.
type memLeaves [][]byte

func (m memLeaves) leafCount() uint64 { return uint64(len(m)) }
func (m memLeaves) leafBytes(_ context.Context, n uint64) ([]byte, func(), error) {
	return m[n], func() {}, nil
}
func (m memLeaves) prefetch(context.Context, uint64) bool { return true }

// The streaming index decoder over fuzzed streams cut into leaves at
// fuzzed points, so entries straddle leaf boundaries anywhere.
func FuzzIndexReader(f *testing.F) {
	for _, s := range indexStreams(f) {
		f.Add(s, uint16(len(s)/3), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, s []byte, cut1, cut2 uint16) {
		a := min(int(cut1), len(s))
		b := max(a, min(int(cut2), len(s)))
		leaves := memLeaves{s[:a], s[a:b], s[b:]}
		it := &Item{IndexSize: uint64(len(s)), DataSize: 1 << 40, DataHTree: HTreeMeta{DataChunkCount: 1 << 40}}
		r := &IndexReader{item: it, leaves: leaves, log: quietLog}
		var whole []*IndexEntry
		for {
			e, err := r.Next(context.Background())
			if err != nil {
				break
			}
			whole = append(whole, e)
		}
		// The same stream in one leaf decodes to the same entries.
		r1 := &IndexReader{item: it, leaves: memLeaves{s}, log: quietLog}
		for i := 0; ; i++ {
			e, err := r1.Next(context.Background())
			if err != nil {
				if i != len(whole) {
					t.Fatalf("one leaf: %d entries, three leaves: %d", i, len(whole))
				}
				return
			}
			if i >= len(whole) || !bytes.Equal(e.Path, whole[i].Path) || e.StreamOffset != whole[i].StreamOffset {
				t.Fatalf("entry %d differs between leaf layouts", i)
			}
		}
	})
}
