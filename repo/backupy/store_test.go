package backupy

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

func xattr(f *File, name string) string {
	for _, x := range f.Xattrs() {
		if x.Name == name {
			return string(x.Value)
		}
	}
	return ""
}

func names(files []*File) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Name())
	}
	return out
}

func TestKAT1ThroughStore(t *testing.T) {
	ctx := context.Background()
	kr := NewKeyring()
	kr.AddToken(mustToken(t, katJWT), "test")
	// Matched by run id (the name), and by trial decryption (a name that
	// says nothing).
	ts := newTestStore(t, kr, map[string][]byte{
		"co_kat/agt_1/job_1/run_run-kat1.enc": unhex(t, kat1Blob),
		"elsewhere/object-7":                  unhex(t, kat1Blob),
	})
	for name, how := range map[string]string{"co_kat/agt_1/job_1/run_run-kat1.enc": "run", "elsewhere/object-7": "trial"} {
		files, err := ts.Files(ctx, ts.blob(name))
		if err != nil {
			t.Fatal(err)
		}
		base := strings.TrimSuffix(filepath.Base(name), ".enc")
		want := []string{base + ".bin", base + ".bin.zst", base + ".meta.json"}
		if !slices.Equal(names(files), want) {
			t.Fatalf("%s: files %v, want %v", name, names(files), want)
		}
		main := ts.file(name, FileMain)
		if n, ok := main.SizeKnown(); ok {
			t.Fatalf("size known before any pass: %d", n)
		}
		got, err := readAll(ctx, main, 7)
		if err != nil || string(got) != kat1Plain {
			t.Fatalf("%s: read %q, %v", name, got, err)
		}
		if n, ok := main.SizeKnown(); !ok || n != 45 {
			t.Fatalf("size after a full read: %d %v", n, ok)
		}
		if st := xattr(main, "user.backupy.state"); st != "verified" {
			t.Fatalf("state %q after a clean pass with the token's sha256", st)
		}
		if got := xattr(main, "user.backupy.sha256"); got != kat1SHA {
			t.Fatalf("sha256 xattr %q", got)
		}
		if got := xattr(main, "user.backupy.run_id"); got != "run-kat1" {
			t.Fatalf("run_id xattr %q", got)
		}
		if got := xattr(main, "user.backupy.frames") + "/" + xattr(main, "user.backupy.ciphertext_size"); got != "1/94" {
			t.Fatalf("frames/size xattrs %q", got)
		}
		zst, err := readAll(ctx, ts.file(name, FileZst), 1000)
		if err != nil || len(zst) != 58 || !bytes.HasPrefix(zst, zstdMagic) {
			t.Fatalf("zst view: %x, %v", zst, err)
		}
		meta, err := readAll(ctx, ts.file(name, FileMeta), 4096)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(meta, &doc); err != nil {
			t.Fatal(err)
		}
		key := doc["key"].(map[string]any)
		dek, _ := newDEK(unhex(t, katKeyHex))
		if key["matched_by"] != how || key["fingerprint"] != dek.Fingerprint() || doc["decoded_size"] != float64(45) {
			t.Fatalf("meta %s", meta)
		}
		assertNoLeak(t, string(meta), unhex(t, katKeyHex))
	}
	assertNoLeak(t, ts.log.String(), unhex(t, katKeyHex))
}

func TestKATEmpty(t *testing.T) {
	ctx := context.Background()
	kr, err := ParseKeyring(strings.NewReader("sha256:"+katEmpty+" hex:"+katKeyHex+"\n"), "mem")
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestStore(t, kr, map[string][]byte{"run_e.enc": {0, 0, 0, 0}, "run_p.enc": {}})
	// The encrypted empty object's hash is known before any pass (it is
	// hashed on first use), so the sha256 selector binds it.
	for name, state := range map[string]string{"run_e.enc": "verified", "run_p.enc": "unencrypted"} {
		b := ts.blob(name)
		if b.Kind != KindEmpty {
			t.Fatalf("%s: kind %s", name, b.Kind)
		}
		main := ts.file(name, FileMain)
		if main.Name() != "run_"+name[4:5]+".bin" {
			t.Fatalf("name %s", main.Name())
		}
		if n, ok := main.SizeKnown(); !ok || n != 0 {
			t.Fatalf("size %d %v", n, ok)
		}
		got, err := readAll(ctx, main, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("read %q %v", got, err)
		}
		if st := b.State(); st != state {
			t.Fatalf("%s: state %s, want %s", name, st, state)
		}
	}
	if got := xattr(ts.file("run_e.enc", FileMain), "user.backupy.sha256"); got != katEmpty {
		t.Fatalf("sha256 %s", got)
	}
}

