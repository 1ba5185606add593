package gcmframe

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Known-answer vectors of docs/backupy-format.md §8.
const (
	katKeyHex  = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	kat1Plain  = "Hello, Backupy! This is a small test backup.\n"
	kat1Zstd   = "28b52ffd040069010048656c6c6f2c204261636b757079212054686973206973206120736d616c6c2074657374206261636b75702e0a0e437d9e"
	kat1Nonce  = "a0a1a2a3a4a5a6a7a8a9aaab"
	kat1Blob   = "00000056a0a1a2a3a4a5a6a7a8a9aaabcead53d041cb6bbe622de2bf6b15ecfe32cd3a7be7c73b4dbc5a4eef0c8b1c72f217678cc2433f517fe861bb7d5ae198247033384cda143d3cc0f61d7db87e1231614d3650de5615361300000000"
	kat1SHA    = "8721987f7163abebf7826647df84de91b28f4a3e2be34a1ae11563a16d2e6742"
	katEmptySH = "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// katNonces yields the KAT-MULTI nonces: byte b of frame i is 0xa0+b+16i.
type katNonces struct{ frame int }

func (n *katNonces) Read(p []byte) (int, error) {
	if len(p) != NonceSize {
		return 0, fmt.Errorf("nonce read of %d bytes", len(p))
	}
	for b := range p {
		p[b] = byte(0xa0 + b + 16*n.frame)
	}
	n.frame++
	return len(p), nil
}

func katMultiPlain(n int) []byte {
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(j % 251)
	}
	return p
}

func seal(t testing.TB, key, plain []byte, nonces io.Reader) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriterNonces(&out, key, nonces)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes: frames must not depend on how the input arrives.
	for len(plain) > 0 {
		n := min(len(plain), 77777)
		if _, err := w.Write(plain[:n]); err != nil {
			t.Fatal(err)
		}
		plain = plain[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func decryptAll(key, blob []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(blob), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestKAT1(t *testing.T) {
	key, blob := unhex(t, katKeyHex), unhex(t, kat1Blob)
	if got := sha(blob); got != kat1SHA {
		t.Fatalf("sha256(blob) = %s", got)
	}
	zst, err := decryptAll(key, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zst, unhex(t, kat1Zstd)) {
		t.Fatalf("decrypted = %x", zst)
	}
	dec, err := zstd.NewReader(bytes.NewReader(zst))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plain, err := io.ReadAll(dec)
	if err != nil || string(plain) != kat1Plain {
		t.Fatalf("plaintext %q, %v", plain, err)
	}
	// Sealing with the vector's nonce reproduces the blob byte for byte.
	if got := seal(t, key, zst, bytes.NewReader(unhex(t, kat1Nonce))); !bytes.Equal(got, blob) {
		t.Fatalf("sealed = %x", got)
	}
	x, err := Scan(bytes.NewReader(blob), int64(len(blob)))
	if err != nil || x.Frames() != 1 || x.PlainSize() != 58 || !x.Regular() {
		t.Fatalf("Scan = %+v, %v", x, err)
	}
	c, _ := NewCipher(key)
	pt, err := x.ReadFrame(bytes.NewReader(blob), c, 0, nil)
	if err != nil || !bytes.Equal(pt, zst) {
		t.Fatalf("ReadFrame = %x, %v", pt, err)
	}
}

func TestKATEmpty(t *testing.T) {
	key := unhex(t, katKeyHex)
	blob := seal(t, key, nil, rand.Reader)
	if !bytes.Equal(blob, []byte{0, 0, 0, 0}) || sha(blob) != katEmptySH {
		t.Fatalf("empty blob = %x", blob)
	}
	pt, err := decryptAll(key, blob)
	if err != nil || len(pt) != 0 {
		t.Fatalf("decrypt = %x, %v", pt, err)
	}
	x, err := Scan(bytes.NewReader(blob), 4)
	if err != nil || x.Frames() != 0 || x.PlainSize() != 0 {
		t.Fatalf("Scan = %+v, %v", x, err)
	}
}

func TestKATMulti(t *testing.T) {
	key := unhex(t, katKeyHex)
	for _, tc := range []struct {
		n                 int
		blobSize          int
		headers, tags     []string
		plainSHA, blobSHA string
	}{
		{
			n: 2*PlainSize + 1234, blobSize: 2098486,
			headers:  []string{"0010001c", "0010001c", "000004ee"},
			tags:     []string{"5c59f76c6a948232233861c07bd4dbcd", "f34713fc76c729ebaeb73510fabd9e94", "e77a51c6364760811800ec40be3c279f"},
			plainSHA: "b06322a8570de773d78452ab50257c455eb14a7c179cdeedb96db810c2c81c02",
			blobSHA:  "e306c98eef174db1ca5af6454bb97ed13edfc365eb6b2d52ca9a868f33b75e4f",
		},
		{
			n: 2 * PlainSize, blobSize: 2097220,
			headers:  []string{"0010001c", "0010001c"},
			plainSHA: "1e075c8d478ad21844e33e830a695ef03a4d2488b69ee275bd8947618bb1be1e",
			blobSHA:  "3c32f4f8fb8b0a9905afcbb6631a1e8a0cfb7496c2179740249c33c6d909383f",
		},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			plain := katMultiPlain(tc.n)
			if sha(plain) != tc.plainSHA {
				t.Fatal("plaintext generator disagrees with the vector")
			}
			blob := seal(t, key, plain, &katNonces{})
			if len(blob) != tc.blobSize || sha(blob) != tc.blobSHA {
				t.Fatalf("blob %d bytes, sha256 %s", len(blob), sha(blob))
			}
			x, err := Layout(int64(len(blob)))
			if err != nil || x.Frames() != int64(len(tc.headers)) || x.PlainSize() != int64(tc.n) {
				t.Fatalf("Layout = %+v, %v", x, err)
			}
			for i, h := range tc.headers {
				f := x.Frame(int64(i))
				if got := hex.EncodeToString(blob[f.Offset : f.Offset+4]); got != h {
					t.Errorf("frame %d header %s, want %s", i, got, h)
				}
				if i < len(tc.tags) {
					if got := hex.EncodeToString(blob[f.End()-TagSize : f.End()]); got != tc.tags[i] {
						t.Errorf("frame %d tag %s, want %s", i, got, tc.tags[i])
					}
				}
			}
			got, err := decryptAll(key, blob)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("round trip failed: %v", err)
			}
		})
	}
}

