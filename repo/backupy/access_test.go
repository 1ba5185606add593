package backupy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// multiFrame is a dump whose compressed stream spans several frames.
type multiFrame struct {
	dump, zst, blob []byte
	key             []byte
	name            string
}

func newMultiFrame(t testing.TB, size int) *multiFrame {
	m := &multiFrame{dump: pgDump(size), key: newKey(t), name: "co_1/agt_1/job_1/run_multi.enc"}
	m.zst = agentZstd(t, m.dump, true)
	m.blob = agentEncrypt(t, m.zst, m.key)
	if len(m.zst) < 3<<20 {
		t.Fatalf("compressed stream only %d bytes", len(m.zst))
	}
	return m
}

func (m *multiFrame) keyring(t testing.TB, withSHA bool) *Keyring {
	kr := NewKeyring()
	sha := ""
	if withSHA {
		sha = shaHex(m.blob)
	}
	kr.AddToken(mustToken(t, tokenFor(m.key, "multi", sha)), "test")
	return kr
}

// checkRandomReads reads random ranges, forwards and backwards, through h.
func checkRandomReads(t testing.TB, ctx context.Context, h Handle, want []byte, seed uint64, n int) {
	t.Helper()
	r := mrand.New(mrand.NewPCG(seed, 1))
	for i := range n {
		off := r.Int64N(int64(len(want)))
		ln := 1 + r.IntN(300_000)
		if i%5 == 0 {
			off = int64(len(want)) - int64(r.IntN(1000)) - 1 // near the end
		}
		buf := make([]byte, ln)
		got, err := h.ReadAt(ctx, buf, off)
		end := min(off+int64(ln), int64(len(want)))
		if got != int(end-off) {
			t.Fatalf("read %d@%d: got %d bytes, %v", ln, off, got, err)
		}
		if err != nil && !(err == io.EOF && end == int64(len(want))) {
			t.Fatalf("read %d@%d: %v", ln, off, err)
		}
		if !bytes.Equal(buf[:got], want[off:end]) {
			t.Fatalf("read %d@%d: wrong bytes", ln, off)
		}
	}
}

func TestRandomAccess(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	ts := newTestStore(t, m.keyring(t, true), map[string][]byte{m.name: m.blob})

	// The .zst view is random-access by frame, without any decode pass.
	zh, err := ts.file(m.name, FileZst).Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkRandomReads(t, ctx, zh, m.zst, 1, 200)
	zh.Close()
	if len(dataFiles(t, ts.CacheDir())) != 0 {
		t.Fatal("the .zst view started a decode")
	}

	// The main view: random first read goes to the shared job.
	h, err := ts.file(m.name, FileMain).Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	buf := make([]byte, 1000)
	if _, err := h.ReadAt(ctx, buf, int64(len(m.dump))-5000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, m.dump[len(m.dump)-5000:len(m.dump)-4000]) {
		t.Fatal("wrong bytes near the end")
	}
	checkRandomReads(t, ctx, h, m.dump, 2, 300)
	if st := ts.blob(m.name).State(); st != "verified" {
		t.Fatalf("state %s after the shared job finished", st)
	}
}

