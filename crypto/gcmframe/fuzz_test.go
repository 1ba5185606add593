package gcmframe

import (
	"bytes"
	"encoding/binary"
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

// FuzzRoundTrip seals arbitrary plaintext in frames of a fuzzed size (1
// to 512 bytes, where the agent writes 1 MiB: the same layout in
// miniature, so that each run seals kilobytes, not megabytes) and reads it
// back both ways: the stream, and Scan with ReadFrame frame by frame. Full
// frames of the real size are covered by the unit tests.
func FuzzRoundTrip(f *testing.F) {
	key := unhex(f, katKeyHex)
	c, err := NewCipher(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(kat1Plain), uint16(15))
	f.Add([]byte{}, uint16(0))
	f.Add(bytes.Repeat([]byte{1}, 5000), uint16(511))
	f.Add([]byte("exactly two frames of eight"), uint16(7))
	f.Fuzz(func(t *testing.T, plain []byte, frame uint16) {
		// Small streams, many frames: what matters is the frame logic,
		// and a run that seals megabytes (or a million one-byte frames)
		// stalls the fuzzer.
		if len(plain) > 4<<10 {
			plain = plain[:4<<10]
		}
		size := 1 + int(frame)%512
		var buf bytes.Buffer
		// Nonces from a counter: crypto/rand's first call covers code
		// no later call does, which the fuzzer's minimizer then spends
		// a minute trying to reproduce.
		w := newWriterFrames(&buf, c, &counterNonces{}, size)
		w.Write(plain)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		blob := buf.Bytes()
		if got, err := decryptAll(key, blob); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("stream round trip: %v", err)
		}
		x, err := Scan(bytes.NewReader(blob), int64(len(blob)))
		if err != nil || x.PlainSize() != int64(len(plain)) || x.Frames() != int64((len(plain)+size-1)/size) {
			t.Fatalf("Scan: %v", err)
		}
		var random []byte
		for i := range x.Frames() {
			pt, err := x.ReadFrame(bytes.NewReader(blob), c, i, nil)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			random = append(random, pt...)
		}
		if !bytes.Equal(random, plain) {
			t.Fatal("random access differs from the plaintext")
		}
	})
}

// counterNonces yields distinct nonces from a counter. Only tests may seal
// with predictable nonces.
type counterNonces struct{ n uint64 }

func (c *counterNonces) Read(p []byte) (int, error) {
	clear(p)
	c.n++
	binary.BigEndian.PutUint64(p[len(p)-8:], c.n)
	return len(p), nil
}