// TestLayoutMaths checks the size formulas against real streams for the
// sizes docs/backupy-format.md §3.3 lists, plus the edges around a full
// frame.
func TestLayoutMaths(t *testing.T) {
	key := unhex(t, katKeyHex)
	M := PlainSize
	for _, n := range []int{0, 1, 1000, M - 1, M, M + 1, 2 * M, 3*M + 1234} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := katMultiPlain(n)
			blob := seal(t, key, plain, rand.Reader)
			wantFrames := (n + M - 1) / M
			if len(blob) != n+4+Overhead*wantFrames {
				t.Fatalf("blob is %d bytes", len(blob))
			}
			x, err := Scan(bytes.NewReader(blob), int64(len(blob)))
			if err != nil {
				t.Fatal(err)
			}
			if !x.Regular() || x.Frames() != int64(wantFrames) || x.PlainSize() != int64(n) {
				t.Fatalf("index k=%d N=%d regular=%v", x.Frames(), x.PlainSize(), x.Regular())
			}
			c, _ := NewCipher(key)
			for i := range x.Frames() {
				f := x.Frame(i)
				pt, err := x.ReadFrame(bytes.NewReader(blob), c, i, nil)
				if err != nil || !bytes.Equal(pt, plain[f.PlainOffset:f.PlainOffset+int64(f.PlainLen)]) {
					t.Fatalf("frame %d: %v", i, err)
				}
				if got := x.FrameAt(f.PlainOffset); got != i {
					t.Fatalf("FrameAt(%d) = %d", f.PlainOffset, got)
				}
				if got := x.FrameAt(f.PlainOffset + int64(f.PlainLen) - 1); got != i {
					t.Fatalf("FrameAt(end of %d) = %d", i, got)
				}
			}
		})
	}
}

func TestLayoutImpossibleSizes(t *testing.T) {
	for _, s := range []int64{0, 3, 5, 4 + 31, FullFrameSize + 4 + 1} {
		if _, err := Layout(s); !errors.Is(err, ErrLayout) {
			t.Errorf("Layout(%d) = %v, want ErrLayout", s, err)
		}
	}
	for _, s := range []int64{4, 4 + 32, 4 + 33, FullFrameSize + 4, FullFrameSize + 4 + 32} {
		if _, err := Layout(s); err != nil {
			t.Errorf("Layout(%d) = %v", s, err)
		}
	}
}

