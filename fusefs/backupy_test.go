package fusefs_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/gcmframe"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// writeBlob writes an object the way the Backupy agent does: the dump
// streamed through zstd (no content size in the header), then, with a
// DEK, sealed in 1 MiB AES-256-GCM frames with random nonces and an EOF
// frame. It returns the object's sha256.
func writeBlob(t *testing.T, path string, dump []byte, dek []byte) string {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	var obj bytes.Buffer
	var sink io.Writer = &obj
	var frames *gcmframe.Writer
	if dek != nil {
		var err error
		if frames, err = gcmframe.NewWriter(&obj, dek); err != nil {
			t.Fatal(err)
		}
		sink = frames
	}
	enc, err := zstd.NewWriter(sink, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		t.Fatal(err)
	}
	// Through a pipe, like the agent, so the encoder cannot know the size.
	if _, err := io.Copy(enc, struct{ io.Reader }{bytes.NewReader(dump)}); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if frames != nil {
		if err := frames.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, obj.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(obj.Bytes())
	return hex.EncodeToString(sum[:])
}

// token makes a decryption token like the Backupy server's (the signature
// is not checked by readers, so any will do).
func token(t *testing.T, dek []byte, runID, sha string) string {
	t.Helper()
	claims, _ := json.Marshal(map[string]any{
		"iss": "backupy-server", "aud": "backupy-decrypt", "exp": time.Now().Add(-time.Hour).Unix(), // expired: only a warning
		"sub": "user-1", "run_id": runID, "company_id": "co-1", "alg": "AES-256-GCM", "format_version": 1,
		"dek": base64.StdEncoding.EncodeToString(dek), "sha256": sha,
	})
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims) + ".c2ln"
}

func randomDEK(t *testing.T) []byte {
	dek := make([]byte, 32)
	rand.Read(dek)
	return dek
}

// dumpOf makes n bytes of a plausible dump that starts with magic.
func dumpOf(magic string, n int, seed uint64) []byte {
	rng := mrand.New(mrand.NewPCG(seed, 5))
	b := []byte(magic)
	for len(b) < n {
		if rng.IntN(8) != 0 { // mostly incompressible, so objects span frames
			for range 32 {
				b = append(b, byte(rng.IntN(256)))
			}
		} else {
			b = append(b, "INSERT INTO t VALUES (1, 'backupfs');\n"[rng.IntN(10):]...)
		}
	}
	return b[:n]
}

type backupyStore struct {
	dir   string
	dumps map[string][]byte // view path (in the mount source) → decoded content
	shas  map[string]string
}

