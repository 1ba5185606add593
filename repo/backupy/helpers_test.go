package backupy

import (
	"archive/tar"
	"bufio"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Known-answer vectors of docs/backupy-format.md §8.
const (
	katKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	katKeyB64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	kat1Plain = "Hello, Backupy! This is a small test backup.\n"
	kat1Blob  = "00000056a0a1a2a3a4a5a6a7a8a9aaabcead53d041cb6bbe622de2bf6b15ecfe32cd3a7be7c73b4dbc5a4eef0c8b1c72f217678cc2433f517fe861bb7d5ae198247033384cda143d3cc0f61d7db87e1231614d3650de5615361300000000"
	kat1SHA   = "8721987f7163abebf7826647df84de91b28f4a3e2be34a1ae11563a16d2e6742"
	katEmpty  = "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
	katJWT    = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhbGciOiJBRVMtMjU2LUdDTSIsImF1ZCI6ImJhY2t1cHktZGVjcnlwdCIsImNvbXBhbnlfaWQiOiJjby1rYXQiLCJkZWsiOiJBQUVDQXdRRkJnY0lDUW9MREEwT0R4QVJFaE1VRlJZWEdCa2FHeHdkSGg4PSIsImV4cCI6NDEwMjQ0NDgwMCwiZm9ybWF0X3ZlcnNpb24iOjEsImlhdCI6MTc2NzIyNTYwMCwiaXNzIjoiYmFja3VweS1zZXJ2ZXIiLCJydW5faWQiOiJydW4ta2F0MSIsInNoYTI1NiI6Ijg3MjE5ODdmNzE2M2FiZWJmNzgyNjY0N2RmODRkZTkxYjI4ZjRhM2UyYmUzNGExYWUxMTU2M2ExNmQyZTY3NDIiLCJzdWIiOiJ1c2VyLTEifQ.MpUV287Q5M5ozcrwwbC-Rn3ezTgEqFbRLsvVz6CUZy4"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newKey(t testing.TB) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// agentZstd compresses a dump the way the agent does: a zstd.Writer at the
// default level fed by io.Copy and closed once. peeked drivers (pg_dump,
// mysqldump) read through a 64-byte bufio.Reader whose first bytes were
// peeked for the smoke check.
func agentZstd(t testing.TB, dump []byte, peeked bool) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		t.Fatal(err)
	}
	// The agent reads from an io.Pipe: no WriterTo shortcut, no size
	// hint, so io.Copy ends up in the encoder's ReadFrom.
	var src io.Reader = struct{ io.Reader }{bytes.NewReader(dump)}
	if peeked {
		br := bufio.NewReaderSize(src, 64)
		br.Peek(16)
		src = br
	}
	if _, err := io.Copy(zw, src); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// agentEncrypt frames a compressed stream as the agent does; a nil key
// returns it unchanged (an unencrypted job).
func agentEncrypt(t testing.TB, zst, key []byte) []byte {
	t.Helper()
	if key == nil {
		return zst
	}
	var out bytes.Buffer
	w, err := gcmframe.NewWriter(&out, key)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's encryptor reads with io.ReadFull into 1 MiB buffers;
	// odd-sized writes exercise the same frame cutting.
	for rest := zst; len(rest) > 0; {
		n := min(len(rest), 300_001)
		w.Write(rest[:n])
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Dump generators, one per driver of docs/backupy-format.md §5.1.

func noise(seed uint64, n int) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// textish is compressible but not trivially: lines with counters.
func textish(seed uint64, n int) []byte {
	r := mrand.New(mrand.NewPCG(seed, 7))
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "INSERT INTO `t` VALUES (%d,'%x',%d);\n", i, r.Uint64(), r.IntN(1e6))
	}
	return b.Bytes()[:n]
}

func pgDump(n int) []byte {
	head := []byte("PGDMP\x01\x10\x00\x04\x08\x08\x01\x01\x01")
	return append(head, append(textish(1, n/2), noise(2, n-n/2-len(head))...)...)
}

func mysqlDump(n int) []byte {
	head := "-- MariaDB dump 10.19  Distrib 10.11.8-MariaDB, for Linux (x86_64)\n--\n-- Host: db    Database: app\n"
	return append([]byte(head), textish(3, n-len(head))...)
}

func sandboxDump(n int) []byte {
	head := mariadbSandboxLine + "\n-- MariaDB dump 10.19-11.4.2-MariaDB, for Linux (x86_64)\n"
	return append([]byte(head), textish(4, n-len(head))...)
}

func gzipped(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func mongoDump(t testing.TB, n int) []byte {
	return gzipped(t, append([]byte{0x6d, 0xe2, 0x99, 0x81, 1, 0, 0, 0}, textish(5, n)...))
}

func redisDump(t testing.TB, n int) []byte {
	rdb := append([]byte("REDIS0011\xfa\x09redis-ver\x057.2.4"), noise(6, n)...)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "dump.rdb", Mode: 0o600, Size: int64(len(rdb)), ModTime: time.Unix(1767225600, 0)})
	tw.Write(rdb)
	tw.Close()
	return gzipped(t, tb.Bytes())
}

