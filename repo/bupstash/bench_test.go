package bupstash

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/internal/bupstashwrite"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
	"lukechampine.com/blake3"
)

// memStore is a Source of chunks in memory, so benchmarks measure
// decoding rather than the disk. It lists no items.
type memStore map[Address][]byte

func (memStore) String() string { return "memory" }
func (memStore) Close() error   { return nil }
func (memStore) Items(context.Context, func(Xid) bool) (*ItemSet, error) {
	return &ItemSet{}, nil
}
func (memStore) Changed(context.Context, string) (bool, error) { return false, nil }

// ReadChunk copies like a read from disk would: callers decrypt in place.
func (m memStore) ReadChunk(_ context.Context, ref ChunkRef, pool *cache.BufferPool) ([]byte, error) {
	b, ok := m[ref.Addr]
	if !ok {
		return nil, ErrChunkMissing
	}
	out := pool.Get(len(b))
	copy(out, b)
	return out, nil
}

// benchData returns n bytes that compress about 2:1 with zstd, like
// typical file content: words drawn from a small vocabulary, with random
// bytes mixed in.
func benchData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 99))
	words := strings.Fields("the backup repository chunk leaf index tree file data stream key item snapshot " +
		"restore mount verify address cache reader writer encrypt decrypt compress")
	b := make([]byte, 0, n+64)
	for len(b) < n {
		if rng.IntN(4) == 0 {
			b = binary.LittleEndian.AppendUint64(b, rng.Uint64())
		} else {
			b = append(b, words[rng.IntN(len(words))]...)
			b = append(b, ' ')
		}
	}
	return b[:n]
}

// memRepository builds a repository in memory holding one raw item whose
// data stream is leaves, each compressed with c and sealed under the
// fixture key, under a single interior node (height 1).
func memRepository(tb testing.TB, leaves [][]byte, c Compression, cacheBytes int64) (*Repository, *Item) {
	tb.Helper()
	key, err := loadKey(testdata + "/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		tb.Fatal(err)
	}
	store := memStore{}
	sealer, err := box.NewSealer(key.k.DataPK.V, key.k.DataPSK.V)
	if err != nil {
		tb.Fatal(err)
	}
	var part2 [32]byte
	part2[0] = 7
	hk := hashKey(key.k.DataHashKeyPart1.V, part2)
	var node []byte
	var size uint64
	for _, l := range leaves {
		h := blake3.New(32, hk[:])
		h.Write(l)
		var a Address
		h.Sum(a[:0])
		store[a] = sealer.Seal(nil, bupstashwrite.Compress(l, byte(c)))
		node = binary.LittleEndian.AppendUint64(node, 1)
		node = append(node, a[:]...)
		size += uint64(len(l))
	}
	root := Address(blake3.Sum256(node))
	store[root] = append(node, footerNone)
	r := &Repository{
		key: key, log: quietLog, cache: cache.New(cacheBytes), src: store,
		nodeSpace: cache.NewSpace(), spaces: map[[32]byte]uint64{},
		dataOpener: key.dataOpener(),
	}
	it := &Item{
		ID:        Xid{1},
		DataHTree: HTreeMeta{Height: 1, DataChunkCount: uint64(len(leaves)), Address: root},
		DataSize:  size,
		secret:    &itemSecret{dataHashPart2: part2},
	}
	return r, it
}

// BenchmarkLeafOpen measures the work a cache miss costs per leaf:
// authenticate and decrypt the envelope, decompress, verify the keyed
// address. MB/s are of plaintext.
func BenchmarkLeafOpen(b *testing.B) {
	for _, size := range []int{1 << 20, 8 << 20} {
		for _, c := range []struct {
			name string
			c    Compression
		}{{"none", CompressionNone}, {"lz4", CompressionLZ4}, {"zstd", CompressionZstd}} {
			b.Run(fmt.Sprintf("%dMiB/%s", size>>20, c.name), func(b *testing.B) {
				r, it := memRepository(b, [][]byte{benchData(size, 1)}, c.c, 1<<30)
				tree := r.OpenItem(it).data
				addr, err := tree.leafAddress(context.Background(), 0)
				if err != nil {
					b.Fatal(err)
				}
				fill := tree.leafFill(0, addr)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					_, buf, err := fill(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					r.cache.Buffers().Put(buf) // as the cache does when the leaf is dropped
				}
			})
		}
	}
}

// BenchmarkSequentialRead reads a 128 MiB file of 8 MiB zstd leaves from
// start to end through a FileReader, as `backupfs cat` does, with a 64 MiB
// cache: every leaf is decoded anew each time (the cache holds eight), while
// buffers are recycled, as in a long read. Leaves are decoded ahead of the
// reader in parallel (readahead may use a quarter of the cache: two leaves).
func BenchmarkSequentialRead(b *testing.B) {
	const leafSize, nleaves = 8 << 20, 16
	leaves := make([][]byte, nleaves)
	for i := range leaves {
		leaves[i] = benchData(leafSize, uint64(i))
	}
	r, it := memRepository(b, leaves, CompressionZstd, 64<<20)
	for _, readSize := range []int{128 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("read=%dKiB", readSize>>10), func(b *testing.B) {
			b.SetBytes(leafSize * nleaves)
			b.ReportAllocs()
			buf := make([]byte, readSize)
			for b.Loop() {
				f, err := r.OpenItem(it).Data()
				if err != nil {
					b.Fatal(err)
				}
				// A plain loop: io.CopyBuffer into io.Discard would read
				// 8 KiB at a time (io.Discard is a ReaderFrom).
				rd := f.NewReader()
				for {
					_, err := rd.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkRandomRead reads 4 KiB at random offsets of a warm 64 MiB file:
// the cost of locating a leaf and copying out of the cache.
func BenchmarkRandomRead(b *testing.B) {
	leaves := make([][]byte, 8)
	for i := range leaves {
		leaves[i] = benchData(8<<20, uint64(i))
	}
	r, it := memRepository(b, leaves, CompressionZstd, 256<<20)
	f, _ := r.OpenItem(it).Data()
	io.Copy(io.Discard, f.NewReader())
	rng := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	rd := f.NewReader()
	for b.Loop() {
		if _, err := rd.ReadAt(buf, rng.Int64N(f.Size()-4096)); err != nil {
			b.Fatal(err)
		}
	}
}
