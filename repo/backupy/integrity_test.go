package backupy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

const fullFrame = gcmframe.FullFrameSize

func corruptCopy(b []byte, fn func([]byte) []byte) []byte { return fn(bytes.Clone(b)) }

// TestCorruption covers each damage of docs/backupy-format.md §7. Every case
// must end in reads that fail with ErrCorrupt and an error naming the object
// and, where a frame is at fault, the frame and its ciphertext offset. No
// case may return wrong bytes, or reach a clean end. Damage at a frame
// leaves what comes before it readable; damage only a full pass sees taints
// it all.
func TestCorruption(t *testing.T) {
	m := newMultiFrame(t, 6<<20)
	frames := (len(m.blob) - 4 + fullFrame - 1) / fullFrame
	if frames < 4 {
		t.Fatalf("only %d frames", frames)
	}
	badChecksum := bytes.Clone(m.zst)
	badChecksum[len(badChecksum)-1] ^= 1
	swap12 := func(b []byte) []byte {
		f1 := bytes.Clone(b[fullFrame : 2*fullFrame])
		copy(b[fullFrame:], b[2*fullFrame:3*fullFrame])
		copy(b[2*fullFrame:], f1)
		return b
	}
	for _, tc := range []struct {
		name string
		blob []byte
		sha  string // token sha256 claim
		// atListing: the damage is visible without a key.
		atListing bool
		cause     error
		frame     int // frame named in the error, -1 for none
		// zst: how a read of the whole .zst view before any pass ends:
		// "clean" (the damage is invisible to frame tags), "hash" (it
		// fails: the sequential read checks the known sha256), "" not
		// tried.
		zst string
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
		{name: "swapped full frames", blob: corruptCopy(m.blob, swap12), cause: errZstd, frame: -1, zst: "clean"},
		{name: "swapped full frames with known sha256", sha: shaHex(m.blob), blob: corruptCopy(m.blob, swap12),
			cause: errZstd, frame: -1},
		{name: "swapped full frames with known sha256, read as .zst", sha: shaHex(m.blob), blob: corruptCopy(m.blob, swap12),
			cause: errHashMismatch, frame: -1, zst: "hash"},
		{name: "cut at a frame boundary with a new marker", blob: append(bytes.Clone(m.blob[:2*fullFrame]), 0, 0, 0, 0),
			cause: errZstd, frame: -1, zst: "clean"},
		{name: "zstd checksum", blob: agentEncrypt(t, badChecksum, m.key), cause: errZstd, frame: -1, zst: "clean"},
		{name: "sha256 mismatch", blob: m.blob, sha: strings.Repeat("ab", 32), cause: errHashMismatch, frame: -1, zst: "hash"},
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
			var z []byte
			var zerr error
			if tc.zst != "" {
				z, zerr = readAll(ctx, ts.file(m.name, FileZst), 1<<20)
			}
			switch err := zerr; tc.zst {
			case "clean":
				if err != nil || len(z) == 0 {
					t.Fatalf("zst view before a pass: %d bytes, %v", len(z), err)
				}
			case "hash":
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errHashMismatch) {
					t.Fatalf("zst view read to its end with a known sha256: %v", err)
				}
			}
			var got []byte
			var err error
			if tc.frame%2 == 0 {
				got, err = readAll(ctx, main, 256<<10) // streaming
			} else {
				_, err = main.Size(ctx) // the shared job
				if err == nil {
					got, err = readAll(ctx, main, 256<<10)
				}
			}
			markerAt := int64(-1)
			if tc.frame == frames {
				markerAt = int64(len(m.blob) - 4)
			}
			checkCorruptErr(t, err, m.name, tc.cause, tc.frame, markerAt)
			if !bytes.HasPrefix(m.dump, got) {
				t.Fatal("returned bytes that are not the dump")
			}
			checkAfterDetection(t, ts, m, tc.frame >= 0)
			if !strings.Contains(ts.log.String(), m.name) {
				t.Fatalf("no log line names the object:\n%s", ts.log)
			}
			if tc.frame >= 0 && !strings.Contains(ts.log.String(), fmt.Sprintf("frame %d at offset ", tc.frame)) {
				t.Fatalf("no log line names frame %d:\n%s", tc.frame, ts.log)
			}

			// A later mount remembers it without a pass.
			before := passesStarted.Load()
			ts.reopen()
			if _, err := ts.Files(ctx, ts.blob(m.name)); err != nil {
				t.Fatal(err)
			}
			if err := ts.blob(m.name).Corrupt(); err == nil {
				t.Fatal("corruption forgotten across mounts")
			}
			checkAfterDetection(t, ts, m, tc.frame >= 0)
			if tc.frame < 0 && passesStarted.Load() != before {
				t.Fatal("a remembered corruption decoded again")
			}
		})
	}
}

