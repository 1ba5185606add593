package fs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/backupfs/backupfs/fs"
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
	pg := dumpOf("PGDMP\x01\x10\x00", 3<<20+12345, 1) // four frames
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
	keys, err := backupy.LoadKeys(backupy.KeySources{TokenFiles: []string{tok}, KeyringFiles: []string{ring}, Getenv: func(string) string { return "" }}, nil)
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
	mnt    *fs.Mount
}

// mountBackupyStores mounts the stores, sharing one cache directory. The
// stores log at debug level, so their decode passes show in m.log.
func mountBackupyStores(t *testing.T, cacheDir string, views backupy.Views, srcs ...bkSource) *bkMount {
	t.Helper()
	fusetest.RequireFUSE(t)
	bm := &bkMount{mounted: &mounted{log: &logBuffer{}}}
	storeLog := slog.New(slog.NewTextHandler(bm.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bm.fs = fs.New(fs.Options{Logger: newTestLogger(bm.log)})
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
	mnt, err := bm.fs.Mount(bm.dir, fs.MountOptions{})
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

// Damage found in a Backupy object fails its reads with EIO, never wrong
// bytes; other objects keep working.
func TestBackupyCorruption(t *testing.T) {
	for _, tt := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"flipped byte in a frame", func(b []byte) []byte { b[1<<20+100] ^= 1; return b }},
		{"missing EOF marker", func(b []byte) []byte { return b[:len(b)-4] }},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0, 0, 0, 0, 1) }},
		{"truncated mid-frame", func(b []byte) []byte { return b[:2<<20] }},
		{"frames swapped", func(b []byte) []byte {
			const f = 1048608
			out := append([]byte(nil), b...)
			copy(out[0:f], b[f:2*f])
			copy(out[f:2*f], b[0:f])
			return out
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, keys := newBackupyStore(t)
			p := filepath.Join(s.dir, "co_1/agt_1/job_pg/run_pg1.enc")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, tt.damage(b), 0o644)
			m, _ := mountBackupy(t, s.dir, keys, 0)
			dir := m.path("db/co_1/agt_1/job_pg")
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				got, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err == nil && bytes.Equal(got, s.dumps["co_1/agt_1/job_pg/run_pg1.pgdump"]) && tt.name != "frames swapped" {
					continue
				}
				if err == nil && strings.HasSuffix(e.Name(), ".enc") {
					continue // a damaged object may be shown raw, which is the truth
				}
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("%s: %v (%d bytes), want EIO", e.Name(), err, len(got))
				}
			}
			if got, err := os.ReadFile(m.path("db/co_1/agt_1/job_sql/run_sql1.sql")); err != nil || !bytes.Equal(got, s.dumps["co_1/agt_1/job_sql/run_sql1.sql"]) {
				t.Errorf("another object: %v", err)
			}
			if !strings.Contains(m.log.String(), "run_pg1") {
				t.Errorf("no log line names the object:\n%s", m.log)
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
