package serve

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/cache/sealed"
	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// logLines collects a logger's lines for assertions.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *logLines) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openRemote opens cmd's repository through a Source with key.
func openRemote(t testing.TB, ctx context.Context, cmd Command, key *bupstash.Key, o Options) (*bupstash.Repository, *Source) {
	t.Helper()
	src, err := Open(ctx, cmd, o)
	if err != nil {
		t.Fatalf("open %s: %v", cmd.Name, err)
	}
	t.Cleanup(func() { src.Close() })
	r, err := bupstash.New(src, key, bupstash.Options{Cache: cache.New(64 << 20), Logger: o.Dial.Logger})
	if err != nil {
		t.Fatal(err)
	}
	return r, src
}

func loadKey(t testing.TB, rel string) *bupstash.Key {
	t.Helper()
	k, err := bupstashtest.LoadKey(filepath.Join(moduleRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openLocal(t testing.TB, ctx context.Context, dir string, key *bupstash.Key) *bupstash.Repository {
	t.Helper()
	r, err := bupstash.Open(ctx, dir, key, bupstash.Options{Cache: cache.New(64 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readAll(t testing.TB, ctx context.Context, f *bupstash.File) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := f.NewReader().WriteToContext(ctx, &b); err != nil {
		t.Fatalf("reading: %v", err)
	}
	return b.Bytes()
}

// compareRepos checks that remote reads exactly what local does: the
// items, every index entry, every file's bytes read whole and at random
// offsets. It returns the number of files compared.
func compareRepos(t testing.TB, ctx context.Context, local, remote *bupstash.Repository) int {
	t.Helper()
	li, err := local.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ri, err := remote.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(li) != len(ri) {
		t.Fatalf("remote lists %d items, local %d", len(ri), len(li))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	files := 0
	for i := range li {
		if li[i].ID != ri[i].ID || !li[i].Timestamp.Equal(ri[i].Timestamp) || !reflect.DeepEqual(li[i].Tags, ri[i].Tags) {
			t.Fatalf("item %d: remote %s, local %s", i, ri[i].ID, li[i].ID)
		}
		lo, ro := local.OpenItem(li[i]), remote.OpenItem(ri[i])
		compareFile := func(lf, rf *bupstash.File, what string) {
			want := readAll(t, ctx, lf)
			got := readAll(t, ctx, rf)
			if !bytes.Equal(got, want) {
				t.Fatalf("item %s %s: remote read %d bytes differing from the %d read locally", li[i].ID, what, len(got), len(want))
			}
			files++
			for range 3 {
				if len(want) == 0 {
					break
				}
				off := rng.IntN(len(want))
				n := min(rng.IntN(70000)+1, len(want)-off)
				buf := make([]byte, n)
				if _, err := rf.NewReader().ReadAtContext(ctx, buf, int64(off)); err != nil && err != io.EOF {
					t.Fatalf("item %s %s: read at %d: %v", li[i].ID, what, off, err)
				}
				if !bytes.Equal(buf, want[off:off+n]) {
					t.Fatalf("item %s %s: %d bytes at %d differ", li[i].ID, what, n, off)
				}
			}
		}
		if !li[i].HasIndex() {
			lf, err := lo.Data()
			if err != nil {
				t.Fatal(err)
			}
			rf, err := ro.Data()
			if err != nil {
				t.Fatal(err)
			}
			compareFile(lf, rf, "data")
			continue
		}
		lix, err := lo.Index()
		if err != nil {
			t.Fatal(err)
		}
		rix, err := ro.Index()
		if err != nil {
			t.Fatal(err)
		}
		for {
			le, lerr := lix.Next(ctx)
			re, rerr := rix.Next(ctx)
			if lerr != nil || rerr != nil {
				if lerr != io.EOF || rerr != io.EOF {
					t.Fatalf("item %s: index: local %v, remote %v", li[i].ID, lerr, rerr)
				}
				break
			}
			if !reflect.DeepEqual(le, re) {
				t.Fatalf("item %s: index entry %q differs: %+v / %+v", li[i].ID, le.Path, le, re)
			}
			if le.IsRegular() {
				lf, err := lo.File(le)
				if err != nil {
					t.Fatal(err)
				}
				rf, err := ro.File(re)
				if err != nil {
					t.Fatal(err)
				}
				compareFile(lf, rf, string(le.Path))
			}
		}
	}
	return files
}

// Every fixture through every genuine server that opens it reads exactly
// as it does locally: through pull sessions with a disk cache, and
// through partial requests and index streams without one.
func TestSourceMatchesLocal(t *testing.T) {
	for _, f := range fixtures {
		for _, v := range f.versions {
			for _, mode := range []string{"pull+disk", "partial"} {
				if v == "0.10.3" && mode == "pull+disk" {
					mode = "partial+disk"
				}
				t.Run(f.name+"/"+v+"/"+mode, func(t *testing.T) {
					t.Parallel()
					ctx := testContext(t, 2*time.Minute)
					key := loadKey(t, f.key)
					dir := copyRepo(t, f.dir)
					o := Options{NoPull: strings.HasPrefix(mode, "partial")}
					if strings.HasSuffix(mode, "+disk") {
						dc, err := sealed.Open(sealed.Options{Dir: t.TempDir(), MaxBytes: 1 << 30})
						if err != nil {
							t.Fatal(err)
						}
						o.Cache = dc.Space("test")
					}
					remote, src := openRemote(t, ctx, serveCommand(t, v, dir), key, o)
					local := openLocal(t, ctx, filepath.Join(moduleRoot(t), f.dir), key)
					if n := compareRepos(t, ctx, local, remote); n == 0 {
						t.Fatal("no file compared")
					}
					t.Logf("%+v", src.Stats())
					if st := src.Stats(); st.Fetched == 0 {
						t.Fatalf("nothing fetched: %+v", st)
					}
				})
			}
		}
	}
}

// A second reader of the same disk cache fetches nothing: every chunk,
// index trees included, comes from the cache.
func TestSecondReadFetchesNothing(t *testing.T) {
	for _, v := range []string{"0.12.1", "0.10.3"} {
		t.Run(v, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			f := fixtures[0]
			key := loadKey(t, f.key)
			dir := copyRepo(t, f.dir)
			cacheDir := t.TempDir()
			local := openLocal(t, ctx, filepath.Join(moduleRoot(t), f.dir), key)
			var first Stats
			for round := range 2 {
				dc, err := sealed.Open(sealed.Options{Dir: cacheDir, MaxBytes: 1 << 30})
				if err != nil {
					t.Fatal(err)
				}
				remote, src := openRemote(t, ctx, serveCommand(t, v, dir), key, Options{Cache: dc.Space(dir)})
				compareRepos(t, ctx, local, remote)
				src.Close()
				st := src.Stats()
				if round == 0 {
					first = st
					if st.Fetched == 0 {
						t.Fatal("first round fetched nothing")
					}
					continue
				}
				if st.Fetched != 0 || st.CacheHits == 0 {
					t.Fatalf("second round: %+v (first: %+v)", st, first)
				}
			}
		})
	}
}

// The Source's errors are the bupstash source errors readers test for.
func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{ErrPermission, bupstash.ErrPermission},
		{ErrDisconnected, bupstash.ErrUnavailable},
		{ErrStalled, bupstash.ErrUnavailable},
		{&ServerError{Err: ErrDisconnected, Line: "x"}, bupstash.ErrUnavailable},
		{ErrUnavailable, bupstash.ErrUnavailable},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%v is not %v", tc.err, tc.want)
		}
	}
}

// shapedRepo writes a repository with many small leaves and tall trees:
// a snapshot of many files (some large, sparse, hard-linked), and a raw
// item.
func shapedRepo(t testing.TB) (dir string, key *bupstash.Key) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "repo")
	r, err := testrepo.Create(dir, &testrepo.Options{MinChunkSize: 2 << 10, MaxChunkSize: 16 << 10, SplitBits: 12, NodeMinSize: 120, NodeMaxSize: 400})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	shape := testrepo.Shape{Seed: 5, Files: 150, FilesPerDir: 10, Depth: 3, Huge: 3 << 20, SparseFiles: 2, SparseSize: 1 << 20,
		Hardlinks: 3, XattrEvery: 7, Special: true}
	if _, err := r.AddSnapshot(ctx, shape.Source(), testrepo.ItemMeta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddRaw(ctx, testrepo.Text(1<<20, 9).Open(), testrepo.ItemMeta{}); err != nil {
		t.Fatal(err)
	}
	key = r.ReaderKey()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, key
}

// Tall trees of many leaves read as they do locally in every mode, read
// whole and at random offsets by several readers at once, through few
// connections (sessions are recycled).
func TestSourceShapedRepo(t *testing.T) {
	dir, key := shapedRepo(t)
	for _, mode := range []string{"pull", "pull+disk", "partial", "partial+disk"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t, 3*time.Minute)
			o := Options{NoPull: strings.HasPrefix(mode, "partial"), Connections: 2}
			if strings.HasSuffix(mode, "+disk") {
				dc, err := sealed.Open(sealed.Options{Dir: t.TempDir(), MaxBytes: 1 << 30})
				if err != nil {
					t.Fatal(err)
				}
				o.Cache = dc.Space("test")
			}
			served := copyRepo(t, dir)
			remote, src := openRemote(t, ctx, serveCommand(t, "0.12.1", served), key, o)
			local := openLocal(t, ctx, dir, key)
			compareRepos(t, ctx, local, remote)
			concurrentReads(t, ctx, local, remote)
			t.Logf("%+v", src.Stats())
		})
	}
}

