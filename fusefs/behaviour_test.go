package fusefs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/testrepo"
	"golang.org/x/sys/unix"
)

func TestViews(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	src := m.path("v0.12.1")
	top, _ := os.ReadDir(src)
	var names []string
	for _, e := range top {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"by-tag", "by-time", "ids", "latest"}) {
		t.Fatalf("source holds %v", names)
	}
	if target, _ := os.Readlink(filepath.Join(src, "latest")); target != "ids/48a22dd86a5d60520ab4a0f6f1c07bef" {
		t.Fatalf("latest -> %q", target)
	}
	if b, err := os.ReadFile(filepath.Join(src, "latest", "sub", "s.txt")); err != nil || string(b) != "sub file\n" {
		t.Fatalf("latest/sub/s.txt: %q %v", b, err)
	}
	// All seven items were made in the same second: the oldest gets the
	// plain name, the others their id's first 8 characters.
	byTime, _ := os.ReadDir(filepath.Join(src, "by-time"))
	if len(byTime) != 7 || byTime[0].Name() != "2026-11-23T04:29:51Z" || byTime[1].Name() != "2026-11-23T04:29:51Z_48a22dd8" {
		t.Fatalf("by-time: %v", byTime)
	}
	if b, err := os.ReadFile(filepath.Join(src, "by-time", "2026-11-23T04:29:51Z", "a.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("by-time/…/a.txt: %q %v", b, err)
	}
	tagged := filepath.Join(src, "by-tag", "fixture", "snapshot-xattrs", snapshot012)
	if target, _ := os.Readlink(tagged); target != "../../../ids/"+snapshot012 {
		t.Fatalf("by-tag link -> %q", target)
	}
	if b, err := os.ReadFile(filepath.Join(tagged, "sub", "s.txt")); err != nil || string(b) != "sub file\n" {
		t.Fatalf("through by-tag: %q %v", b, err)
	}
	names = nil
	tags, _ := os.ReadDir(filepath.Join(src, "by-tag", "name"))
	for _, e := range tags {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"private.tar", "s.txt", "sub.tar", "tree.tar"}) {
		t.Fatalf("by-tag/name: %v", names)
	}
	// Listings are stable.
	a, _ := os.ReadDir(m.path("v0.12.1", "ids", snapshot012))
	b, _ := os.ReadDir(m.path("v0.12.1", "ids", snapshot012))
	if len(a) != 17 || !slices.EqualFunc(a, b, func(x, y os.DirEntry) bool { return x.Name() == y.Name() }) {
		t.Fatalf("listing of %d entries changed between reads", len(a))
	}
}