func TestStreamingFastPath(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	ts := newTestStore(t, m.keyring(t, true), map[string][]byte{m.name: m.blob})
	ts.opts.StreamWindow = 2 << 20 // smaller than the dump, so old bytes drop out
	ts.reopen()
	main := ts.file(m.name, FileMain)
	h, err := main.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Readahead-like order: chunks of 128 KiB, pairs swapped, with an
	// occasional re-read a little behind.
	const chunk = 128 << 10
	var order []int64
	for off := int64(0); off < int64(len(m.dump)); off += 2 * chunk {
		order = append(order, off+chunk, off)
		if off > 4*chunk && off%(8*chunk) == 0 {
			order = append(order, off-3*chunk)
		}
	}
	order = append(order, int64(len(m.dump))) // the kernel's read at EOF
	buf := make([]byte, chunk)
	for _, off := range order {
		n, err := h.ReadAt(ctx, buf, off)
		if off >= int64(len(m.dump)) {
			if n != 0 || err != io.EOF {
				t.Fatalf("read past end: %d %v", n, err)
			}
			continue
		}
		end := min(off+chunk, int64(len(m.dump)))
		if n != int(end-off) || !bytes.Equal(buf[:n], m.dump[off:end]) || (err != nil && err != io.EOF) {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
	}
	// The last chunk reached the end, which completed the private pass.
	if files := dataFiles(t, ts.CacheDir()); len(files) != 0 {
		t.Fatalf("streaming reads wrote to the disk cache: %v", files)
	}
	if n, ok := main.SizeKnown(); !ok || n != int64(len(m.dump)) {
		t.Fatalf("size after a streaming pass: %d %v", n, ok)
	}
	if st := ts.blob(m.name).State(); st != "verified" {
		t.Fatalf("state %s", st)
	}
	// A seek far back leaves the window: the handle switches to the job.
	if _, err := h.ReadAt(ctx, buf, 10); err != nil || !bytes.Equal(buf, m.dump[10:10+chunk]) {
		t.Fatalf("backwards read: %v", err)
	}
	if files := dataFiles(t, ts.CacheDir()); len(files) != 1 {
		t.Fatalf("backwards seek did not use the shared cache: %v", files)
	}
}

func TestConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: m.blob})
	main := ts.file(m.name, FileMain)
	zst := ts.file(m.name, FileZst)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, want := main, m.dump
			if i%3 == 2 {
				f, want = zst, m.zst
			}
			h, err := f.Open(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			if i == 0 {
				got, err := readHandle(ctx, h, 64<<10)
				if err != nil || !bytes.Equal(got, want) {
					errs <- errors.New("sequential reader got wrong bytes")
				}
				return
			}
			checkRandomReads(t, ctx, h, want, uint64(i), 60)
		}()
	}
	// Size and readers of one handle at once.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if n, err := main.Size(ctx); err != nil || n != int64(len(m.dump)) {
			errs <- errors.New("Size disagrees")
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCacheReuse(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: m.blob})
	main := ts.file(m.name, FileMain)
	before := passesStarted.Load()
	if n, err := main.Size(ctx); err != nil || n != int64(len(m.dump)) {
		t.Fatalf("Size = %d, %v", n, err)
	}
	if len(dataFiles(t, ts.CacheDir())) != 1 {
		t.Fatal("no cache file after the pass")
	}
	// Another handle, random and sequential reads: no new pass.
	for range 2 {
		h, _ := main.Open(ctx)
		checkRandomReads(t, ctx, h, m.dump, 3, 20)
		got, err := readHandle(ctx, h, 1<<20)
		if err != nil || !bytes.Equal(got, m.dump) {
			t.Fatal("cached read wrong")
		}
		h.Close()
	}
	if d := passesStarted.Load() - before; d != 1 {
		t.Fatalf("%d passes for one object", d)
	}

	// A new mount (same cache directory): exact size at once, and reads
	// come from the cached file.
	ts.reopen()
	main = ts.file(m.name, FileMain)
	if n, ok := main.SizeKnown(); !ok || n != int64(len(m.dump)) {
		t.Fatalf("size not remembered: %d %v", n, ok)
	}
	got, err := readAll(ctx, main, 1<<20)
	if err != nil || !bytes.Equal(got, m.dump) {
		t.Fatal("read after reopen wrong")
	}
	if d := passesStarted.Load() - before; d != 1 {
		t.Fatalf("reopen decoded again (%d passes)", d)
	}
	// The remembered ciphertext hash now selects the key by sha256, and
	// a remembered fingerprint is kept in the index, never the key.
	if e, ok := ts.disk.lookup(ts.blob(m.name).id); !ok || e.SHA256 != shaHex(m.blob) || e.KeyID == "" {
		t.Fatalf("index entry %+v", e)
	}
}

