// Package bupstashtest forges Bupstash repository objects by hand, for tests
// of the reader: item metadata of every format (V1 to V3), index entries of
// every format (V1 to V5), sealed leaves and interior nodes, valid or
// deliberately not (docs/bupstash-format.md §8, §10.3 and §7 describe
// them). No Bupstash version that can still be run writes V1/V2 items or
// entries, and no real tool writes impossible trees, so the tests that need
// them build them here. The product never imports this package;
// internal/testrepo is the generator for realistic (V3, schema 8)
// repositories.
package bupstashtest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashkey"
	"github.com/backupfs/backupfs/internal/bupstashwrite"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// Repo is a repository directory that forged objects are written into.
// Failures end the test.
type Repo struct {
	t   testing.TB
	Dir string
	Key *bupstash.Key // a primary key, as a reader takes it: items are sealed for it
	key *bupstashkey.Key

	// DataPart2 and IdxPart2 are the hash key second parts that leaves are
	// addressed with and items record (docs/bupstash-format.md §5.4). They
	// default to the key's.
	DataPart2, IdxPart2 [32]byte

	meta, data, idx *box.Sealer
}

// Create lays out an empty repository of the given schema (5 to 8) in dir,
// as `bupstash init` (or a migration to that schema) leaves it.
func Create(t testing.TB, dir, keyFile string, schema int) *Repo {
	t.Helper()
	for _, d := range []string{"items", "data", "meta"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var gen [16]byte
	rand.Read(gen[:])
	files := map[string][]byte{
		"meta/schema_version": []byte(strconv.Itoa(schema)),
		"meta/gc_generation":  []byte(hex.EncodeToString(gen[:])),
		"meta/storage_engine": []byte(`"DirStore"`),
		"repo.oplog":          nil,
		"repo.lock":           nil,
		"tx.lock":             nil,
	}
	if schema >= 8 {
		files["tx.wal"] = nil
		files["tx.seq"] = make([]byte, 8)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Open(t, dir, keyFile)
}

// Open forges objects into an existing repository (a copy of a fixture,
// say) for the primary key in keyFile.
func Open(t testing.TB, dir, keyFile string) *Repo {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bupstashkey.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	r := &Repo{t: t, Dir: dir, key: key, DataPart2: key.DataHashKeyPart2.V, IdxPart2: key.IdxHashKeyPart2.V}
	if r.Key, err = bupstash.ParseKey(b); err != nil {
		t.Fatal(err)
	}
	if r.meta, err = box.NewSealer(key.MetadataPK.V, key.MetadataPSK.V); err != nil {
		t.Fatal(err)
	}
	if r.data, err = box.NewSealer(key.DataPK.V, key.DataPSK.V); err != nil {
		t.Fatal(err)
	}
	if r.idx, err = box.NewSealer(key.IdxPK.V, key.IdxPSK.V); err != nil {
		t.Fatal(err)
	}
	return r
}

// WriteKey writes the repository's key file to path.
func (r *Repo) WriteKey(path string) {
	r.t.Helper()
	if err := os.WriteFile(path, r.key.Encode(), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// LoadKey reads a key file as a reader takes it. (The program reads key
// files as untrusted input, in its front end; tests read their fixtures.)
func LoadKey(path string) (*bupstash.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return bupstash.ParseKey(b)
}

func hashKey(part1, part2 [32]byte) *[32]byte {
	h := blake3.New(32, nil)
	h.Write(part1[:])
	h.Write(part2[:])
	var k [32]byte
	h.Sum(k[:0])
	return &k
}

func (r *Repo) store(addr bupstash.Address, b []byte) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.Dir, "data", addr.String()), b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// DataLeaf seals plain as a data leaf compressed with c and returns its
// address.
func (r *Repo) DataLeaf(plain []byte, c bupstash.Compression) bupstash.Address {
	r.t.Helper()
	addr := bupstash.Address(keyed(hashKey(r.key.DataHashKeyPart1.V, r.DataPart2), plain))
	r.store(addr, r.data.Seal(nil, bupstashwrite.Compress(plain, byte(c))))
	return addr
}

// IndexLeaf seals plain as an index leaf compressed with c and returns its
// address.
func (r *Repo) IndexLeaf(plain []byte, c bupstash.Compression) bupstash.Address {
	r.t.Helper()
	addr := bupstash.Address(keyed(hashKey(r.key.IdxHashKeyPart1.V, r.IdxPart2), plain))
	r.store(addr, r.idx.Seal(nil, bupstashwrite.Compress(plain, byte(c))))
	return addr
}

func keyed(k *[32]byte, b []byte) (sum [32]byte) {
	h := blake3.New(32, k[:])
	h.Write(b)
	h.Sum(sum[:0])
	return sum
}

// NodeEntry is one entry of an interior node: the number of leaves under
// a child, and the child's address.
type NodeEntry struct {
	Count uint64
	Addr  bupstash.Address
}

// Node stores an interior node holding entries, whatever their counts, and
// returns its address.
func (r *Repo) Node(entries ...NodeEntry) bupstash.Address {
	r.t.Helper()
	var b []byte
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.Count)
		b = append(b, e.Addr[:]...)
	}
	addr := bupstash.Address(blake3.Sum256(b))
	r.store(addr, append(b, 0)) // footer 0: nodes are never compressed
	return addr
}

// tree stores leaves under one interior node (or as the root itself when
// there is one leaf).
func (r *Repo) tree(leaves [][]byte, leaf func([]byte, bupstash.Compression) bupstash.Address, c bupstash.Compression) bupstash.HTreeMeta {
	if len(leaves) == 0 {
		leaves = [][]byte{nil} // an empty stream is one empty leaf
	}
	if len(leaves) == 1 {
		return bupstash.HTreeMeta{Height: 0, DataChunkCount: 1, Address: leaf(leaves[0], c)}
	}
	entries := make([]NodeEntry, len(leaves))
	for i, l := range leaves {
		entries[i] = NodeEntry{1, leaf(l, c)}
	}
	return bupstash.HTreeMeta{Height: 1, DataChunkCount: uint64(len(leaves)), Address: r.Node(entries...)}
}

// DataHTree stores a data stream cut into leaves.
func (r *Repo) DataHTree(leaves [][]byte, c bupstash.Compression) bupstash.HTreeMeta {
	r.t.Helper()
	return r.tree(leaves, r.DataLeaf, c)
}

// IndexHTree stores an index stream cut into leaves.
func (r *Repo) IndexHTree(leaves [][]byte, c bupstash.Compression) bupstash.HTreeMeta {
	r.t.Helper()
	return r.tree(leaves, r.IndexLeaf, c)
}

// Item is the metadata of an item to forge. Zero fields take defaults
// that make a valid item.
type Item struct {
	Format int          // 1, 2 or 3 (VersionedItemMetadata V1 to V3); default 3
	ID     bupstash.Xid // default: random

	PrimaryKeyID *bupstash.Xid // default: the key's
	Timestamp    time.Time     // V2/V3: kept to the millisecond; V1: written as RFC 3339
	// TimestampText replaces the V1 secret timestamp string.
	TimestampText string

	DataHTree  bupstash.HTreeMeta
	IndexHTree *bupstash.HTreeMeta

	SendKeyID *bupstash.Xid // default: the key's id
	Tags      map[string]string
	DataSize  uint64
	IndexSize uint64

	SecretCompression bupstash.Compression // of the secret metadata
	// BadHash replaces the plaintext hash with garbage.
	BadHash bool
}

func encodeTree(e *bare.Encoder, t bupstash.HTreeMeta) {
	e.Uint(t.Height)
	e.Uint(t.DataChunkCount)
	e.Fixed(t.Address[:])
}

// AddItem writes items/<id> and appends the item to the oplog, returning
// its id.
func (r *Repo) AddItem(it Item) bupstash.Xid {
	r.t.Helper()
	if it.Format == 0 {
		it.Format = 3
	}
	if it.ID == (bupstash.Xid{}) {
		rand.Read(it.ID[:])
	}
	pk := r.Key.PrimaryKeyID()
	if it.PrimaryKeyID != nil {
		pk = *it.PrimaryKeyID
	}
	send := r.Key.ID()
	if it.SendKeyID != nil {
		send = *it.SendKeyID
	}

	var plain bare.Encoder
	plain.Fixed(pk[:])
	if it.Format >= 2 {
		plain.U64(uint64(it.Timestamp.UnixMilli()))
	}
	encodeTree(&plain, it.DataHTree)
	plain.Option(it.IndexHTree != nil)
	if it.IndexHTree != nil {
		encodeTree(&plain, *it.IndexHTree)
	}
	// docs/bupstash-format.md §8.4: V1/V2 hash the plaintext alone, V3
	// binds it to the item id.
	h := blake3.New(32, nil)
	if it.Format == 3 {
		h.Write([]byte{3})
		h.Write(it.ID[:])
	}
	h.Write(plain.Buf)
	var hash [32]byte
	h.Sum(hash[:0])
	if it.BadHash {
		hash[0] ^= 0xff
	}

	var secret bare.Encoder
	secret.Fixed(hash[:])
	secret.Fixed(send[:])
	secret.Fixed(r.IdxPart2[:])
	secret.Fixed(r.DataPart2[:])
	if it.Format == 1 {
		ts := it.TimestampText
		if ts == "" {
			ts = it.Timestamp.UTC().Format(time.RFC3339Nano)
		}
		secret.String(ts)
	}
	names := make([]string, 0, len(it.Tags))
	for k := range it.Tags {
		names = append(names, k)
	}
	sort.Strings(names)
	secret.Uint(uint64(len(names)))
	for _, k := range names {
		secret.String(k)
		secret.String(it.Tags[k])
	}
	secret.Uint(it.DataSize)
	secret.Uint(it.IndexSize)

	var item bare.Encoder
	item.Uint(uint64(it.Format - 1))
	item.Fixed(plain.Buf)
	item.Data(r.meta.Seal(nil, bupstashwrite.Compress(secret.Buf, byte(it.SecretCompression))))

	if err := os.WriteFile(filepath.Join(r.Dir, "items", it.ID.String()), item.Buf, 0o644); err != nil {
		r.t.Fatal(err)
	}
	var op bare.Encoder
	op.Uint(0) // AddItem
	op.Fixed(it.ID[:])
	op.Fixed(item.Buf)
	f, err := os.OpenFile(filepath.Join(r.Dir, "repo.oplog"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(op.Buf); err != nil {
		r.t.Fatal(err)
	}
	return it.ID
}