func TestWritesAreRefused(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	dir := m.path("v0.12.1", "ids", snapshot012)
	for name, err := range map[string]error{
		"create":   os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644),
		"truncate": os.Truncate(filepath.Join(dir, "a.txt"), 0),
		"mkdir":    os.Mkdir(filepath.Join(dir, "d"), 0o755),
		"remove":   os.Remove(filepath.Join(dir, "a.txt")),
		"rename":   os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")),
		"chmod":    os.Chmod(filepath.Join(dir, "a.txt"), 0o777),
		"symlink":  os.Symlink("x", filepath.Join(dir, "l")),
		"link":     os.Link(filepath.Join(dir, "a.txt"), filepath.Join(dir, "l2")),
		"setxattr": unix.Setxattr(filepath.Join(dir, "a.txt"), "user.x", []byte("1"), 0),
		"open rw": func() error {
			f, err := os.OpenFile(filepath.Join(dir, "a.txt"), os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		}(),
		"mkdir in root": os.Mkdir(m.path("new"), 0o755),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

// Reads at random offsets, and by 32 readers at once, return the bytes a
// whole-file read returns.
func TestRandomAndParallelReads(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	var paths []string
	for _, p := range []string{
		"v0.12.1/ids/" + snapshot012 + "/big.txt",
		"v0.12.1/ids/" + snapshot012 + "/sparse.bin",
		"v0.12.1/ids/" + snapshot012 + "/a.txt",
		"v0.11.1/ids/21005b7805101fabe090ee972e7251fe/zzz.txt",
		"v0.10.3/ids/61f99971c78c7b8ceff91ec0374d2a10/zzz.txt",
		"maxbupst/ids/598f1fee879bef635b4fcca8b69167dc/zero8m.bin",
		"maxbupst/ids/81e33ca1db1e6d562bc7146ddd9b37ab/maxbupst",
	} {
		paths = append(paths, m.path(p))
	}
	want := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want[p] = b
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for i := 0; i < 40; i++ {
				p := paths[rng.IntN(len(paths))]
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				off := rng.Int64N(int64(len(want[p])) + 1)
				buf := make([]byte, rng.IntN(300<<10)+1)
				n, err := f.ReadAt(buf, off)
				f.Close()
				if err != nil && err != io.EOF {
					t.Errorf("%s at %d: %v", p, off, err)
					return
				}
				if !bytes.Equal(buf[:n], want[p][off:off+int64(n)]) {
					t.Errorf("%s at %d: wrong bytes", p, off)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A damaged chunk fails exactly the files stored in it, with EIO and one
// log line naming the item, the path and the chunk; everything else reads.
func TestDamagedChunkFailsOneFile(t *testing.T) {
	repo := copyRepo(t, "bupstash-0.12.1/repo")
	const leaf0 = "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb"
	b, _ := os.ReadFile(filepath.Join(repo, "data", leaf0))
	b[len(b)/2] ^= 0x20
	os.WriteFile(filepath.Join(repo, "data", leaf0), b, 0o644)
	m := mountSources(t, fsOptions(), source{"r", repo, "bupstash-0.12.1/keys/primary.key"})
	dir := m.path("r", "ids", snapshot012)
	for i := 0; i < 3; i++ {
		if _, err := os.ReadFile(filepath.Join(dir, "big.txt")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("big.txt: %v, want EIO", err)
		}
	}
	// The damaged leaf holds most of the snapshot; these three files are in
	// other leaves.
	for _, ok := range []string{"private/p.txt", "sub/s.txt", "sub/nested/deeper/file.txt"} {
		if _, err := os.ReadFile(filepath.Join(dir, ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := os.ReadFile(m.path("r", "ids", "d5dbf2447bdcf7807b25732d40a02b35", "data")); err != nil {
		t.Errorf("another item: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(m.log.String(), "\n") {
		if strings.Contains(l, "path=big.txt") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "item="+snapshot012) || !strings.Contains(lines[0], "chunk="+leaf0) || !strings.Contains(lines[0], "path=big.txt") {
		t.Fatalf("log lines about big.txt: %q", lines)
	}
}

func copyRepo(t *testing.T, rel string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(testdata, rel))); err != nil {
		t.Fatal(err)
	}
	return dst
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Items come and go while mounted. A removed item's open file keeps
// reading until bupstash gc deletes its chunks; then it fails with EIO and
// the mount lives on.
func TestItemsComeAndGo(t *testing.T) {
	repo := copyRepo(t, "bupstash-0.12.1/repo")
	m := mountSources(t, fsOptions(), source{"r", repo, "bupstash-0.12.1/keys/primary.key"})
	ids := func() []string {
		ents, _ := os.ReadDir(m.path("r", "ids"))
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	const raw, raw2 = "d5dbf2447bdcf7807b25732d40a02b35", "a9efc039bcd20bcdb8d0a8b5f047f7a3"
	f, err := os.Open(m.path("r", "ids", raw, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f2, err := os.Open(m.path("r", "ids", raw2, "s.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()

	for _, id := range []string{raw, raw2} {
		item := filepath.Join(repo, "items", id)
		if err := os.Rename(item, item+".removed"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the removed items to disappear", func() bool { return !slices.Contains(ids(), raw) && !slices.Contains(ids(), raw2) })
	waitFor(t, "their directories to vanish", func() bool {
		_, err := os.Stat(m.path("r", "ids", raw))
		return errors.Is(err, os.ErrNotExist)
	})
	// Files already open now fail, rather than read a backup that is gone.
	for _, f := range []*os.File{f, f2} {
		if b, err := io.ReadAll(f); !errors.Is(err, syscall.ESTALE) {
			t.Fatalf("read of %s after its item was removed: %q, %v; want ESTALE", f.Name(), b, err)
		}
	}
	if !strings.Contains(m.log.String(), "item removed from the repository") {
		t.Errorf("no log line says the item was removed:\n%s", m.log)
	}
	// bupstash recover-removed brings it back.
	if err := os.Rename(filepath.Join(repo, "items", raw)+".removed", filepath.Join(repo, "items", raw)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the item to come back", func() bool { return slices.Contains(ids(), raw) })
	if b, err := os.ReadFile(m.path("r", "ids", raw, "data")); err != nil || string(b) != "hello from stdin\n" {
		t.Fatalf("recovered item: %q %v", b, err)
	}
	if b, err := io.ReadAll(io.NewSectionReader(f, 0, 100)); err != nil || string(b) != "hello from stdin\n" {
		t.Fatalf("a file of the recovered item, open all along: %q %v", b, err)
	}
}

// TestRemovedWhileReading removes an item whose file is being read, with
// no one listing the repository: the reader still learns of it.
func TestRemovedWhileReading(t *testing.T) {
	repo := copyRepo(t, "bupstash-0.12.1/repo")
	m := mountSources(t, fsOptions(), source{"r", repo, "bupstash-0.12.1/keys/primary.key"})
	f, err := os.Open(m.path("r", "ids", snapshot012, "big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(repo, "items", snapshot012), filepath.Join(repo, "items", snapshot012+".removed")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reads of the removed item to fail", func() bool {
		_, err := f.ReadAt(buf, 5<<20) // not read before: not in the page cache
		return errors.Is(err, syscall.ESTALE)
	})
	// What the kernel had cached of it is dropped too.
	waitFor(t, "the cached pages to go", func() bool {
		_, err := f.ReadAt(buf, 0)
		return errors.Is(err, syscall.ESTALE)
	})
}

func TestSubKeys(t *testing.T) {
	keys := "bupstash-0.12.1/keys/"
	m := mountSources(t, fsOptions(),
		source{"list", "bupstash-0.12.1/repo", keys + "list.key"},
		source{"contents", "bupstash-0.12.1/repo", keys + "list-contents.key"})

	// A list-only key shows the items, each as an empty directory.
	ids, _ := os.ReadDir(m.path("list", "ids"))
	if len(ids) != 7 {
		t.Fatalf("list key: %d items", len(ids))
	}
	for _, id := range ids {
		if ents, err := os.ReadDir(m.path("list", "ids", id.Name())); err != nil || len(ents) != 0 {
			t.Errorf("list key: ids/%s holds %d entries (%v)", id.Name(), len(ents), err)
		}
	}
	// A list-contents key shows trees; reading a file is refused.
	dir := m.path("contents", "ids", snapshot012)
	ents, _ := os.ReadDir(dir)
	if len(ents) != 17 {
		t.Fatalf("list-contents key: %d entries", len(ents))
	}
	if fi, err := os.Stat(filepath.Join(dir, "big.txt")); err != nil || fi.Size() != 11600000 {
		t.Fatalf("stat big.txt: %v %v", fi, err)
	}
	for _, p := range []string{filepath.Join(dir, "a.txt"), m.path("contents", "ids", "d5dbf2447bdcf7807b25732d40a02b35", "data")} {
		if _, err := os.ReadFile(p); !errors.Is(err, syscall.EACCES) {
			t.Errorf("read %s: %v, want EACCES", p, err)
		}
	}
}

func TestSparseFiles(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	p := m.path("v0.12.1", "ids", snapshot012, "sparse.bin")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	if err != nil || data != 5<<20-4096 {
		t.Fatalf("SEEK_DATA = %d, %v", data, err)
	}
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil || hole != 0 {
		t.Fatalf("SEEK_HOLE = %d, %v", hole, err)
	}
	if _, err := unix.Seek(int(f.Fd()), 5<<20, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("SEEK_DATA past the end: %v", err)
	}
	var st syscall.Stat_t
	syscall.Fstat(int(f.Fd()), &st)
	if st.Blocks != 8 {
		t.Fatalf("st_blocks = %d, want 8 (4 KiB of data)", st.Blocks)
	}
	// A file without the hint has data everywhere.
	g, _ := os.Open(m.path("v0.12.1", "ids", snapshot012, "big.txt"))
	defer g.Close()
	if h, err := unix.Seek(int(g.Fd()), 100, unix.SEEK_HOLE); err != nil || h != 11600000 {
		t.Fatalf("SEEK_HOLE in big.txt = %d, %v", h, err)
	}
	// cp and tar recreate the holes.
	out := filepath.Join(t.TempDir(), "sparse.bin")
	fusetest.Run(t, "cp", "--sparse=auto", p, out)
	var cst syscall.Stat_t
	syscall.Stat(out, &cst)
	if cst.Blocks > 64 {
		t.Errorf("cp copy allocates %d blocks", cst.Blocks)
	}
	tarball := filepath.Join(t.TempDir(), "s.tar")
	fusetest.Run(t, "tar", "-cSf", tarball, "-C", filepath.Dir(p), "sparse.bin")
	if fi, _ := os.Stat(tarball); fi.Size() > 64<<10 {
		t.Errorf("tar -S archive is %d bytes", fi.Size())
	}
	orig, _ := os.ReadFile(p)
	copied, _ := os.ReadFile(out)
	if !bytes.Equal(orig, copied) || sha(orig) != "aa6872113164993086a16d25f22ae6bfcdc09d0a631f95d3cd37f9ed16e0a1d9" {
		t.Fatal("sparse copy differs")
	}
}

func TestXattrModes(t *testing.T) {
	for _, tt := range []struct {
		mode fusefs.XattrMode
		want error
	}{
		{fusefs.XattrsAuto, nil}, {fusefs.XattrsOn, nil}, {fusefs.XattrsOff, syscall.EOPNOTSUPP},
	} {
		m := mountSources(t, fusefs.Options{Xattrs: tt.mode}, source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
		p := m.path("r", "ids", snapshot012, "a.txt")
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.comment", buf)
		if tt.want != nil {
			if !errors.Is(err, tt.want) {
				t.Errorf("mode %d: getxattr = %v, want %v", tt.mode, err, tt.want)
			}
			continue
		}
		if err != nil || string(buf[:n]) != "xattr value" {
			t.Errorf("mode %d: getxattr = %q, %v", tt.mode, buf[:n], err)
		}
		if _, err := unix.Getxattr(p, "user.nope", buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("mode %d: missing xattr: %v", tt.mode, err)
		}
	}
}

func TestOwnerOverride(t *testing.T) {
	uid, gid := uint32(4242), uint32(4343)
	m := mountSources(t, fusefs.Options{UID: &uid, GID: &gid}, source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	for _, p := range []string{m.path("r"), m.path("r", "ids", snapshot012), m.path("r", "ids", snapshot012, "private", "p.txt"), m.path("r", "latest")} {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: owner %d:%d (%v)", p, st.Uid, st.Gid, err)
		}
	}
}

// With room for no decoded index at all, every access re-decodes one, and
// everything still works, with the same inode numbers.
func TestIndexEviction(t *testing.T) {
	m := mountSources(t, fusefs.Options{IndexMemory: 1},
		source{"a", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"},
		source{"b", "bupstash-versions/v0.11.1/repo", "bupstash-versions/v0.11.1/primary.key"})
	var first syscall.Stat_t
	syscall.Stat(m.path("a", "ids", snapshot012, "sub", "s.txt"), &first)
	for i := 0; i < 3; i++ {
		if _, err := os.ReadFile(m.path("b", "ids", "21005b7805101fabe090ee972e7251fe", "zzz.txt")); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(m.path("a", "ids", snapshot012, "sub", "s.txt"), &st); err != nil || st.Ino != first.Ino {
			t.Fatalf("inode %d then %d (%v)", first.Ino, st.Ino, err)
		}
		if b, err := os.ReadFile(m.path("a", "ids", snapshot012, "sub", "nested", "deeper", "file.txt")); err != nil || string(b) != "deep file\n" {
			t.Fatalf("%q %v", b, err)
		}
	}
}

// TestKernelReadahead checks the mount asks the kernel for 1 MiB of
// readahead (it offers FUSE 128 KiB by default): a sequential read then
// takes an eighth of the requests. Setting it needs root, as in CI; for
// other users the mount keeps the kernel's default.
func TestKernelReadahead(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	var st unix.Stat_t
	if err := unix.Stat(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join("/sys/class/bdi", fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), "read_ahead_kb")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(b))
	if os.Geteuid() != 0 {
		t.Logf("not root: %s is %s KiB, the kernel's default", p, got)
		return
	}
	if got != "1024" {
		t.Fatalf("%s = %s KiB, want 1024", p, got)
	}
}

// TestLargeReads reads a multi-leaf file in the kernel's largest requests
// (1 MiB): the bytes must match, and a healthy read must log nothing (go-fuse
// once logged a failed splice attempt for every 1 MiB reply).
func TestLargeReads(t *testing.T) {
	content := testrepo.Text(6<<20+12345, 7)
	m, item := mountGenerated(t, &testrepo.Options{MinChunkSize: 256 << 10, MaxChunkSize: 1 << 20},
		testrepo.NewTree().MustAdd(testrepo.File("big.txt", content)))
	want, _ := io.ReadAll(content.Open())

	f, err := os.Open(filepath.Join(item, "big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d saved", len(got), len(want))
	}
	if s := m.log.String(); s != "" {
		t.Errorf("a healthy read logged:\n%s", s)
	}
}

// TestSparseHolesFromLeaves checks a large sparse file: its holes are
// found from its zero leaves without decoding them, and inside its data
// leaves at 4 KiB granularity.
func TestSparseHolesFromLeaves(t *testing.T) {
	const size = 200 << 20
	content := testrepo.Sparse(size,
		testrepo.Region{Offset: 0, Data: testrepo.Random(4096, 1)},
		testrepo.Region{Offset: 100<<20 + 8192, Data: testrepo.Random(64<<10, 2)},
		testrepo.Region{Offset: size - 5000, Data: testrepo.Random(5000, 3)})
	m, item := mountGenerated(t, &testrepo.Options{MaxChunkSize: 4 << 20},
		testrepo.NewTree().MustAdd(testrepo.File("before.txt", testrepo.Text(12345, 4)), testrepo.File("disk.img", content)))
	p := filepath.Join(item, "disk.img")

	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if want := int64(4096+64<<10+8192) / 512; st.Blocks != want {
		// The last region spans two 4 KiB blocks of the file.
		t.Errorf("st_blocks = %d, want %d", st.Blocks, want)
	}
	// The stat decoded only the data leaves (three of at most 4 MiB), not
	// the 200 MiB of zeros.
	if filled := m.repo["gen"].Cache().Stats().FillBytes; filled > 3*4<<20+1<<20 {
		t.Errorf("stat decoded %d bytes", filled)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_DATA, 0},
		{0, unix.SEEK_HOLE, 4096},
		{4096, unix.SEEK_DATA, 100<<20 + 8192},
		{50 << 20, unix.SEEK_HOLE, 50 << 20},
		{100<<20 + 8192, unix.SEEK_HOLE, 100<<20 + 8192 + 64<<10},
		{100<<20 + 200<<10, unix.SEEK_DATA, size - 8192},
		{size - 100, unix.SEEK_HOLE, size},
	} {
		got, err := unix.Seek(fd, c.off, c.whence)
		if err != nil || got != c.want {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
	// cp recreates the holes; the copy has the same bytes.
	out := filepath.Join(t.TempDir(), "disk.img")
	fusetest.Run(t, "cp", "--sparse=auto", p, out)
	var cst syscall.Stat_t
	syscall.Stat(out, &cst)
	if cst.Blocks > 1024 {
		t.Errorf("cp copy allocates %d blocks", cst.Blocks)
	}
	want, _ := io.ReadAll(content.Open())
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("sparse copy differs (%v)", err)
	}
}

// TestMountIsLazy checks that mounting and listing the items decode no
// index: only looking at an item's directory reads (the start of) its
// index, and only looking inside decodes it.
func TestMountIsLazy(t *testing.T) {
	m := mountSources(t, fsOptions(), source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	chunks := m.repo["r"].Cache()
	ents, err := os.ReadDir(m.path("r", "ids"))
	if err != nil || len(ents) != 7 {
		t.Fatalf("ids/: %d entries, %v", len(ents), err)
	}
	for _, view := range []string{"by-time", "by-tag/name"} {
		if _, err := os.ReadDir(m.path("r", view)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Readlink(m.path("r", "latest")); err != nil {
		t.Fatal(err)
	}
	if s := chunks.Stats(); s.Misses+s.Joined+s.Prefetched != 0 {
		t.Fatalf("mounting and listing items read chunks: %+v", s)
	}
	// The item directory shows the saved root: 0755, five links.
	var st syscall.Stat_t
	if err := syscall.Stat(m.path("r", "ids", snapshot012), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFDIR|0o755 || st.Nlink != 5 {
		t.Errorf("ids/%s: mode %o, nlink %d; want 40755, 5", snapshot012, st.Mode, st.Nlink)
	}
	if s := chunks.Stats(); s.Misses != 1 {
		t.Errorf("a stat of the item directory read %d chunks, want its first index leaf", s.Misses)
	}
}

// TestItemRootPermissions checks that a snapshot of a private directory
// stays private: its item directory has the saved mode and owner, which
// the kernel enforces for other users of an --allow-other mount.
func TestItemRootPermissions(t *testing.T) {
	const private = "7f3491e5"
	m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{AllowOther: true}, nil,
		source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	// Other users must be able to reach the mount at all.
	if err := os.Chmod(filepath.Dir(m.dir), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(m.path("r", "ids"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), private) {
			continue
		}
		dir := m.path("r", "ids", e.Name())
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != syscall.S_IFDIR|0o700 || st.Uid != 0 {
			t.Fatalf("ids/%s: mode %o uid %d, want 40700 and 0 as saved", e.Name(), st.Mode, st.Uid)
		}
		files, err := os.ReadDir(dir)
		if err != nil || len(files) == 0 {
			t.Fatalf("ls ids/%s: %v", e.Name(), err)
		}
		file := filepath.Join(dir, files[0].Name())
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", file).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Fatalf("another user read %s: %v %q", file, err, out)
		}
		// The saved owner (root) may.
		if _, err := os.ReadFile(file); err != nil {
			t.Fatalf("its owner cannot read %s: %v", file, err)
		}
		return
	}
	t.Fatalf("no item %s… in the fixture", private)
}

// TestListingsGiveFileAttributesOnlyToStatters checks the READDIRPLUS
// policy: a walk that only reads names (as find does) gets no file
// attributes, so the kernel creates no inode per file; the first stat of
// a file then needs a lookup, which turns attributes on for a while.
func TestListingsGiveFileAttributesOnlyToStatters(t *testing.T) {
	m := mountSources(t, fsOptions(), source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	root := m.path("r", "ids", snapshot012)
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.IsDir() {
				walk(filepath.Join(dir, e.Name()))
			}
		}
	}
	walk(root)
	if m.fs.StatsFiles() {
		t.Fatal("a walk reading names looked files up")
	}
	if _, err := os.Stat(filepath.Join(root, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if !m.fs.StatsFiles() {
		t.Fatal("a stat after the walk found the file without a lookup: the listing gave its attributes")
	}
	// From now on listings give them: ls -l of another directory.
	fusetest.Run(t, "ls", "-lR", root)
}

// TestPanicBecomesEIO checks that a panic in a request handler fails that
// request with EIO and one log line, and the mount goes on serving.
func TestPanicBecomesEIO(t *testing.T) {
	m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{}, func(f *fusefs.FS) error { return f.AddPanickingSource("boom") },
		source{"r", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	if _, err := os.Stat(m.path("boom")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("stat of a node whose handler panics: %v, want EIO", err)
	}
	if !strings.Contains(m.log.String(), "internal error while serving a request") {
		t.Errorf("the panic was not logged:\n%s", m.log)
	}
	if b, err := os.ReadFile(m.path("r", "ids", snapshot012, "a.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("after the panic: %q %v", b, err)
	}
}