// concurrentReads reads the largest files of the first item at random
// offsets from several goroutines at once, each with a fresh repository
// view of the remote (nothing decoded yet), and checks every byte.
func concurrentReads(t testing.TB, ctx context.Context, local, remote *bupstash.Repository) {
	t.Helper()
	li, _ := local.Items(ctx)
	ri, _ := remote.Items(ctx)
	lo, ro := local.OpenItem(li[0]), remote.OpenItem(ri[0])
	type file struct {
		want []byte
		rf   *bupstash.File
	}
	var files []file
	lix, _ := lo.Index()
	rix, _ := ro.Index()
	for {
		le, err := lix.Next(ctx)
		if err != nil {
			break
		}
		re, _ := rix.Next(ctx)
		if le.IsRegular() && le.Size > 64<<10 {
			lf, _ := lo.File(le)
			rf, _ := ro.File(re)
			files = append(files, file{readAll(t, ctx, lf), rf})
		}
	}
	if len(files) == 0 {
		t.Fatal("no large file")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 40 {
				f := files[rng.IntN(len(files))]
				off := rng.IntN(len(f.want))
				n := min(rng.IntN(40000)+1, len(f.want)-off)
				buf := make([]byte, n)
				if _, err := f.rf.NewReader().ReadAtContext(ctx, buf, int64(off)); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf, f.want[off:off+n]) {
					errs <- errors.New("bytes differ")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Chunks in the disk cache that fail verification (damaged cache files)
// fail the reads that use them, are dropped from the cache, and are
// fetched from the server by the next read.
func TestRejectedChunksLeaveTheCache(t *testing.T) {
	ctx := testContext(t, time.Minute)
	f := fixtures[5]
	key := loadKey(t, f.key)
	dir := copyRepo(t, f.dir)
	dc, err := sealed.Open(sealed.Options{Dir: t.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	space := dc.Space("test")
	ents, _ := os.ReadDir(filepath.Join(dir, "data"))
	for _, e := range ents {
		a, err := hex.DecodeString(e.Name())
		if err != nil || len(a) != 32 {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "data", e.Name()))
		b[len(b)/2] ^= 1
		space.Put([32]byte(a), b)
	}
	local := openLocal(t, ctx, filepath.Join(moduleRoot(t), f.dir), key)
	lo, files := snapshotFiles(t, ctx, local)
	want, err := readFile(ctx, lo, files[0])
	if err != nil {
		t.Fatal(err)
	}

	remote, _ := openRemote(t, ctx, serveCommand(t, "0.12.1", dir), key, Options{Cache: space})
	items, err := remote.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	it, err := bupstash.FindItem(items, lo.Item().ID.String())
	if err != nil {
		t.Fatal(err)
	}
	o := remote.OpenItem(it)
	until := func(what string, read func() error) {
		t.Helper()
		fails := 0
		for {
			err := read()
			if err == nil {
				break
			}
			if !errors.Is(err, bupstash.ErrCorrupt) && !errors.Is(err, bupstash.ErrCompression) && !errors.Is(err, box.ErrAuth) {
				t.Fatalf("%s: %v", what, err)
			}
			if fails++; fails > 50 {
				t.Fatalf("%s: still failing after %d attempts: %v", what, fails, err)
			}
		}
		if fails == 0 {
			t.Fatalf("%s: damaged chunks in the cache went unnoticed", what)
		}
	}
	until("index", func() error {
		ix, err := o.Index()
		if err != nil {
			return err
		}
		for {
			if _, err := ix.Next(ctx); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	})
	var got []byte
	until("file", func() (err error) {
		got, err = readFile(ctx, o, files[0])
		return err
	})
	if string(got) != string(want) {
		t.Fatal("the file read after its damaged chunks were dropped differs")
	}
}