// checkAfterDetection: once damage is known every decoded read that
// touches it fails, fresh handles included; reads before damage at a
// frame still work; the raw bytes, the state and meta.json tell the truth.
func checkAfterDetection(t *testing.T, ts *testStore, m *multiFrame, localized bool) {
	t.Helper()
	ctx := context.Background()
	name := m.name
	for _, f := range []*File{ts.file(name, FileMain), ts.file(name, FileZst)} {
		if _, err := readAll(ctx, f, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s read to its end after detection: %v", f.Name(), err)
		}
		h, err := f.Open(ctx)
		if err != nil {
			t.Fatalf("Open %s: %v", f.Name(), err)
		}
		want := m.dump
		if f.Kind() == FileZst {
			want = m.zst
		}
		buf := make([]byte, 4096)
		n, err := h.ReadAt(ctx, buf, 0)
		h.Close()
		switch {
		case localized && (err != nil || !bytes.Equal(buf[:n], want[:4096])):
			t.Fatalf("%s: read before the damage: %d bytes, %v", f.Name(), n, err)
		case !localized && !errors.Is(err, ErrCorrupt):
			t.Fatalf("%s: read of an object tainted as a whole: %v", f.Name(), err)
		}
	}
	if st := xattr(ts.file(name, FileMain), "user.backupy.state"); st != "corrupt" {
		t.Fatalf("state %s", st)
	}
	raw, err := readAll(ctx, ts.file(name, FileRaw), 1<<20)
	if disk, _ := os.ReadFile(filepath.Join(ts.dir, filepath.FromSlash(name))); err != nil || !bytes.Equal(raw, disk) {
		t.Fatalf("raw view of the corrupt object: %v", err)
	}
	meta, _ := readAll(ctx, ts.file(name, FileMeta), 4096)
	if !bytes.Contains(meta, []byte(`"corruption"`)) {
		t.Fatalf("meta.json does not report the corruption: %s", meta)
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
	// Frames before the damage still read (docs/backupy-format.md §7.1:
	// EIO only past the last good frame); frames after it do not, even
	// intact ones.
	if _, err := zh.ReadAt(ctx, buf, 10); err != nil {
		t.Fatalf("read before the damage: %v", err)
	}
	if _, err := zh.ReadAt(ctx, buf, 4*gcmframe.PlainSize+5); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read after the damage: %v", err)
	}
	if _, err := zh.ReadAt(ctx, buf, 3*gcmframe.PlainSize-50); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read straddling the damage: %v", err)
	}
	if b := ts.blob(m.name); b.State() != "corrupt" {
		t.Fatalf("state %s", b.State())
	}
}