// payloadCase is one kind of dump, as each agent driver produces it.
type payloadCase struct {
	name    string
	dump    []byte
	peeked  bool
	encrypt bool
	ext     string
	fcs     bool // size known from the zstd header
}

func payloadCases(t testing.TB) []payloadCase {
	return []payloadCase{
		{name: "pg_dump", dump: pgDump(200_000), peeked: true, encrypt: true, ext: ".pgdump"},
		{name: "mysqldump banner", dump: mysqlDump(150_000), peeked: true, encrypt: true, ext: ".sql"},
		{name: "mariadb sandbox line", dump: sandboxDump(50_000), peeked: true, encrypt: true, ext: ".sql"},
		{name: "mongodump archive", dump: mongoDump(t, 1_000_000), encrypt: true, ext: ".archive.gz"},
		{name: "redis tar", dump: redisDump(t, 20_000), encrypt: true, ext: ".rdb.tar.gz", fcs: true},
		{name: "sqlite gzip", dump: sqliteDump(t, 1_000_000), encrypt: true, ext: ".db.gz"},
		{name: "small sqlite with FCS", dump: sqliteDump(t, 3_000), encrypt: true, ext: ".db.gz", fcs: true},
		{name: "tiny unrecognised", dump: []byte("hello"), encrypt: true, ext: ".bin"},
		{name: "unencrypted pg_dump", dump: pgDump(100_000), peeked: true, ext: ".pgdump"},
		{name: "unencrypted mongo", dump: mongoDump(t, 10_000), ext: ".archive.gz", fcs: true},
		{name: "multi-frame pg_dump", dump: pgDump(7 << 20), peeked: true, encrypt: true, ext: ".pgdump"},
	}
}

func TestPayloadKinds(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "any", "")), "test")
	objects := map[string][]byte{}
	cases := payloadCases(t)
	zsts := map[string][]byte{}
	for i, c := range cases {
		zst := agentZstd(t, c.dump, c.peeked)
		var k []byte
		if c.encrypt {
			k = key
		}
		name := "co_1/agt_1/job_" + string(rune('a'+i)) + "/run_" + strings.ReplaceAll(c.name, " ", "-") + ".enc"
		objects[name] = agentEncrypt(t, zst, k)
		zsts[name] = zst
	}
	ts := newTestStore(t, kr, objects)
	for i, c := range cases {
		name := "co_1/agt_1/job_" + string(rune('a'+i)) + "/run_" + strings.ReplaceAll(c.name, " ", "-") + ".enc"
		t.Run(c.name, func(t *testing.T) {
			b := ts.blob(name)
			wantKind := KindPlainZstd
			if c.encrypt {
				wantKind = KindEncrypted
			}
			if b.Kind != wantKind {
				t.Fatalf("kind %s", b.Kind)
			}
			main := ts.file(name, FileMain)
			if !strings.HasSuffix(main.Name(), c.ext) {
				t.Fatalf("main view %s, want extension %s", main.Name(), c.ext)
			}
			if n, ok := main.SizeKnown(); ok != c.fcs || ok && n != int64(len(c.dump)) {
				t.Fatalf("SizeKnown = %d, %v before a pass", n, ok)
			}
			zstView := ts.file(name, FileZst)
			if n, ok := zstView.SizeKnown(); !ok || n != int64(len(zsts[name])) {
				t.Fatalf("zst size %d, want %d", n, len(zsts[name]))
			}
			size, err := main.Size(ctx)
			if err != nil || size != int64(len(c.dump)) {
				t.Fatalf("Size = %d, %v; want %d", size, err, len(c.dump))
			}
			got, err := readAll(ctx, main, 128<<10)
			if err != nil || !bytes.Equal(got, c.dump) {
				t.Fatalf("main view: %d bytes, %v", len(got), err)
			}
			z, err := readAll(ctx, zstView, 100_000)
			if err != nil || !bytes.Equal(z, zsts[name]) {
				t.Fatalf("zst view: %d bytes, %v", len(z), err)
			}
			if got := xattr(main, "user.backupy.kind"); got != string(wantKind) {
				t.Fatalf("kind xattr %s", got)
			}
			wantState := "unencrypted"
			if c.encrypt {
				wantState = "encrypted" // no sha256 known: checksum only
			}
			if st := b.State(); st != wantState {
				t.Fatalf("state %s", st)
			}
			if got := xattr(main, "user.backupy.sha256"); got != shaHex(objects[name]) {
				t.Fatalf("computed sha256 xattr %q", got)
			}
		})
	}
}