func sqliteDump(t testing.TB, n int) []byte {
	return gzipped(t, append([]byte("SQLite format 3\x00\x10\x00\x01\x01"), textish(8, n)...))
}

// jwt builds an unsigned-looking token with the given claims.
func jwt(claims map[string]any) string {
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(claims)
	return head + "." + base64.RawURLEncoding.EncodeToString(body) + ".c2ln"
}

func tokenFor(key []byte, runID, sha string) string {
	c := map[string]any{
		"iss": "backupy-server", "aud": "backupy-decrypt", "sub": "user-1",
		"run_id": runID, "company_id": "co-1", "exp": time.Now().Add(15 * time.Minute).Unix(),
		"dek": base64.StdEncoding.EncodeToString(key), "alg": "AES-256-GCM", "format_version": 1,
	}
	if sha != "" {
		c["sha256"] = sha
	}
	return jwt(c)
}

func mustToken(t testing.TB, s string) *Token {
	t.Helper()
	tok, err := ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// logBuffer captures log output for checks that keys never appear in it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// keyLeaks lists the encodings of key a log or message must not contain.
func keyLeaks(key []byte) []string {
	return []string{
		hex.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key)),
		base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key),
		base64.RawStdEncoding.EncodeToString(key),
	}
}

func assertNoLeak(t testing.TB, text string, keys ...[]byte) {
	t.Helper()
	for _, k := range keys {
		for _, enc := range keyLeaks(k) {
			if strings.Contains(text, enc) {
				t.Fatalf("key material leaked: %q", text)
			}
		}
	}
}

// testStore writes objects into a fresh store directory and opens it with
// every view enabled.
type testStore struct {
	t        testing.TB
	dir      string
	cacheDir string
	log      *logBuffer
	opts     Options
	*Store
}

func newTestStore(t testing.TB, keys *Keyring, objects map[string][]byte) *testStore {
	t.Helper()
	ts := &testStore{t: t, dir: t.TempDir(), cacheDir: t.TempDir(), log: &logBuffer{}}
	for name, data := range objects {
		ts.write(name, data)
	}
	ts.opts = Options{Keys: keys, CacheDir: ts.cacheDir, Views: AllViews, Logger: ts.log.logger(), Chunks: cache.New(32 << 20)}
	ts.open()
	return ts
}

func (ts *testStore) write(name string, data []byte) {
	p := filepath.Join(ts.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		ts.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testStore) open() {
	ts.t.Helper()
	s, err := OpenStore(context.Background(), ts.dir, ts.opts)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.Store = s
	ts.t.Cleanup(func() { s.Close() })
}

func (ts *testStore) reopen() {
	ts.t.Helper()
	ts.Store.Close()
	ts.open()
}

func (ts *testStore) blob(name string) *Blob {
	ts.t.Helper()
	b := ts.Blob(name)
	if b == nil {
		ts.t.Fatalf("no blob %s", name)
	}
	return b
}

// file returns the blob's view of the given kind.
func (ts *testStore) file(name string, kind FileKind) *File {
	ts.t.Helper()
	files, err := ts.Files(context.Background(), ts.blob(name))
	if err != nil {
		ts.t.Fatal(err)
	}
	for _, f := range files {
		if f.Kind() == kind {
			return f
		}
	}
	ts.t.Fatalf("%s has no %v view", name, kind)
	return nil
}

// readAll reads a file through one handle in chunks of n bytes.
func readAll(ctx context.Context, f *File, n int) ([]byte, error) {
	h, err := f.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return readHandle(ctx, h, n)
}

func readHandle(ctx context.Context, h Handle, n int) ([]byte, error) {
	var out []byte
	buf := make([]byte, n)
	for off := int64(0); ; {
		m, err := h.ReadAt(ctx, buf, off)
		out = append(out, buf[:m]...)
		off += int64(m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if m == 0 {
			return out, errors.New("zero-length read without EOF")
		}
	}
}

func dataFiles(t testing.TB, dir string) []string {
	m, err := filepath.Glob(filepath.Join(dir, "*.dat"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
