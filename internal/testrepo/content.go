package testrepo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
)

// Content is a regular file's data. Open must return a fresh reader each
// time, yielding the same bytes, so that tests can compare what the reader
// returns with what was written, and generated content costs no memory.
type Content interface {
	// Size is the length Open yields.
	Size() int64
	Open() io.Reader
}

// Bytes is content held in memory.
func Bytes(b []byte) Content { return bytesContent(b) }

// String is content held in memory.
func String(s string) Content { return bytesContent(s) }

type bytesContent []byte

func (b bytesContent) Size() int64     { return int64(len(b)) }
func (b bytesContent) Open() io.Reader { return bytes.NewReader(b) }

// Zeros is size zero bytes.
func Zeros(size int64) Content { return zeroContent(size) }

type zeroContent int64

func (z zeroContent) Size() int64     { return int64(z) }
func (z zeroContent) Open() io.Reader { return io.LimitReader(zeroReader{}, int64(z)) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Random is size incompressible pseudo-random bytes (ChaCha8) determined
// by seed.
func Random(size int64, seed uint64) Content { return randomContent{size, seed} }

type randomContent struct {
	size int64
	seed uint64
}

func (c randomContent) Size() int64 { return c.size }
func (c randomContent) Open() io.Reader {
	return io.LimitReader(rand.NewChaCha8(seed32(c.seed)), c.size)
}

// seed32 expands a 64-bit seed into a ChaCha8 seed.
func seed32(seed uint64) [32]byte {
	var s [32]byte
	x := seed
	for i := 0; i < 32; i += 8 {
		x = splitmix(x)
		binary.LittleEndian.PutUint64(s[i:], x)
	}
	return s
}

// splitmix is SplitMix64's output function: a cheap bijective mixer for
// deriving independent seeds.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// mix derives a seed from a seed and a number.
func mix(seed, n uint64) uint64 { return splitmix(seed ^ splitmix(n)) }

// Text is size bytes of pseudo-random text determined by seed: words and
// lines drawn from a fixed vocabulary, with some random bytes mixed in, so
// it compresses about 3:1 with zstd, like source code or logs.
func Text(size int64, seed uint64) Content { return textContent{size, seed} }

type textContent struct {
	size int64
	seed uint64
}

func (c textContent) Size() int64 { return c.size }
func (c textContent) Open() io.Reader {
	return &textReader{rng: rand.NewPCG(c.seed, 0x7465787420676e72), left: c.size, dict: textDict()}
}

// textReader copies runs from a shared text dictionary at pseudo-random
// places, with occasional runs of random letters. Runs are generated
// whole into seg, so the bytes do not depend on the reads' sizes.
type textReader struct {
	rng  *rand.PCG
	left int64
	dict []byte
	seg  [256]byte
	pend []byte
}

func (r *textReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		if len(r.pend) == 0 {
			r.fill()
		}
		k := copy(p[n:], r.pend)
		r.pend = r.pend[k:]
		n += k
	}
	r.left -= int64(n)
	return n, nil
}

func (r *textReader) fill() {
	x := r.rng.Uint64()
	length := 16 + int(x%192)
	if (x>>8)%8 == 0 {
		// A run of random lowercase letters and spaces.
		for i := 0; i < length; i += 8 {
			y := r.rng.Uint64()
			for j := i; j < min(i+8, length); j++ {
				c := byte(y % 27)
				y >>= 8
				if c == 26 {
					r.seg[j] = ' '
				} else {
					r.seg[j] = 'a' + c
				}
			}
		}
		r.pend = r.seg[:length]
		return
	}
	off := int((x >> 16) % uint64(len(r.dict)-length))
	r.pend = r.dict[off : off+length]
}

// textDict returns the shared vocabulary text: 64 KiB of lines of words.
var textDict = sync.OnceValue(func() []byte {
	words := []string{
		"the", "backup", "repository", "chunk", "leaf", "index", "tree", "file", "data",
		"stream", "key", "item", "snapshot", "restore", "mount", "verify", "address",
		"cache", "reader", "writer", "encrypt", "decrypt", "compress", "func", "return",
		"if", "err", "nil", "for", "range", "int", "string", "byte", "struct", "type",
		"package", "import", "var", "const", "case", "switch", "default", "error",
		"of", "and", "to", "in", "is", "that", "with", "as", "on", "by", "at", "from",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < 64<<10 {
		n := 3 + rng.IntN(12)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[rng.IntN(len(words))])
		}
		if rng.IntN(3) == 0 {
			fmt.Fprintf(&b, " %d", rng.IntN(100000))
		}
		b.WriteString(";\n")
	}
	return b.Bytes()
})

// Region is a data region of a sparse file.
type Region struct {
	Offset int64
	Data   Content
}

// Sparse is a file of size bytes that is all holes (zeros) except for the
// given regions, which must not overlap and must fit in size. Its entry is
// marked sparse. Bupstash stores every byte, holes included.
func Sparse(size int64, regions ...Region) Content {
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	return sparseContent{size: size, regions: rs}
}

type sparseContent struct {
	size    int64
	regions []Region
}

func (s sparseContent) Size() int64  { return s.size }
func (s sparseContent) Sparse() bool { return true }

func (s sparseContent) Open() io.Reader {
	var parts []io.Reader
	pos := int64(0)
	for _, r := range s.regions {
		end := r.Offset + r.Data.Size()
		if r.Offset < pos || end > s.size {
			return &errReader{errors.New("sparse regions overlap or exceed the file size")}
		}
		parts = append(parts, Zeros(r.Offset-pos).Open(), r.Data.Open())
		pos = end
	}
	parts = append(parts, Zeros(s.size-pos).Open())
	return io.MultiReader(parts...)
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }
