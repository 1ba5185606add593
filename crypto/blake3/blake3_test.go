package blake3

import (
	"bytes"
	"math/rand/v2"
	"testing"

	ref "lukechampine.com/blake3"
)

// reference hashes with the library's own Hasher.
func reference(key []byte, b []byte) [32]byte {
	h := ref.New(32, key)
	h.Write(b)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func lengths() []int {
	ls := []int{0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3 * 1024,
		batch - 1, batch, batch + 1, 2 * batch, 2*batch + 1, 3*batch - 1, 17 * batch, 31*batch + 1000,
		1 << 20, 1<<20 + 1, 5<<20 + 12345}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		ls = append(ls, rng.IntN(200_000))
	}
	return ls
}

// TestMatchesLibrary checks digests against lukechampine.com/blake3 for
// lengths around every chunk, batch and subtree boundary, plain and keyed,
// written whole and in random pieces.
func TestMatchesLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 6<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var key [32]byte
	copy(key[:], data[100:])
	for _, n := range lengths() {
		b := data[:n]
		if got, want := Sum256(b), reference(nil, b); got != want {
			t.Fatalf("plain, %d bytes: %x, want %x", n, got, want)
		}
		if got, want := SumKeyed(&key, b), reference(key[:], b); got != want {
			t.Fatalf("keyed, %d bytes: %x, want %x", n, got, want)
		}
		h := NewKeyed(&key)
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(3*batch))
			if rng.IntN(4) == 0 {
				k = min(len(rest), 1+rng.IntN(100))
			}
			h.Write(rest[:k])
			rest = rest[k:]
		}
		if got, want := h.Sum256(), reference(key[:], b); got != want {
			t.Fatalf("keyed, %d bytes in pieces: %x, want %x", n, got, want)
		}
	}
}

// TestKnownAnswer is the BLAKE3 test vector for the empty input.
func TestKnownAnswer(t *testing.T) {
	got := Sum256(nil)
	want := []byte{0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9, 0x49,
		0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f, 0x32, 0x62}
	if !bytes.Equal(got[:], want) {
		t.Fatalf("BLAKE3(\"\") = %x", got)
	}
}

func TestSumDoesNotChangeState(t *testing.T) {
	data := bytes.Repeat([]byte("backupfs"), 10_000)
	h := New()
	h.Write(data[:30_000])
	_ = h.Sum256()
	h.Write(data[30_000:])
	if got, want := h.Sum256(), reference(nil, data); got != want {
		t.Fatal("Sum256 changed the hasher's state")
	}
	h.Reset()
	h.Write(data)
	if got, want := h.Sum256(), reference(nil, data); got != want {
		t.Fatal("Reset did not start over")
	}
}

// BenchmarkHash compares this Hasher with the library's on a 2 MiB leaf.
// Run with -cpu 1 and 2: the library's fan-out is the difference.
func BenchmarkHash(b *testing.B) {
	data := make([]byte, 2<<20)
	var key [32]byte
	b.Run("sequential", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			SumKeyed(&key, data)
		}
	})
	b.Run("library", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			h := ref.New(32, key[:])
			h.Write(data)
			h.Sum(nil)
		}
	})
}