// Stores opened on the same cache directory in one process (a mount of
// several stores) share it: one lock, one index holding every store's
// entries, so each store's sizes survive a remount.
func TestStoresShareCacheDir(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	cacheDir := t.TempDir()
	dirs := []string{t.TempDir(), t.TempDir()}
	open := func() []*Store {
		var stores []*Store
		for _, d := range dirs {
			s, err := OpenStore(ctx, d, Options{Keys: m.keyring(t, false), CacheDir: cacheDir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			stores = append(stores, s)
		}
		return stores
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "run_multi.enc"), m.blob, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stores := open()
	if stores[0].disk != stores[1].disk || !stores[0].disk.owner {
		t.Fatal("the second store did not share the first one's cache directory")
	}
	for _, s := range stores {
		f, err := s.Main(ctx, s.Blob("run_multi.enc"))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := f.Size(ctx); err != nil || n != int64(len(m.dump)) {
			t.Fatalf("Size = %d, %v", n, err)
		}
	}
	// Closing one store leaves the other working.
	stores[0].Close()
	if got, err := readAll(ctx, mustMain(t, stores[1]), 1<<20); err != nil || !bytes.Equal(got, m.dump) {
		t.Fatalf("read after the other store closed: %v", err)
	}
	stores[1].Close()
	var idx indexFile
	if b, err := os.ReadFile(filepath.Join(cacheDir, indexName)); err != nil || json.Unmarshal(b, &idx) != nil {
		t.Fatalf("index: %v", err)
	}
	seen := map[string]bool{}
	for _, e := range idx.Entries {
		if e.Decoded != nil && *e.Decoded == int64(len(m.dump)) {
			seen[e.Store] = true
		}
	}
	if len(seen) != 2 {
		t.Fatalf("index holds sizes of %d stores, want 2: %+v", len(seen), idx.Entries)
	}

	// Remount: both sizes are known without decoding, and both read from
	// the cached files.
	before := passesStarted.Load()
	for _, s := range open() {
		f := mustMain(t, s)
		if n, ok := f.SizeKnown(); !ok || n != int64(len(m.dump)) {
			t.Fatalf("%s: size not remembered: %d %v", s.Root(), n, ok)
		}
		if got, err := readAll(ctx, f, 1<<20); err != nil || !bytes.Equal(got, m.dump) {
			t.Fatalf("%s: read after remount: %v", s.Root(), err)
		}
	}
	if d := passesStarted.Load() - before; d != 0 {
		t.Fatalf("%d decode passes after the remount", d)
	}
}

func mustMain(t testing.TB, s *Store) *File {
	t.Helper()
	f, err := s.Main(context.Background(), s.Blobs()[0])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A cache directory locked by another process is read (its index still
// gives sizes) but not written: decoding goes to a private directory that
// is removed on close.
func TestLockedCacheDirIsReadOnly(t *testing.T) {
	ctx := context.Background()
	m := newMultiFrame(t, 6<<20)
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: m.blob})
	if _, err := ts.file(m.name, FileMain).Size(ctx); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	// Another process holds the lock (a second open file description is
	// as good as another process for flock).
	unlock, err := lockDir(filepath.Join(ts.cacheDir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	index, _ := os.ReadFile(filepath.Join(ts.cacheDir, indexName))
	ts.open()
	if ts.disk.owner || ts.disk.dir == ts.disk.shared {
		t.Fatal("a locked cache directory was taken over")
	}
	b := ts.blob(m.name)
	files, _ := ts.Files(ctx, b)
	if n, ok := files[0].SizeKnown(); !ok || n != int64(len(m.dump)) {
		t.Fatalf("size from the other process's index: %d %v", n, ok)
	}
	// Decoding goes to the private directory.
	for _, e := range ts.disk.entries {
		e.Cached = 0
	}
	got, err := readAll(ctx, files[0], 1<<20)
	if err != nil || !bytes.Equal(got, m.dump) {
		t.Fatalf("read: %v", err)
	}
	private := ts.disk.dir
	ts.Close()
	if _, err := os.Stat(private); !os.IsNotExist(err) {
		t.Fatalf("private directory left behind: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(ts.cacheDir, indexName)); !bytes.Equal(after, index) {
		t.Fatal("the index of a locked directory was rewritten")
	}
}

func TestEviction(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	kr := NewKeyring()
	kr.AddToken(mustToken(t, tokenFor(key, "x", "")), "t")
	dumps := map[string][]byte{}
	objects := map[string][]byte{}
	for _, name := range []string{"run_a.enc", "run_b.enc", "run_c.enc"} {
		d := textish(uint64(len(dumps)), 2<<20)
		dumps[name] = d
		objects[name] = agentEncrypt(t, agentZstd(t, d, false), key)
	}
	ts := newTestStore(t, kr, objects)
	ts.opts.CacheMaxBytes = 5 << 20 // two of the three fit
	ts.reopen()

	held, err := ts.file("run_a.enc", FileMain).Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	held.ReadAt(ctx, buf, 1<<20) // forces the shared job
	for _, name := range []string{"run_a.enc", "run_b.enc", "run_c.enc"} {
		time.Sleep(10 * time.Millisecond) // distinct last-use times
		if _, err := ts.file(name, FileMain).Size(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// run_a is held open, so run_b (least recently used of the rest) went.
	files := dataFiles(t, ts.CacheDir())
	if len(files) != 2 {
		t.Fatalf("%d cache files, want 2", len(files))
	}
	if e, _ := ts.disk.lookup(ts.blob("run_b.enc").id); e.Cached != 0 {
		t.Fatal("run_b's file was not the one evicted")
	}
	if e, _ := ts.disk.lookup(ts.blob("run_a.enc").id); e.Cached == 0 {
		t.Fatal("the open file was evicted")
	}
	// The evicted object still reads (decoding again) and keeps its size.
	if n, ok := ts.file("run_b.enc", FileMain).SizeKnown(); !ok || n != int64(len(dumps["run_b.enc"])) {
		t.Fatal("evicted object lost its size")
	}
	got, err := readAll(ctx, ts.file("run_b.enc", FileMain), 1<<20)
	if err != nil || !bytes.Equal(got, dumps["run_b.enc"]) {
		t.Fatal("evicted object reads wrong")
	}
	held.Close()
}

func TestWaitIsInterruptible(t *testing.T) {
	m := newMultiFrame(t, 8<<20)
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: m.blob})
	h, err := ts.file(m.name, FileMain).Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	buf := make([]byte, 10)
	if _, err := h.ReadAt(ctx, buf, int64(len(m.dump))-10); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read = %v", err)
	}
	if _, err := ts.file(m.name, FileMain).Size(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Size = %v", err)
	}
	// The job went on for others.
	if n, err := ts.file(m.name, FileMain).Size(context.Background()); err != nil || n != int64(len(m.dump)) {
		t.Fatalf("Size after a cancelled wait: %d %v", n, err)
	}
}

func TestCloseStopsJobs(t *testing.T) {
	m := newMultiFrame(t, 8<<20)
	ts := newTestStore(t, m.keyring(t, false), map[string][]byte{m.name: m.blob})
	ctx := context.Background()
	h, _ := ts.file(m.name, FileMain).Open(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := h.ReadAt(ctx, make([]byte, 10), int64(len(m.dump))-10)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ts.Close()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
			t.Fatalf("read during close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read hung after Close")
	}
	h.Close()
	if _, err := h.ReadAt(ctx, make([]byte, 1), 0); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
