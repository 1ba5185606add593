package backupy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

const fullFrame = gcmframe.FullFrameSize

func corruptCopy(b []byte, fn func([]byte) []byte) []byte { return fn(bytes.Clone(b)) }

// TestCorruption covers each damage of §8.5. Every case must end in reads
// that fail with ErrCorrupt and an error naming the object and, where a
// frame is at fault, the frame and its ciphertext offset. No case may
// return wrong bytes.
func TestCorruption(t *testing.T) {
	m := newMultiFrame(t, 6<<20)
	frames := (len(m.blob) - 4 + fullFrame - 1) / fullFrame
	if frames < 4 {
		t.Fatalf("only %d frames", frames)
	}
	badChecksum := bytes.Clone(m.zst)
	badChecksum[len(badChecksum)-1] ^= 1
	for _, tc := range []struct {
		name string
		blob []byte
		sha  string // token sha256 claim
		// atListing: the damage is visible without a key.
		atListing bool
		cause     error
		frame     int // frame named in the error, -1 for none
		// zstOK: the .zst view reads cleanly before a full pass (the
		// damage is invisible to frame tags).
		zstOK bool
	}{
		{name: "flipped byte in frame 2", blob: corruptCopy(m.blob, func(b []byte) []byte { b[2*fullFrame+1000] ^= 1; return b }),
			cause: gcmframe.ErrAuth, frame: 2},
		{name: "flipped tag byte in the last frame", blob: corruptCopy(m.blob, func(b []byte) []byte { b[len(b)-5] ^= 0x80; return b }),
			cause: gcmframe.ErrAuth, frame: frames - 1},
		{name: "missing EOF marker", blob: m.blob[:len(m.blob)-4], atListing: true,
			cause: gcmframe.ErrTruncated, frame: frames},
		{name: "trailing bytes", blob: append(bytes.Clone(m.blob), "junk"...), atListing: true,
			cause: gcmframe.ErrTrailingData, frame: frames},
		{name: "truncated mid-frame", blob: m.blob[:2*fullFrame+5000], atListing: true,
			cause: gcmframe.ErrTruncated, frame: 2},
		{name: "bad middle header length", blob: corruptCopy(m.blob, func(b []byte) []byte { copy(b[fullFrame:], []byte{0, 0, 0, 27}); return b }),
			cause: gcmframe.ErrFrameSize, frame: 1},
		{name: "swapped full frames", blob: corruptCopy(m.blob, func(b []byte) []byte {
			f1 := bytes.Clone(b[fullFrame : 2*fullFrame])
			copy(b[fullFrame:], b[2*fullFrame:3*fullFrame])
			copy(b[2*fullFrame:], f1)
			return b
		}), cause: errZstd, frame: -1, zstOK: true},
		{name: "swapped full frames with known sha256", sha: shaHex(m.blob), blob: corruptCopy(m.blob, func(b []byte) []byte {
			f1 := bytes.Clone(b[fullFrame : 2*fullFrame])
			copy(b[fullFrame:], b[2*fullFrame:3*fullFrame])
			copy(b[2*fullFrame:], f1)
			return b
		}), cause: errZstd, frame: -1, zstOK: true},
		{name: "cut at a frame boundary with a new marker", blob: append(bytes.Clone(m.blob[:2*fullFrame]), 0, 0, 0, 0),
			cause: errZstd, frame: -1, zstOK: true},
		{name: "zstd checksum", blob: agentEncrypt(t, badChecksum, m.key), cause: errZstd, frame: -1, zstOK: true},
		{name: "sha256 mismatch", blob: m.blob, sha: strings.Repeat("ab", 32), cause: errHashMismatch, frame: -1, zstOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			kr := NewKeyring()
			kr.AddToken(mustToken(t, tokenFor(m.key, "multi", tc.sha)), "test")
			ts := newTestStore(t, kr, map[string][]byte{m.name: tc.blob})
			b := ts.blob(m.name)
			if b.Kind != KindEncrypted {
				t.Fatalf("kind %s", b.Kind)
			}
			if (b.Corrupt() != nil) != tc.atListing {
				t.Fatalf("corrupt at listing = %v", b.Corrupt())
			}
			main := ts.file(m.name, FileMain)
			if !strings.HasSuffix(main.Name(), ".pgdump") {
				t.Fatalf("main view %s", main.Name())
			}
			if tc.zstOK {
				z, err := readAll(ctx, ts.file(m.name, FileZst), 1<<20)
				if err != nil {
					t.Fatalf("zst view before a pass: %v", err)
				}
				if len(z) == 0 {
					t.Fatal("zst view empty")
				}
			}
			got, err := readAll(ctx, main, 256<<10)
			markerAt := int64(-1)
			if tc.frame == frames {
				markerAt = int64(len(m.blob) - 4)
			}
			checkCorruptErr(t, err, m.name, tc.cause, tc.frame, markerAt)
			if !bytes.HasPrefix(m.dump, got) {
				t.Fatal("returned bytes that are not the dump")
			}
			// From now on everything decoded fails, even fresh handles,
			// the .zst view and Size.
			if _, err := readAll(ctx, ts.file(m.name, FileZst), 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("zst view after detection: %v", err)
			}
			if _, err := main.Open(ctx); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open after detection: %v", err)
			}
			if st := xattr(main, "user.backupy.state"); st != "corrupt" {
				t.Fatalf("state %s", st)
			}
			// The raw object is still there to inspect... through meta.
			meta, _ := readAll(ctx, ts.file(m.name, FileMeta), 4096)
			if !bytes.Contains(meta, []byte(`"corruption"`)) {
				t.Fatalf("meta.json does not report the corruption: %s", meta)
			}
			// And a later mount remembers it without a pass.
			ts.reopen()
			if _, err := ts.file(m.name, FileMain).Open(ctx); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("corruption forgotten across mounts: %v", err)
			}
		})
	}
}

