package gcmframe

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// FuzzFrameStream feeds arbitrary bytes to every parser in the package:
// Scan, ReadFrame on every frame Scan reports, and the streaming Reader.
// None may panic, Scan's index must stay inside the object, and the Reader
// and the random-access path must agree on the plaintext of a good stream.
func FuzzFrameStream(f *testing.F) {
	key := unhex(f, katKeyHex)
	f.Add(unhex(f, kat1Blob))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 28})
	f.Add(append(unhex(f, kat1Blob), 1))
	two, _ := irregularBlob(key, 3, 0, 40)
	f.Add(two)
	c, err := NewCipher(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		x, scanErr := Scan(bytes.NewReader(blob), int64(len(blob)))
		if x != nil {
			if x.Size() > int64(len(blob)) || x.PlainSize() < 0 || x.Frames() < 0 {
				t.Fatalf("index outside the object: S=%d N=%d k=%d", x.Size(), x.PlainSize(), x.Frames())
			}
		}
		var random []byte
		randomOK := scanErr == nil
		if x != nil {
			for i := range x.Frames() {
				fr := x.Frame(i)
				if fr.End() > int64(len(blob)) || fr.PlainLen < 0 {
					t.Fatalf("frame %d outside the object: %+v", i, fr)
				}
				pt, err := x.ReadFrame(bytes.NewReader(blob), c, i, nil)
				if err != nil {
					var fe *FrameError
					if !errors.As(err, &fe) {
						t.Fatalf("ReadFrame error %v is not a *FrameError", err)
					}
					randomOK = false
					break
				}
				if len(pt) != fr.PlainLen {
					t.Fatalf("frame %d gave %d bytes, index says %d", i, len(pt), fr.PlainLen)
				}
				random = append(random, pt...)
			}
		}
		r := NewReaderCipher(bytes.NewReader(blob), c)
		stream, err := io.ReadAll(r)
		if randomOK && (err != nil || !bytes.Equal(stream, random)) {
			t.Fatalf("random access succeeded but the stream gave %d bytes, %v", len(stream), err)
		}
		if err == nil && scanErr != nil {
			t.Fatalf("stream read cleanly but Scan failed: %v", scanErr)
		}
	})
}

// FuzzRoundTrip seals arbitrary plaintext and reads it back both ways.
// cross puts a full frame of zeros in front of it, so that the input's own
// bytes land in a second, short frame.
func FuzzRoundTrip(f *testing.F) {
	key := unhex(f, katKeyHex)
	f.Add([]byte(kat1Plain), false)
	f.Add([]byte{}, true)
	f.Add(bytes.Repeat([]byte{1}, 5000), true)
	f.Fuzz(func(t *testing.T, tail []byte, cross bool) {
		var plain []byte
		if cross {
			plain = make([]byte, PlainSize, PlainSize+len(tail))
		}
		plain = append(plain, tail...)
		var buf bytes.Buffer
		w, _ := NewWriterNonces(&buf, key, rand.Reader)
		w.Write(plain)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		blob := buf.Bytes()
		got, err := decryptAll(key, blob)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("stream round trip: %v", err)
		}
		x, err := Scan(bytes.NewReader(blob), int64(len(blob)))
		if err != nil || !x.Regular() || x.PlainSize() != int64(len(plain)) {
			t.Fatalf("Scan: %v", err)
		}
	})
}