// newBackupyStore writes a store with objects of several kinds.
func newBackupyStore(t *testing.T) (*backupyStore, *backupy.Keyring) {
	t.Helper()
	s := &backupyStore{dir: t.TempDir(), dumps: map[string][]byte{}, shas: map[string]string{}}
	pgDEK, sqlDEK := randomDEK(t), randomDEK(t)
	pg := dumpOf("PGDMP\x01\x10\x00", 4<<20+12345, 1) // four frames
	sql := dumpOf("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n", 200<<10, 2)
	plain := dumpOf("SQLite format 3\x00", 70<<10, 3)
	s.shas["pg"] = writeBlob(t, filepath.Join(s.dir, "co_1/agt_1/job_pg/run_pg1.enc"), pg, pgDEK)
	writeBlob(t, filepath.Join(s.dir, "co_1/agt_1/job_sql/run_sql1.enc"), sql, sqlDEK)
	writeBlob(t, filepath.Join(s.dir, "co_1/agt_2/job_raw/run_plain.enc"), plain, nil)
	writeBlob(t, filepath.Join(s.dir, "co_1/agt_2/job_locked/run_locked.enc"), pg[:5000], randomDEK(t))
	s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"] = pg
	s.dumps["co_1/agt_1/job_sql/run_sql1.sql"] = sql
	s.dumps["co_1/agt_2/job_raw/run_plain.bin"] = plain

	// Keys: a token for the pg run, a keyring line for the SQL one.
	tok := filepath.Join(t.TempDir(), "run_pg1.jwt")
	os.WriteFile(tok, []byte(token(t, pgDEK, "pg1", s.shas["pg"])+"\n"), 0o600)
	ring := filepath.Join(t.TempDir(), "keyring")
	os.WriteFile(ring, []byte("path:co_1/agt_1/job_sql/run_sql1.enc hex:"+hex.EncodeToString(sqlDEK)+"\n"), 0o600)
	keys, err := backupy.LoadKeys(backupy.KeySources{TokenFiles: []string{tok}, KeyringFiles: []string{ring}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, keys
}

// bkSource is one Backupy store to mount.
type bkSource struct {
	name, dir string
	keys      *backupy.Keyring
}

// bkMount is a mount of Backupy stores that a test can unmount and mount
// again on the same cache directory, as a user's remount would.
type bkMount struct {
	*mounted
	stores []*backupy.Store
	mnt    *fusefs.Mount
}

// mountBackupyStores mounts the stores, sharing one cache directory. The
// stores log at debug level, so their decode passes show in m.log.
func mountBackupyStores(t *testing.T, cacheDir string, views backupy.Views, srcs ...bkSource) *bkMount {
	t.Helper()
	fusetest.RequireFUSE(t)
	bm := &bkMount{mounted: &mounted{log: &logBuffer{}}}
	storeLog := slog.New(slog.NewTextHandler(bm.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bm.fs = fusefs.New(fusefs.Options{Logger: newTestLogger(bm.log)})
	chunks := cache.New(64 << 20)
	for _, src := range srcs {
		store, err := backupy.OpenStore(context.Background(), src.dir, backupy.Options{
			Logger: storeLog, Keys: src.keys, Chunks: chunks, CacheDir: cacheDir, Views: views,
		})
		if err != nil {
			t.Fatal(err)
		}
		bm.stores = append(bm.stores, store)
		if err := bm.fs.AddBackupy(src.name, store); err != nil {
			t.Fatal(err)
		}
	}
	bm.dir = t.TempDir()
	mnt, err := bm.fs.Mount(bm.dir, fusefs.MountOptions{})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	if err := mnt.PrepareSelfAccess(); err != nil {
		t.Fatalf("mount: %v", err)
	}
	bm.mnt = mnt
	t.Cleanup(func() { bm.unmount(t) })
	return bm
}

// unmount unmounts and closes the stores, which saves their index.
func (bm *bkMount) unmount(t *testing.T) {
	if bm.mnt == nil {
		return
	}
	if err := bm.mnt.Unmount(2 * time.Second); err != nil {
		t.Errorf("unmount: %v", err)
	}
	if fusetest.Mounted(bm.dir) {
		t.Errorf("%s is still mounted", bm.dir)
		_ = syscall.Unmount(bm.dir, syscall.MNT_DETACH)
	}
	bm.mnt = nil
	for _, s := range bm.stores {
		s.Close()
	}
}

// passes counts the full decode passes the stores logged, for an object
// if given.
func (bm *bkMount) passes(object string) int {
	n := 0
	for _, line := range strings.Split(bm.log.String(), "\n") {
		if strings.Contains(line, "full decode pass") && strings.Contains(line, object) {
			n++
		}
	}
	return n
}

func mountBackupy(t *testing.T, dir string, keys *backupy.Keyring, views backupy.Views) (*mounted, *backupy.Store) {
	t.Helper()
	bm := mountBackupyStores(t, t.TempDir(), views, bkSource{"db", dir, keys})
	return bm.mounted, bm.stores[0]
}

func TestBackupyStoreInTheMount(t *testing.T) {
	s, keys := newBackupyStore(t)
	m, _ := mountBackupy(t, s.dir, keys, backupy.ViewZst|backupy.ViewMeta)

	// The key hierarchy is mirrored; names come from sniffing.
	for dir, want := range map[string][]string{
		"db":                       {"co_1"},
		"db/co_1/agt_1/job_pg":     {"run_pg1.meta.json", "run_pg1.pgdump", "run_pg1.pgdump.zst"},
		"db/co_1/agt_1/job_sql":    {"run_sql1.meta.json", "run_sql1.sql", "run_sql1.sql.zst"},
		"db/co_1/agt_2/job_raw":    {"run_plain.bin", "run_plain.bin.zst", "run_plain.meta.json"},
		"db/co_1/agt_2/job_locked": {"run_locked.enc", "run_locked.meta.json"},
	} {
		ents, err := os.ReadDir(m.path(dir))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", dir, got, want)
		}
	}
	// Exact bytes and sizes of every decoded dump.
	for p, want := range s.dumps {
		got, err := os.ReadFile(m.path("db", p))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes (%v), want %d", p, len(got), err, len(want))
		}
		fi, _ := os.Stat(m.path("db", p))
		if fi.Size() != int64(len(want)) || fi.Mode().Perm() != 0o400 {
			t.Errorf("%s: size %d mode %v", p, fi.Size(), fi.Mode())
		}
	}
	// A locked object is its ciphertext, byte for byte.
	raw, _ := os.ReadFile(filepath.Join(s.dir, "co_1/agt_2/job_locked/run_locked.enc"))
	if got, err := os.ReadFile(m.path("db/co_1/agt_2/job_locked/run_locked.enc")); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("locked object: %v", err)
	}
	// The .zst view decompresses to the dump.
	zst, err := os.ReadFile(m.path("db/co_1/agt_1/job_pg/run_pg1.pgdump.zst"))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	if out, err := dec.DecodeAll(zst, nil); err != nil || !bytes.Equal(out, s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"]) {
		t.Fatalf(".zst view: %v", err)
	}
	// A full pass verified the token's sha256: state shows it.
	buf := make([]byte, 64)
	n, err := unix.Getxattr(m.path("db/co_1/agt_1/job_pg/run_pg1.pgdump"), "user.backupy.state", buf)
	if err != nil || string(buf[:n]) != "verified" {
		t.Errorf("user.backupy.state = %q, %v", buf[:n], err)
	}
	meta, err := os.ReadFile(m.path("db/co_1/agt_1/job_pg/run_pg1.meta.json"))
	if err != nil || !json.Valid(meta) || !strings.Contains(string(meta), "pgdump") {
		t.Errorf("meta.json: %s %v", meta, err)
	}
	if strings.Contains(m.log.String(), "dek") && strings.Contains(m.log.String(), base64.StdEncoding.EncodeToString([]byte{0})) {
		t.Error("a key reached the log")
	}
}

// Random, backwards and concurrent reads of the decoded dump, through
// separate opens, agree with the dump; a second reader is served from the
// materialised copy.
func TestBackupyRandomAndConcurrentReads(t *testing.T) {
	s, keys := newBackupyStore(t)
	m, _ := mountBackupy(t, s.dir, keys, 0)
	p := m.path("db/co_1/agt_1/job_pg/run_pg1.pgdump")
	want := s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"]

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{3 << 20, 0, 2<<20 + 7, 1 << 20, int64(len(want)) - 10} { // backwards too
		buf := make([]byte, 100000)
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatalf("ReadAt %d: %v", off, err)
		}
		if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			t.Fatalf("ReadAt %d: wrong bytes", off)
		}
	}
	f.Close()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), 9))
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for i := 0; i < 20; i++ {
				off := rng.Int64N(int64(len(want)))
				buf := make([]byte, rng.IntN(200000)+1)
				n, err := f.ReadAt(buf, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("reader %d at %d: %v", g, off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Damage found in a Backupy object fails its reads with EIO and a log
// line naming the object (and the frame, where one is at fault), never
// wrong bytes or a clean end; reads before damage at a frame still work;
// the raw ciphertext stays readable; other objects keep working.
func TestBackupyCorruption(t *testing.T) {
	const f = 1048608 // a full frame on disk
	swap := func(i, j int) func(b []byte) []byte {
		return func(b []byte) []byte {
			out := append([]byte(nil), b...)
			copy(out[i*f:(i+1)*f], b[j*f:(j+1)*f])
			copy(out[j*f:(j+1)*f], b[i*f:(i+1)*f])
			return out
		}
	}
	const lastFrame = -2 // the end-of-stream marker's place, after the last frame
	for _, tt := range []struct {
		name   string
		damage func(b []byte) []byte
		main   string // the dump's name in the mount
		read   string // the view read to its end: main or zst
		frame  int    // frame the log names, -1 for none
		before bool   // the first bytes of the dump still read
		logs   string // what else the log says
	}{
		{"flipped byte in frame 1", func(b []byte) []byte { b[f+100] ^= 1; return b }, "run_pg1.pgdump", "main", 1, true, "authentication"},
		{"bad length of frame 1", func(b []byte) []byte { copy(b[f:], []byte{0, 0, 0, 27}); return b }, "run_pg1.pgdump", "main", 1, true, "frame length"},
		{"missing EOF marker", func(b []byte) []byte { return b[:len(b)-4] }, "run_pg1.pgdump", "main", lastFrame, true, "truncated"},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0, 0, 0, 0, 1) }, "run_pg1.pgdump", "main", lastFrame, true, "after the end-of-stream marker"},
		{"truncated mid-frame", func(b []byte) []byte { return b[:2<<20] }, "run_pg1.pgdump", "main", 1, true, "truncated"},
		{"truncated mid-frame, read as .zst", func(b []byte) []byte { return b[:2<<20] }, "run_pg1.pgdump", "zst", 1, true, "truncated"},
		{"frame 0 damaged", func(b []byte) []byte { b[100] ^= 1; return b }, "run_pg1.bin", "main", 0, false, "frame 0 at offset 0"},
		{"frames 0 and 1 swapped", swap(0, 1), "run_pg1.bin", "main", -1, false, "sha256"},
		{"frames 1 and 2 swapped", swap(1, 2), "run_pg1.pgdump", "main", -1, false, "zstd stream does not decode"},
		{"frames 1 and 2 swapped, read as .zst", swap(1, 2), "run_pg1.pgdump", "zst", -1, false, "sha256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, keys := newBackupyStore(t)
			obj := filepath.Join(s.dir, "co_1/agt_1/job_pg/run_pg1.enc")
			b, _ := os.ReadFile(obj)
			if frames := (len(b) - 4 + f - 1) / f; frames != 4 {
				t.Fatalf("%d frames", frames)
			}
			if tt.frame == lastFrame {
				tt.frame = 4
			}
			damaged := tt.damage(b)
			os.WriteFile(obj, damaged, 0o644)
			m, _ := mountBackupy(t, s.dir, keys, backupy.ViewZst)
			dump := s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"]
			dir := m.path("db/co_1/agt_1/job_pg")
			view := filepath.Join(dir, tt.main)
			if tt.read == "zst" {
				view += ".zst"
			}
			got, err := os.ReadFile(view)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("reading %s to its end: %v (%d bytes), want EIO", filepath.Base(view), err, len(got))
			}
			// Everything decoded fails now, in fresh opens too.
			if got, err := os.ReadFile(filepath.Join(dir, tt.main)); !errors.Is(err, syscall.EIO) {
				t.Fatalf("%s after detection: %v (%d bytes), want EIO", tt.main, err, len(got))
			}
			fh, err := os.Open(filepath.Join(dir, tt.main))
			if err != nil {
				t.Fatalf("open %s: %v", tt.main, err)
			}
			buf := make([]byte, 64<<10)
			n, err := fh.ReadAt(buf, 0)
			fh.Close()
			if tt.before {
				if err != nil || !bytes.Equal(buf[:n], dump[:len(buf)]) {
					t.Fatalf("read before the damage: %d bytes, %v", n, err)
				}
			} else if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of an object damaged as a whole: %v, want EIO", err)
			}
			// The raw ciphertext is still there, byte for byte.
			if raw, err := os.ReadFile(filepath.Join(dir, "run_pg1.enc")); err != nil || !bytes.Equal(raw, damaged) {
				t.Fatalf("raw view: %d bytes, %v", len(raw), err)
			}
			st := make([]byte, 32)
			if n, err := unix.Getxattr(filepath.Join(dir, tt.main), "user.backupy.state", st); err != nil || string(st[:n]) != "corrupt" {
				t.Fatalf("state %q %v", st[:n], err)
			}
			if got, err := os.ReadFile(m.path("db/co_1/agt_1/job_sql/run_sql1.sql")); err != nil || !bytes.Equal(got, s.dumps["co_1/agt_1/job_sql/run_sql1.sql"]) {
				t.Errorf("another object: %v", err)
			}
			// A log line names the object, and the frame at fault.
			var named bool
			for _, line := range strings.Split(m.log.String(), "\n") {
				if strings.Contains(line, "run_pg1") && strings.Contains(line, tt.logs) &&
					(tt.frame < 0 || strings.Contains(line, fmt.Sprintf("frame %d at offset ", tt.frame))) {
					named = true
				}
			}
			if !named {
				t.Errorf("no log line names run_pg1, %q and frame %d:\n%s", tt.logs, tt.frame, m.log)
			}
		})
	}
}