// irregularBlob hand-builds frames of the given plaintext sizes.
func irregularBlob(key []byte, sizes ...int) ([]byte, []byte) {
	c, _ := NewCipher(key)
	var blob, plain []byte
	var nonce [NonceSize]byte
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte(i + 1)}, n)
		rand.Read(nonce[:])
		blob = c.AppendFrame(blob, &nonce, p)
		plain = append(plain, p...)
	}
	return append(blob, 0, 0, 0, 0), plain
}

func TestScanIrregular(t *testing.T) {
	key := unhex(t, katKeyHex)
	blob, plain := irregularBlob(key, 1000, 0, PlainSize, 5)
	x, err := Scan(bytes.NewReader(blob), int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	if x.Regular() || x.Frames() != 4 || x.PlainSize() != int64(len(plain)) {
		t.Fatalf("index k=%d N=%d regular=%v", x.Frames(), x.PlainSize(), x.Regular())
	}
	c, _ := NewCipher(key)
	for off := int64(0); off < x.PlainSize(); off += 4099 {
		i := x.FrameAt(off)
		f := x.Frame(i)
		if f.PlainLen == 0 || off < f.PlainOffset || off >= f.PlainOffset+int64(f.PlainLen) {
			t.Fatalf("FrameAt(%d) = %+v", off, f)
		}
		pt, err := x.ReadFrame(bytes.NewReader(blob), c, i, nil)
		if err != nil || pt[off-f.PlainOffset] != plain[off] {
			t.Fatalf("offset %d: %v", off, err)
		}
	}
}

// TestDamage covers every way a stream can be broken, through Scan (no
// key) and through the Reader (key).
func TestDamage(t *testing.T) {
	key := unhex(t, katKeyHex)
	good := seal(t, key, katMultiPlain(3*PlainSize+777), rand.Reader)
	F := int64(FullFrameSize)
	flip := func(off int64) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x40
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name      string
		blob      []byte
		scanErr   error // nil: Scan succeeds
		readErr   error // from the streaming Reader, at readFrame
		readFrame int64
		atErr     error // from ReadFrame(readFrame), when Scan succeeds
	}{
		{"flipped ciphertext byte", flip(F + 500), nil, ErrAuth, 1, ErrAuth},
		{"flipped tag byte", flip(2*F - 1), nil, ErrAuth, 1, ErrAuth},
		{"flipped nonce byte", flip(2*F + 5), nil, ErrAuth, 2, ErrAuth},
		{"missing EOF marker", good[:len(good)-4], ErrTruncated, ErrTruncated, 4, nil},
		{"trailing bytes", cat(good, []byte("x")), ErrTrailingData, ErrTrailingData, 4, nil},
		{"trailing zero frame", cat(good, []byte{0, 0, 0, 0}), ErrTrailingData, ErrTrailingData, 4, nil},
		{"truncated mid-frame", good[:2*F+1000], ErrTruncated, ErrTruncated, 2, nil},
		{"truncated mid-header", good[:2*F+2], ErrTruncated, ErrTruncated, 2, nil},
		{"truncated at a frame boundary", good[:2*F], ErrTruncated, ErrTruncated, 2, nil},
		// The three-read structural check does not look at middle frames;
		// their length fields are checked when they are read.
		{"middle length below minimum", cat(good[:F], []byte{0, 0, 0, 27}, good[F+4:]), nil, ErrFrameSize, 1, ErrLayout},
		{"middle length above maximum", cat(good[:F], []byte{0, 0x10, 0, 0x1d}, good[F+4:]), nil, ErrFrameSize, 1, ErrLayout},
		{"first length below minimum", cat([]byte{0, 0, 0, 27}, unhex(t, kat1Blob)[4:]), ErrFrameSize, ErrFrameSize, 0, nil},
		{"wrong key", seal(t, bytes.Repeat([]byte{7}, 32), []byte("abc"), rand.Reader), nil, ErrAuth, 0, ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := Scan(bytes.NewReader(tc.blob), int64(len(tc.blob)))
			if tc.scanErr == nil && err != nil || tc.scanErr != nil && !errors.Is(err, tc.scanErr) {
				t.Fatalf("Scan error %v, want %v", err, tc.scanErr)
			}
			if err != nil {
				var fe *FrameError
				if !errors.As(err, &fe) || fe.Offset != x.Size() || fe.Frame != x.Frames() {
					t.Fatalf("Scan error %v does not name the first bad frame (index %d frames, %d bytes)", err, x.Frames(), x.Size())
				}
			} else {
				c, _ := NewCipher(key)
				_, err := x.ReadFrame(bytes.NewReader(tc.blob), c, tc.readFrame, nil)
				var fe *FrameError
				if !errors.Is(err, tc.atErr) || !errors.As(err, &fe) || fe.Frame != tc.readFrame || fe.Offset != x.Frame(tc.readFrame).Offset {
					t.Fatalf("ReadFrame(%d) error %v, want %v", tc.readFrame, err, tc.atErr)
				}
			}
			_, err = decryptAll(key, tc.blob)
			var fe *FrameError
			if !errors.Is(err, tc.readErr) || !errors.As(err, &fe) || fe.Frame != tc.readFrame {
				t.Fatalf("Reader error %v, want %v at frame %d", err, tc.readErr, tc.readFrame)
			}
		})
	}
}