func checkCorruptErr(t *testing.T, err error, object string, cause error, frame int, markerAt int64) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, cause) {
		t.Fatalf("error %v, want ErrCorrupt and %v", err, cause)
	}
	msg := err.Error()
	if !strings.Contains(msg, object) {
		t.Fatalf("error %q does not name the object", msg)
	}
	if frame >= 0 {
		var fe *gcmframe.FrameError
		if !errors.As(err, &fe) || fe.Frame != int64(frame) {
			t.Fatalf("error %q does not name frame %d", msg, frame)
		}
		// Frames sit at multiples of the full frame size; the marker right
		// after the last, short frame.
		wantOff := int64(frame) * fullFrame
		if markerAt >= 0 {
			wantOff = markerAt
		}
		if want := fmt.Sprintf("frame %d at ciphertext offset %d", frame, wantOff); !strings.Contains(msg, want) {
			t.Fatalf("error %q lacks %q", msg, want)
		}
	}
}

func TestCorruptionFoundByRandomRead(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	blob := corruptCopy(m.blob, func(b []byte) []byte { b[3*fullFrame+77] ^= 4; return b })
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: blob})
	zh, err := ts.file(m.name, FileZst).Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer zh.Close()
	buf := make([]byte, 100)
	if _, err := zh.ReadAt(ctx, buf, 10); err != nil {
		t.Fatalf("intact frame 0: %v", err)
	}
	_, err = zh.ReadAt(ctx, buf, 3*gcmframe.PlainSize+5)
	checkCorruptErr(t, err, m.name, gcmframe.ErrAuth, 3, -1)
	// Intact frames are now refused too: the object is known bad.
	if _, err := zh.ReadAt(ctx, buf, 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read after detection: %v", err)
	}
}

func TestUnencryptedChecksum(t *testing.T) {
	ctx := context.Background()
	dump := mongoDump(t, 500_000)
	zst := agentZstd(t, dump, false)
	zst[len(zst)-2] ^= 1
	ts := newTestStore(t, nil, map[string][]byte{"run_u.enc": zst})
	_, err := ts.file("run_u.enc", FileMain).Size(ctx)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errZstd) || !errors.Is(err, zstd.ErrCRCMismatch) {
		t.Fatalf("Size = %v", err)
	}
}

func TestDamagedNonBackupyNames(t *testing.T) {
	// A truncated single-frame object without ".enc" whose one frame is
	// intact and simply lacks its marker is still recognised.
	blob := unhex(t, kat1Blob)
	ts := newTestStore(t, nil, map[string][]byte{"kat-no-marker": blob[:len(blob)-4]})
	if b := ts.blob("kat-no-marker"); b.Kind != KindEncrypted || !errors.Is(b.Corrupt(), gcmframe.ErrTruncated) {
		t.Fatalf("kind %s corrupt %v", b.Kind, b.Corrupt())
	}
}

// TestStreamingReaderVerifiesAtKnownSize: when the size is known up front
// (here from the zstd header), a reader that stops at that size, as the
// kernel does, still gets the end-of-stream checks on its last read.
func TestStreamingReaderVerifiesAtKnownSize(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	dump := sqliteDump(t, 4000)
	zst := agentZstd(t, dump, false)
	var h zstd.Header
	if err := h.Decode(zst); err != nil || !h.HasFCS {
		t.Fatalf("want a header with a content size: %v", err)
	}
	zst[len(zst)-1] ^= 1 // the content checksum
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "f", "")), "t")
	ts := newTestStore(t, kr, map[string][]byte{"run_f.enc": agentEncrypt(t, zst, key)})
	main := ts.file("run_f.enc", FileMain)
	size, ok := main.SizeKnown()
	if !ok || size != int64(len(dump)) {
		t.Fatalf("size %d %v, dump %d", size, ok, len(dump))
	}
	hd, err := main.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	buf := make([]byte, size)
	_, err = hd.ReadAt(ctx, buf, 0)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, zstd.ErrCRCMismatch) {
		t.Fatalf("read of the whole known size = %v", err)
	}
}

// Swapping frame 0 with another full frame passes every frame tag and hides
// the zstd magic, so the object would be shown as an undecoded .bin view
// that no pass ever checks. With the object's sha256 known (here from the
// token), that is caught when the object is first looked at.
func TestSwappedFirstFrameWithKnownSHA(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	swapped := corruptCopy(m.blob, func(b []byte) []byte {
		f0 := bytes.Clone(b[:fullFrame])
		copy(b, b[fullFrame:2*fullFrame])
		copy(b[fullFrame:], f0)
		return b
	})
	ts := newTestStore(t, m.keyring(t, true), map[string][]byte{m.name: swapped})
	b := ts.blob(m.name)
	files, err := ts.Store.Files(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(b.Corrupt(), errHashMismatch) {
		t.Fatalf("corruption %v, want the sha256 mismatch", b.Corrupt())
	}
	for _, f := range files {
		if f.Kind() == FileRaw || f.Kind() == FileMeta { // these tell the truth about the object
			continue
		}
		if _, err := readAll(ctx, f, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", f.Name(), err)
		}
	}
}