func TestUndecodableZstdShowsBytes(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "x", "")), "test")
	notZstd := []byte("just some bytes, compression=none")
	badZstd := append(bytes.Clone(zstdMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	ts := newTestStore(t, kr, map[string][]byte{
		"run_a.enc": agentEncrypt(t, notZstd, key),
		"run_b.enc": agentEncrypt(t, badZstd, key),
	})
	for name, want := range map[string][]byte{"run_a.enc": notZstd, "run_b.enc": badZstd} {
		files, _ := ts.Files(ctx, ts.blob(name))
		if got := names(files); len(got) != 2 || !strings.HasSuffix(got[0], ".bin") {
			t.Fatalf("files %v", got)
		}
		main := ts.file(name, FileMain)
		if n, ok := main.SizeKnown(); !ok || n != int64(len(want)) {
			t.Fatalf("size %d %v", n, ok)
		}
		got, err := readAll(ctx, main, 5)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

func TestForeignObjects(t *testing.T) {
	ctx := context.Background()
	objects := map[string][]byte{
		"notes.txt":      []byte("hello"),
		"ico.ico":        append([]byte{0, 0, 1, 0}, noise(1, 2000)...),
		"short":          {0, 0},
		"dir/random.bin": noise(2, 5000),
	}
	ts := newTestStore(t, nil, objects)
	for name, data := range objects {
		b := ts.blob(name)
		if b.Kind != KindForeign {
			t.Fatalf("%s: kind %s", name, b.Kind)
		}
		files, _ := ts.Files(ctx, b)
		if len(files) != 1 || files[0].Name() != filepath.Base(name) || files[0].Kind() != FileRaw {
			t.Fatalf("%s: files %v", name, names(files))
		}
		got, err := readAll(ctx, files[0], 333)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	ts.opts.HideForeign = true
	ts.reopen()
	if n := len(ts.Blobs()); n != 0 {
		t.Fatalf("%d blobs with HideForeign", n)
	}
}

func TestLockedObject(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	blob := agentEncrypt(t, agentZstd(t, pgDump(5000), true), key)
	ts := newTestStore(t, nil, map[string][]byte{"co/run_l.enc": blob})
	b := ts.blob("co/run_l.enc")
	files, err := ts.Files(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(files); !slices.Equal(got, []string{"run_l.enc", "run_l.meta.json"}) {
		t.Fatalf("files %v", got)
	}
	if st := xattr(files[0], "user.backupy.state"); st != "locked" {
		t.Fatalf("state %s", st)
	}
	raw, err := readAll(ctx, files[0], 4096)
	if err != nil || !bytes.Equal(raw, blob) {
		t.Fatalf("raw view: %v", err)
	}
	if _, err := ts.Main(ctx, b); !errors.Is(err, ErrLocked) {
		t.Fatalf("Main = %v, want ErrLocked", err)
	}

	// A key merely tried (selected by nothing) that does not open it
	// leaves it locked.
	wrong := NewKeyring()
	wrong.AddToken(mustToken(t, tokenFor(newKey(t), "other-run", "")), "wrong")
	ts.opts.Keys = wrong
	ts.reopen()
	if _, err := ts.Main(ctx, ts.blob("co/run_l.enc")); !errors.Is(err, ErrLocked) {
		t.Fatalf("Main with a wrong trial key = %v", err)
	}

	// Adding the key unlocks it; the names change.
	right := NewKeyring()
	right.AddToken(mustToken(t, tokenFor(key, "l", "")), "right")
	ts.opts.Keys = right
	ts.reopen()
	main, err := ts.Main(ctx, ts.blob("co/run_l.enc"))
	if err != nil || main.Name() != "run_l.pgdump" {
		t.Fatalf("Main = %v, %v", main, err)
	}
	if got, err := readAll(ctx, main, 1000); err != nil || !bytes.Equal(got, pgDump(5000)) {
		t.Fatalf("read with the key: %v", err)
	}
	assertNoLeak(t, ts.log.String(), key)
}

// A key bound to an object (by its run id here) that does not open frame
// 0 means the object is damaged, not locked: it shows under its decoded
// name next to its raw bytes, and reads fail naming frame 0.
func TestBoundKeyFailingFrame0IsCorruption(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	blob := agentEncrypt(t, agentZstd(t, pgDump(5000), true), key)
	for _, tc := range []struct {
		name   string
		keys   func() *Keyring
		object []byte
	}{
		{"frame 0 damaged, key by run", func() *Keyring {
			kr := NewKeyring()
			kr.AddToken(mustToken(t, tokenFor(key, "l", "")), "token")
			return kr
		}, corruptCopy(blob, func(b []byte) []byte { b[100] ^= 1; return b })},
		{"wrong key by run", func() *Keyring {
			kr := NewKeyring()
			kr.AddToken(mustToken(t, tokenFor(newKey(t), "l", "")), "token")
			return kr
		}, blob},
		{"frame 0 damaged, key by path", func() *Keyring {
			kr, err := ParseKeyring(strings.NewReader("path:co/* hex:"+hex.EncodeToString(key)+"\n"), "ring")
			if err != nil {
				t.Fatal(err)
			}
			return kr
		}, corruptCopy(blob, func(b []byte) []byte { b[len(b)-10] ^= 1; return b })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t, tc.keys(), map[string][]byte{"co/run_l.enc": tc.object})
			b := ts.blob("co/run_l.enc")
			files, err := ts.Files(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(files); !slices.Equal(got, []string{"run_l.bin", "run_l.enc", "run_l.meta.json"}) {
				t.Fatalf("files %v", got)
			}
			if b.Locked() || b.State() != "corrupt" {
				t.Fatalf("locked %v, state %s", b.Locked(), b.State())
			}
			_, err = readAll(ctx, ts.file("co/run_l.enc", FileMain), 4096)
			checkCorruptErr(t, err, "co/run_l.enc", gcmframe.ErrAuth, 0, -1)
			if raw, err := readAll(ctx, ts.file("co/run_l.enc", FileRaw), 4096); err != nil || !bytes.Equal(raw, tc.object) {
				t.Fatalf("raw view: %v", err)
			}
			log := ts.log.String()
			if n := strings.Count(log, "frame 0 at offset 0"); n != 1 || !strings.Contains(log, "co/run_l.enc") {
				t.Fatalf("want one log line naming the object and frame 0 at offset 0:\n%s", log)
			}
			if strings.Contains(log, "does not open it") {
				t.Fatalf("a wrong-key warning besides the corruption:\n%s", log)
			}
		})
	}
}

func TestRefreshIsIncremental(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, nil, map[string][]byte{"a/run_1.enc": agentZstd(t, []byte("one"), false), "b/x": []byte("x")})
	a, x := ts.blob("a/run_1.enc"), ts.blob("b/x")
	ts.write("c/run_2.enc", agentZstd(t, []byte("two"), false))
	os.WriteFile(filepath.Join(ts.dir, "b", "x"), []byte("longer"), 0o644)
	if err := ts.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if ts.Blob("a/run_1.enc") != a {
		t.Fatal("unchanged object got a new Blob")
	}
	if nx := ts.blob("b/x"); nx == x || nx.Size != 6 {
		t.Fatal("changed object kept its Blob")
	}
	var paths []string
	for _, b := range ts.Blobs() {
		paths = append(paths, b.Path)
	}
	if !slices.Equal(paths, []string{"a/run_1.enc", "b/x", "c/run_2.enc"}) {
		t.Fatalf("blobs %v", paths)
	}
	// A handle on the old version fails cleanly rather than reading the
	// new bytes under the old layout.
	if _, err := readAll(ctx, x.files0(t), 10); !errors.Is(err, ErrChanged) {
		t.Fatalf("stale object read: %v", err)
	}
	os.Remove(filepath.Join(ts.dir, "c", "run_2.enc"))
	ts.Refresh(ctx)
	if ts.Blob("c/run_2.enc") != nil {
		t.Fatal("removed object still listed")
	}
}

func (b *Blob) files0(t *testing.T) *File {
	files, err := b.store.Files(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return files[0]
}

func TestOpenFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "run_run-kat1.enc"), unhex(t, kat1Blob), 0o600)
	os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, katJWT), "kat")
	s, b, err := OpenFile(ctx, filepath.Join(dir, "run_run-kat1.enc"), Options{Keys: kr, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Blobs()) != 1 {
		t.Fatalf("%d blobs", len(s.Blobs()))
	}
	main, err := s.Main(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(ctx, main, 100)
	if err != nil || string(got) != kat1Plain {
		t.Fatalf("%q %v", got, err)
	}
	if _, _, err := OpenFile(ctx, dir, Options{CacheDir: t.TempDir()}); err == nil {
		t.Fatal("OpenFile of a directory succeeded")
	}
}

func TestIrregularFrames(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	dump := textish(9, 3<<20)
	zst := agentZstd(t, dump, false)
	// Hand-built frames of uneven sizes: not what the agent writes, but the
	// upstream decrypt tool accepts it, and so do we.
	c, _ := gcmframe.NewCipher(key)
	var blob []byte
	var nonce [12]byte
	for rest, i := zst, 0; len(rest) > 0; i++ {
		n := min(len(rest), []int{1000, gcmframe.PlainSize, 77}[i%3])
		nonce[0] = byte(i)
		blob = c.AppendFrame(blob, &nonce, rest[:n])
		rest = rest[n:]
	}
	blob = append(blob, 0, 0, 0, 0)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "irr", shaHex(blob))), "t")
	ts := newTestStore(t, kr, map[string][]byte{"run_irr.enc": blob})
	b := ts.blob("run_irr.enc")
	if b.Kind != KindEncrypted || b.index.Regular() || b.Corrupt() != nil {
		t.Fatalf("kind %s corrupt %v", b.Kind, b.Corrupt())
	}
	z, err := readAll(ctx, ts.file("run_irr.enc", FileZst), 4099)
	if err != nil || !bytes.Equal(z, zst) {
		t.Fatalf("zst view: %v", err)
	}
	got, err := readAll(ctx, ts.file("run_irr.enc", FileMain), 65536)
	if err != nil || !bytes.Equal(got, dump) || b.State() != "verified" {
		t.Fatalf("main view: %v, state %s", err, b.State())
	}
}

func TestHandleReadAtContract(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	dump := textish(10, 100_000)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "c", "")), "t")
	ts := newTestStore(t, kr, map[string][]byte{"run_c.enc": agentEncrypt(t, agentZstd(t, dump, false), key)})
	for _, kind := range []FileKind{FileMain, FileZst, FileMeta} {
		f := ts.file("run_c.enc", kind)
		size, err := f.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h, err := f.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		if n, err := h.ReadAt(ctx, buf, size-10); n != 10 || err != io.EOF {
			t.Fatalf("%v: read across the end = %d, %v", kind, n, err)
		}
		if n, err := h.ReadAt(ctx, buf, size); n != 0 || err != io.EOF {
			t.Fatalf("%v: read at the end = %d, %v", kind, n, err)
		}
		if n, err := h.ReadAt(ctx, buf[:0], 0); n != 0 || (err != nil && err != io.EOF) {
			t.Fatalf("%v: empty read = %d, %v", kind, n, err)
		}
		h.Close()
	}
}