func TestUnencryptedChecksum(t *testing.T) {
	ctx := context.Background()
	dump := mongoDump(t, 500_000)
	zst := agentZstd(t, dump, false)
	zst[len(zst)-2] ^= 1
	ts := newTestStore(t, nil, map[string][]byte{"run_u.enc": zst})
	main := ts.file("run_u.enc", FileMain)
	if _, err := main.Size(ctx); err != nil {
		t.Fatalf("Size of a corrupt object (it is listed, reads fail): %v", err)
	}
	_, err := readAll(ctx, main, 1<<20)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errZstd) || !errors.Is(err, zstd.ErrCRCMismatch) {
		t.Fatalf("read = %v", err)
	}
	// Its raw bytes stay visible, and the verdict needs no key, so a later
	// mount knows it.
	if f := ts.file("run_u.enc", FileRaw); f.Name() != "run_u.enc" {
		t.Fatalf("raw view %s", f.Name())
	}
	ts.reopen()
	ts.file("run_u.enc", FileMain)
	if err := ts.blob("run_u.enc").Corrupt(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("after reopen: %v", err)
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

// A hash mismatch depends on the hash a token claims, so it is not kept
// as a verdict: the computed hash is, and each mount compares it with what
// its own keys claim, without reading the object again.
func TestHashVerdictFollowsTheToken(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	withSHA := func(sha string) *Keyring {
		kr := NewKeyring()
		kr.AddToken(mustToken(t, tokenFor(m.key, "multi", sha)), "test")
		return kr
	}
	wrong := strings.Repeat("ab", 32)
	ts := newTestStore(t, withSHA(wrong), map[string][]byte{m.name: m.blob})
	if _, err := readAll(ctx, ts.file(m.name, FileMain), 1<<20); !errors.Is(err, errHashMismatch) {
		t.Fatalf("pass with a wrong token: %v", err)
	}
	if e, _ := ts.disk.lookup(ts.blob(m.name).id); e.Corrupt != "" || e.SHA256 != shaHex(m.blob) {
		t.Fatalf("index entry %+v", e)
	}
	for _, tc := range []struct{ sha, state string }{
		{shaHex(m.blob), "verified"},
		{"", "encrypted"},
		{wrong, "corrupt"},
	} {
		ts.opts.Keys = withSHA(tc.sha)
		ts.reopen()
		before := passesStarted.Load()
		main := ts.file(m.name, FileMain)
		if st := ts.blob(m.name).State(); st != tc.state {
			t.Fatalf("token sha256 %q: state %s, want %s", tc.sha, st, tc.state)
		}
		if d := passesStarted.Load() - before; d != 0 {
			t.Fatalf("%d passes: the remembered hash should have sufficed", d)
		}
		got, err := readAll(ctx, main, 1<<20)
		if tc.state == "corrupt" {
			if !errors.Is(err, errHashMismatch) {
				t.Fatalf("read with the wrong token again: %v", err)
			}
		} else if err != nil || !bytes.Equal(got, m.dump) {
			t.Fatalf("read with token sha256 %q: %v", tc.sha, err)
		}
	}
}

// A key found for an object by trial decryption binds no hash: here the
// token's key also opens a second object (the same key used twice), which
// must not be judged against the first object's hash. It is verified only
// if its own hash turns out to be the token's.
func TestTrialMatchBindsNoHash(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	blobA := agentEncrypt(t, agentZstd(t, pgDump(300_000), true), key)
	other := pgDump(200_000)
	blobB := agentEncrypt(t, agentZstd(t, other, true), key)
	copyA := bytes.Clone(blobA)
	tok := mustToken(t, tokenFor(key, "a", shaHex(blobA)))
	for _, ring := range []string{"token", "imported"} {
		t.Run(ring, func(t *testing.T) {
			kr := NewKeyring()
			if ring == "token" {
				kr.AddToken(tok, "token")
			} else {
				var err error
				if kr, err = ParseKeyring(strings.NewReader(strings.Join(KeyringLines(tok), "\n")), "ring"); err != nil {
					t.Fatal(err)
				}
			}
			ts := newTestStore(t, kr, map[string][]byte{
				"co/run_a.enc":   blobA,
				"co/elsewhere/b": blobB,
				"co/elsewhere/c": copyA,
			})
			b := ts.blob("co/elsewhere/b")
			if _, err := ts.Files(ctx, b); err != nil {
				t.Fatal(err)
			}
			if k := b.currentKey(); k == nil || k.how != "trial" || k.sha != "" || k.runID != "" {
				t.Fatalf("trial key bound to %+v", k)
			}
			if got, err := readAll(ctx, ts.file("co/elsewhere/b", FileMain), 1<<20); err != nil || !bytes.Equal(got, other) {
				t.Fatalf("object opened by trial: %v", err)
			}
			for name, want := range map[string]string{"co/run_a.enc": "verified", "co/elsewhere/b": "encrypted", "co/elsewhere/c": "verified"} {
				if _, err := readAll(ctx, ts.file(name, FileMain), 1<<20); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if st := ts.blob(name).State(); st != want {
					t.Fatalf("%s: state %s, want %s", name, st, want)
				}
			}
			if got := xattr(ts.file("co/elsewhere/b", FileMain), "user.backupy.run_id"); got != "" {
				t.Fatalf("trial match took the token's run id %q", got)
			}
		})
	}
}
