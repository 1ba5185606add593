package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// stop unmounts with SIGTERM and waits for a clean exit.
func (p *mountProcess) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr)
	}
}

func readIndex(t *testing.T, cacheDir string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cacheDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Entries map[string]map[string]any `json:"entries"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Entries
}

// Two stores, one token on standard input: both stores get the key (it is
// read once per mount), and both stores' sizes are saved in the one cache
// directory, so a remount lists them without decoding.
func TestMountBackupyTwoStoresTokenOnStdin(t *testing.T) {
	kat, _ := hex.DecodeString(bkKAT1Blob)
	var stores []string
	for range 2 {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "job"), 0o700)
		os.WriteFile(filepath.Join(d, "job", "run_run-kat1.enc"), kat, 0o600)
		stores = append(stores, d)
	}
	cacheDir := t.TempDir()
	args := func(dir string, extra ...string) []string {
		a := append([]string{"--backupy", stores[0], "--backupy", stores[1], "--backupy-token", "-", "--backupy-cache-dir", cacheDir}, extra...)
		return append(a, dir)
	}
	dir := t.TempDir()
	p := startMountStdin(t, []byte(bkKATJWT+"\n"), nil, args(dir)...)
	for _, s := range stores {
		view := filepath.Join(dir, filepath.Base(s), "job", "run_run-kat1.bin")
		if b, err := os.ReadFile(view); err != nil || string(b) != bkKAT1Plain {
			t.Fatalf("%s: %q %v\n%s", view, b, err, p.stderr)
		}
	}
	p.stop(t)
	sized := map[string]bool{}
	for _, e := range readIndex(t, cacheDir) {
		if e["decoded"] == float64(len(bkKAT1Plain)) {
			sized[e["store"].(string)] = true
		}
	}
	if len(sized) != 2 {
		t.Fatalf("sizes saved for %d stores, want 2: %v", len(sized), readIndex(t, cacheDir))
	}

	// Remount (with --debug, so decode passes would be logged): exact
	// sizes at once, no pass.
	dir = t.TempDir()
	p = startMountStdin(t, []byte(bkKATJWT+"\n"), nil, args(dir, "--debug")...)
	for _, s := range stores {
		fi, err := os.Stat(filepath.Join(dir, filepath.Base(s), "job", "run_run-kat1.bin"))
		if err != nil || fi.Size() != int64(len(bkKAT1Plain)) {
			t.Fatalf("size after remount: %v %v", fi, err)
		}
	}
	if strings.Contains(p.stderr.String(), "full decode pass") {
		t.Fatalf("the remount decoded again:\n%s", p.stderr)
	}
	p.stop(t)
}

// A blob of several frames through the real command, with every view.
func TestMountBackupyMultiFrame(t *testing.T) {
	store, cacheDir := t.TempDir(), t.TempDir()
	dump := append([]byte("PGDMP\x01\x10\x00"), make([]byte, 3<<20+4321)...)
	rand.Read(dump[8:]) // incompressible: the stream spans four frames
	var zst bytes.Buffer
	zw, _ := zstd.NewWriter(&zst)
	io.Copy(zw, struct{ io.Reader }{bytes.NewReader(dump)})
	zw.Close()
	dek := make([]byte, 32)
	rand.Read(dek)
	var blob bytes.Buffer
	fw, _ := gcmframe.NewWriter(&blob, dek)
	fw.Write(zst.Bytes())
	fw.Close()
	if frames := (blob.Len() - 4 + gcmframe.FullFrameSize - 1) / gcmframe.FullFrameSize; frames < 3 {
		t.Fatalf("only %d frames", frames)
	}
	obj := filepath.Join(store, "co_1", "agt_1", "job_pg", "run_big.enc")
	os.MkdirAll(filepath.Dir(obj), 0o700)
	os.WriteFile(obj, blob.Bytes(), 0o600)
	sum := sha256.Sum256(blob.Bytes())
	tok := filepath.Join(t.TempDir(), "big.jwt")
	os.WriteFile(tok, []byte(bkToken(t, dek, "big", hex.EncodeToString(sum[:]))), 0o600)

	dir := t.TempDir()
	startMount(t, nil, "--backupy", store, "--backupy-token", tok, "--backupy-cache-dir", cacheDir, "--backupy-views", "zst,meta", dir)
	job := filepath.Join(dir, filepath.Base(store), "co_1", "agt_1", "job_pg")
	fi, err := os.Stat(filepath.Join(job, "run_big.pgdump"))
	if err != nil || fi.Size() != int64(len(dump)) {
		t.Fatalf("stat: %v %v", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(job, "run_big.pgdump")); err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("dump: %d bytes, %v", len(got), err)
	}
	// Random access into the last frames, and the .zst view.
	f, err := os.Open(filepath.Join(job, "run_big.pgdump"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5000)
	if _, err := f.ReadAt(buf, int64(len(dump))-6000); err != nil || !bytes.Equal(buf, dump[len(dump)-6000:len(dump)-1000]) {
		t.Fatalf("random read: %v", err)
	}
	f.Close()
	if got, err := os.ReadFile(filepath.Join(job, "run_big.pgdump.zst")); err != nil || !bytes.Equal(got, zst.Bytes()) {
		t.Fatalf(".zst view: %d bytes, %v", len(got), err)
	}
	state := make([]byte, 32)
	n, err := unix.Getxattr(filepath.Join(job, "run_big.pgdump"), "user.backupy.state", state)
	if err != nil || string(state[:n]) != "verified" {
		t.Fatalf("state %q %v", state[:n], err)
	}
	frames := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(job, "run_big.pgdump"), "user.backupy.frames", frames); err != nil || string(frames[:n]) != "4" {
		t.Fatalf("frames %q %v", frames[:n], err)
	}
}

// [[backupy]] in the configuration file: name, keys, views, cache and
// hide_foreign.
func TestMountBackupyFromConfig(t *testing.T) {
	f := newBkFixture(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, []byte(`
[[backupy]]
name = "databases"
dir = "`+f.dir+`"
tokens = ["`+f.token+`"]
views = "zst,meta"
cache_dir = "`+f.cache+`"
hide_foreign = true
`), 0o600)
	dir := t.TempDir()
	startMount(t, nil, "--config", cfg, dir)
	top, err := os.ReadDir(filepath.Join(dir, "databases"))
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 1 || top[0].Name() != "co_kat" {
		t.Fatalf("store top level %v: the foreign README should be hidden", top)
	}
	job := filepath.Join(dir, "databases", "co_kat", "agt_1", "job_1")
	ents, _ := os.ReadDir(job)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, want := range []string{"run_run-kat1.bin", "run_run-kat1.bin.zst", "run_run-kat1.meta.json", "run_plain.sql"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s lacks %s: %v", job, want, names)
		}
	}
	if b, err := os.ReadFile(filepath.Join(job, "run_run-kat1.bin")); err != nil || string(b) != bkKAT1Plain {
		t.Fatalf("KAT-1: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(f.cache, "index.json")); err != nil {
		t.Fatalf("cache_dir not used: %v", err)
	}
}

// Foreign files are shown byte for byte, or hidden with the flag.
func TestMountBackupyHideForeign(t *testing.T) {
	f := newBkFixture(t)
	for _, hide := range []bool{false, true} {
		dir := t.TempDir()
		args := []string{"--backupy", f.dir, "--backupy-cache-dir", f.cache}
		if hide {
			args = append(args, "--backupy-hide-foreign")
		}
		p := startMount(t, nil, append(args, dir)...)
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(f.dir), "README"))
		switch {
		case hide && !os.IsNotExist(err):
			t.Fatalf("hidden foreign file: %q %v", b, err)
		case !hide && (err != nil || string(b) != "not a backup"):
			t.Fatalf("foreign file: %q %v", b, err)
		}
		p.stop(t)
	}
}

// Keys are loaded once per mount, shared by the stores, and wiped at the
// end.
func TestBackupyMountKeysLoadedOnceAndWiped(t *testing.T) {
	f := newBkFixture(t)
	other := filepath.Join(t.TempDir(), "other.jwt")
	os.WriteFile(other, []byte(bkToken(t, bytes.Repeat([]byte{9}, 32), "run-9", "")), 0o600)
	ring := filepath.Join(t.TempDir(), "ring")
	os.WriteFile(ring, []byte("* hex:"+strings.Repeat("ab", 32)+"\n"), 0o600)
	e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string {
		if k == envBackupyKeyring {
			return ring
		}
		return ""
	}}
	e.log = slog.New(slog.DiscardHandler)
	by := backupyMountFlags{tokens: backupyList{f.token}}
	a, err := by.keysFor(e, backupyConfig{Dir: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := by.keysFor(e, backupyConfig{Dir: "b", Tokens: []string{other}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := by.keysFor(e, backupyConfig{Dir: "c", Keyrings: []string{ring}})
	if err != nil {
		t.Fatal(err)
	}
	// Flag token and environment keyring; plus the store's token; the
	// store's own keyring replaces the environment's.
	if a.Len() != 2 || b.Len() != 3 || c.Len() != 2 {
		t.Fatalf("keys %d %d %d", a.Len(), b.Len(), c.Len())
	}
	// Standard input is read by the first store only (the binary test
	// above reads it); a second "-" is refused rather than read empty.
	by.stdinUsed = true
	if _, err := by.keysFor(e, backupyConfig{Dir: "d", Tokens: []string{"-"}}); err == nil || !strings.Contains(err.Error(), "only once") {
		t.Fatalf("second use of standard input: %v", err)
	}
	by.wipeKeys()
	if a.Len()+b.Len()+c.Len() != 0 || len(by.loaded) != 0 {
		t.Fatal("keys left after wipeKeys")
	}
}