// TestSwappedFramesPassTags documents the format's weakness: equal-size
// frames can be reordered without any tag failing.
func TestSwappedFramesPassTags(t *testing.T) {
	key := unhex(t, katKeyHex)
	plain := katMultiPlain(3 * PlainSize)
	blob := seal(t, key, plain, rand.Reader)
	F := FullFrameSize
	swapped := bytes.Clone(blob)
	copy(swapped[0:F], blob[F:2*F])
	copy(swapped[F:2*F], blob[0:F])
	got, err := decryptAll(key, swapped)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, plain) || sha(swapped) == sha(blob) {
		t.Fatal("swap had no effect")
	}
}

func TestReaderSmallReads(t *testing.T) {
	key := unhex(t, katKeyHex)
	plain := katMultiPlain(PlainSize + 3)
	blob := seal(t, key, plain, rand.Reader)
	r, _ := NewReader(bytes.NewReader(blob), key)
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, plain) || r.Frames() != 2 {
		t.Fatalf("got %d bytes in %d frames", len(got), r.Frames())
	}
}

func TestWriterMisuse(t *testing.T) {
	if _, err := NewWriter(io.Discard, make([]byte, 16)); !errors.Is(err, ErrKeySize) {
		t.Fatalf("short key: %v", err)
	}
	w, _ := NewWriter(io.Discard, make([]byte, 32))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("second Close succeeded")
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	bad, _ := NewWriterNonces(io.Discard, make([]byte, 32), bytes.NewReader(nil))
	bad.Write([]byte{1})
	if err := bad.Close(); err == nil {
		t.Fatal("Close without a nonce source succeeded")
	}
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		want int
		err  bool
	}{{0, 0, false}, {1, 0, true}, {27, 0, true}, {28, 28, false}, {MaxFrameLen, MaxFrameLen, false}, {MaxFrameLen + 1, 0, true}, {1 << 31, 0, true}} {
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], tc.v)
		got, err := ParseHeader(h[:])
		if got != tc.want || (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrFrameSize)) {
			t.Errorf("ParseHeader(%d) = %d, %v", tc.v, got, err)
		}
	}
}

// TestWriterReadFrom checks that io.Copy (ReadFrom, io.ReadFull into each
// frame, as the agent does) and plain Writes cut identical frames.
func TestWriterReadFrom(t *testing.T) {
	key := unhex(t, katKeyHex)
	for _, n := range []int{0, 1, PlainSize, PlainSize + 1, 2*PlainSize + 1234} {
		plain := katMultiPlain(n)
		viaWrite := seal(t, key, plain, &katNonces{})
		var out bytes.Buffer
		w, _ := NewWriterNonces(&out, key, &katNonces{})
		// A reader returning short reads, like a pipe.
		if _, err := io.Copy(w, iotestHalf{bytes.NewReader(plain)}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), viaWrite) {
			t.Fatalf("n=%d: ReadFrom and Write disagree", n)
		}
	}
}

// iotestHalf returns at most 1000 bytes per Read.
type iotestHalf struct{ r io.Reader }

func (h iotestHalf) Read(p []byte) (int, error) { return h.r.Read(p[:min(len(p), 1000)]) }