// Two stores in one mount share the cache directory; after a remount both
// stores' dumps list their exact sizes at once and read from the cache,
// without a decode pass.
func TestBackupyTwoStoresRemount(t *testing.T) {
	cacheDir := t.TempDir()
	type obj struct {
		src, view string
		dump      []byte
	}
	var srcs []bkSource
	var objs []obj
	for i, name := range []string{"alpha", "beta"} {
		dir := t.TempDir()
		dek := randomDEK(t)
		dump := dumpOf("PGDMP\x01\x10\x00", 2<<20+int(i)*4096, uint64(10+i))
		writeBlob(t, filepath.Join(dir, "job/run_r"+name+".enc"), dump, dek)
		kr := backupy.NewKeyring()
		tok, err := backupy.ParseToken(token(t, dek, "r"+name, ""))
		if err != nil {
			t.Fatal(err)
		}
		kr.AddToken(tok, "test")
		srcs = append(srcs, bkSource{name, dir, kr})
		objs = append(objs, obj{name, name + "/job/run_r" + name + ".pgdump", dump})
	}
	bm := mountBackupyStores(t, cacheDir, 0, srcs...)
	for _, o := range objs {
		fi, err := os.Stat(bm.path(o.view))
		if err != nil || fi.Size() != int64(len(o.dump)) {
			t.Fatalf("%s: %v %v", o.view, fi, err)
		}
	}
	if n := bm.passes(""); n != 2 {
		t.Fatalf("%d decode passes for two objects:\n%s", n, bm.log)
	}
	bm.unmount(t)

	bm = mountBackupyStores(t, cacheDir, 0, srcs...)
	for _, o := range objs {
		ents, err := os.ReadDir(bm.path(o.src, "job"))
		if err != nil || len(ents) != 1 {
			t.Fatalf("%s: %v %v", o.src, ents, err)
		}
		fi, err := ents[0].Info() // ls -l
		if err != nil || fi.Size() != int64(len(o.dump)) {
			t.Fatalf("%s after remount: %v %v", o.view, fi, err)
		}
	}
	for _, o := range objs {
		got, err := os.ReadFile(bm.path(o.view))
		if err != nil || !bytes.Equal(got, o.dump) {
			t.Fatalf("%s: %d bytes, %v", o.view, len(got), err)
		}
	}
	if n := bm.passes(""); n != 0 {
		t.Fatalf("%d decode passes after the remount:\n%s", n, bm.log)
	}
}

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Every payload kind of docs/backupy-format.md §5.1 is named by sniffing,
// reads back exactly and has its exact size; empty objects (an unencrypted
// empty dump is 0 bytes, an encrypted one the 4-byte end marker) are empty
// files.
func TestBackupyPayloadKindsAndEmpty(t *testing.T) {
	dir := t.TempDir()
	dek := randomDEK(t)
	var rdb bytes.Buffer
	tw := tar.NewWriter(&rdb)
	rdbData := append([]byte("REDIS0011\xfa\x09redis-ver\x057.2.4"), dumpOf("", 50<<10, 7)...)
	tw.WriteHeader(&tar.Header{Name: "dump.rdb", Mode: 0o600, Size: int64(len(rdbData)), ModTime: time.Unix(1767225600, 0)})
	tw.Write(rdbData)
	tw.Close()
	dumps := map[string][]byte{
		"pg/run_pg.pgdump":           dumpOf("PGDMP\x01\x10\x00", 300<<10, 1),
		"mysql/run_my.sql":           dumpOf("-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n", 100<<10, 2),
		"mariadb/run_ma.sql":         dumpOf("/*M!999999\\- enable the sandbox mode */\n-- MariaDB dump 10.19-11.4.2-MariaDB\n", 100<<10, 3),
		"mongo/run_mo.archive.gz":    gzipOf(t, append([]byte{0x6d, 0xe2, 0x99, 0x81, 1, 0, 0, 0}, dumpOf("", 200<<10, 4)...)),
		"redis/run_re.rdb.tar.gz":    gzipOf(t, rdb.Bytes()),
		"sqlite/run_sq.db.gz":        gzipOf(t, dumpOf("SQLite format 3\x00\x10\x00\x01\x01", 200<<10, 5)),
		"unknown/run_un.bin":         dumpOf("just bytes", 10<<10, 6),
		"plain-sqlite/run_ps.db.gz":  gzipOf(t, dumpOf("SQLite format 3\x00\x10\x00\x01\x01", 20<<10, 8)),
		"empty-plain/run_ep.bin":     nil,
		"empty-encrypted/run_ee.bin": nil,
	}
	for view, dump := range dumps {
		obj := filepath.Join(dir, strings.SplitN(view, ".", 2)[0]+".enc")
		switch {
		case strings.HasPrefix(view, "empty-plain/"):
			os.MkdirAll(filepath.Dir(obj), 0o755)
			os.WriteFile(obj, nil, 0o644)
		case strings.HasPrefix(view, "empty-encrypted/"):
			os.MkdirAll(filepath.Dir(obj), 0o755)
			os.WriteFile(obj, []byte{0, 0, 0, 0}, 0o644)
		case strings.HasPrefix(view, "plain-"):
			writeBlob(t, obj, dump, nil)
		default:
			writeBlob(t, obj, dump, dek)
		}
	}
	kr := backupy.NewKeyring()
	tok, err := backupy.ParseToken(token(t, dek, "any", ""))
	if err != nil {
		t.Fatal(err)
	}
	kr.AddToken(tok, "test")
	m, _ := mountBackupy(t, dir, kr, 0)
	for view, dump := range dumps {
		ents, err := os.ReadDir(m.path("db", filepath.Dir(view)))
		if err != nil || len(ents) != 1 || ents[0].Name() != filepath.Base(view) {
			t.Errorf("%s: listed as %v (%v)", view, ents, err)
			continue
		}
		fi, err := os.Stat(m.path("db", view))
		if err != nil || fi.Size() != int64(len(dump)) {
			t.Errorf("%s: stat %v %v, want %d bytes", view, fi, err, len(dump))
		}
		got, err := os.ReadFile(m.path("db", view))
		if err != nil || !bytes.Equal(got, dump) {
			t.Errorf("%s: %d bytes, %v; want %d", view, len(got), err, len(dump))
		}
	}
	st := make([]byte, 32)
	if n, err := unix.Getxattr(m.path("db/empty-encrypted/run_ee.bin"), "user.backupy.kind", st); err != nil || string(st[:n]) != "empty" {
		t.Errorf("kind of the empty encrypted object: %q %v", st[:n], err)
	}
}

// One decode pass serves every later read of the dump in a mount, from
// the cache file, whatever the kernel keeps.
func TestBackupyCacheReuseInOneMount(t *testing.T) {
	s, keys := newBackupyStore(t)
	bm := mountBackupyStores(t, t.TempDir(), 0, bkSource{"db", s.dir, keys})
	p := bm.path("db/co_1/agt_1/job_pg/run_pg1.pgdump")
	want := s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"]
	for i := range 3 {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		// Drop what the kernel cached, so reads reach the mount.
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d: %d bytes, %v", i, len(got), err)
		}
	}
	if n := bm.passes("run_pg1"); n != 1 {
		t.Fatalf("%d decode passes for three reads:\n%s", n, bm.log)
	}
}
