package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/backupytest"
	"github.com/backupfs/backupfs/internal/s3test"
)

const s3Bucket = "backups"

// s3Fixture is a bucket holding a set of Backupy objects under tenant/,
// reached through a counting, fault-injecting proxy; the same objects in
// a local directory; and a keyring file for them.
type s3Fixture struct {
	srv   *s3test.Server
	proxy *s3test.Proxy
	set   *backupytest.Set
	local string // the objects, keyed without "tenant/"
	ring  string
	cache string
}

func newS3Fixture(t *testing.T) *s3Fixture {
	t.Helper()
	f := &s3Fixture{srv: s3test.Start(t), set: backupytest.Make(7, "tenant/", 3), cache: t.TempDir()}
	f.srv.CreateBucket(t, s3Bucket)
	f.local = filepath.Join(t.TempDir(), "copy")
	for _, o := range f.set.Objects {
		f.srv.Put(t, s3Bucket, o.Key, o.Data)
		p := filepath.Join(f.local, filepath.FromSlash(strings.TrimPrefix(o.Key, "tenant/")))
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, o.Data, 0o600)
	}
	f.proxy = s3test.NewProxy(t, f.srv.Endpoint)
	f.ring = filepath.Join(t.TempDir(), "ring")
	os.WriteFile(f.ring, []byte(f.set.Keyring), 0o600)
	return f
}

// env is a mount's environment: the standard chain pointed at the proxy.
func (f *s3Fixture) env() []string { return s3test.Env(f.proxy.URL) }

func (f *s3Fixture) mount(t *testing.T, extra ...string) (*mountProcess, string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"--backupy", "s3://" + s3Bucket + "/tenant", "--backupy-keyring", f.ring, "--backupy-cache-dir", f.cache}, extra...)
	return startMount(t, f.env(), append(args, dir)...), dir
}

// tree returns every file under root with its bytes (nil if it does not
// read), and every directory.
func tree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel+"/"] = nil
			return nil
		}
		b, _ := os.ReadFile(p)
		out[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ls, cat and their errors, in process: the standard chain comes from the
// test's environment, which Isolate controls.
func TestBackupyS3LsCat(t *testing.T) {
	f := newS3Fixture(t)
	s3test.Isolate(t, f.env()...)
	t.Setenv(envBackupyKeyring, f.ring)
	out, stderr, err := runBk("ls", "--cache-dir", f.cache, "s3://"+s3Bucket+"/tenant")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, o := range f.set.Objects {
		if !strings.Contains(out, strings.TrimPrefix(o.Key, "tenant/")) || !strings.Contains(out, o.Name) {
			t.Fatalf("ls lacks %s (%s):\n%s", o.Key, o.Name, out)
		}
	}
	for _, key := range []string{"tenant/co_1/agt_1/job_pg/run_pg1.enc", "tenant/co_1/agt_1/job_my/run_my1.zst"} {
		out, stderr, err = runBk("cat", "--cache-dir", f.cache, "s3://"+s3Bucket+"/"+key)
		if err != nil || out != string(f.set.Object(key).Dump) {
			t.Fatalf("cat %s: %d bytes, %v\n%s", key, len(out), err, stderr)
		}
	}
	if _, _, err = runBk("cat", "--cache-dir", f.cache, "s3://"+s3Bucket+"/tenant/co_1/none.enc"); err == nil || !strings.Contains(err.Error(), "none.enc") {
		t.Fatalf("cat of a missing object: %v", err)
	}
	// A wrong secret: one line naming the store and what S3 said.
	s3test.Isolate(t, append(f.env(), "AWS_SECRET_ACCESS_KEY=wrong")...)
	_, stderr, err = runBk("ls", "--cache-dir", f.cache, "s3://"+s3Bucket+"/tenant")
	if err == nil || !strings.Contains(err.Error(), "s3://backups/tenant: S3 said SignatureDoesNotMatch") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("wrong secret: %v\n%s", err, stderr)
	}
	// The endpoint and path style from the flags.
	s3test.Isolate(t, "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey)
	if _, stderr, err = runBk("ls", "--cache-dir", f.cache, "--s3-endpoint", f.proxy.URL, "--s3-path-style", "s3://"+s3Bucket+"/tenant"); err != nil {
		t.Fatalf("--s3-endpoint: %v\n%s", err, stderr)
	}
}

// A bucket prefix mounted next to a directory holding the same objects:
// the same tree, every file (each payload kind, every view) the same
// bytes. A remount knows every name and size without a GET.
func TestMountS3MatchesLocal(t *testing.T) {
	f := newS3Fixture(t)
	p, dir := f.mount(t, "--backupy", f.local, "--backupy-views", "all")
	s3Tree, localTree := tree(t, filepath.Join(dir, "tenant")), tree(t, filepath.Join(dir, "copy"))
	if len(s3Tree) != len(localTree) || len(s3Tree) < len(f.set.Objects) {
		t.Fatalf("%d entries from S3, %d local:\n%v\n%v", len(s3Tree), len(localTree), keys(s3Tree), keys(localTree))
	}
	for name, want := range localTree {
		got, ok := s3Tree[name]
		if !ok {
			t.Fatalf("%s missing from the S3 store's tree", name)
		}
		if strings.HasSuffix(name, ".meta.json") {
			continue // names its store
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes from S3, %d local", name, len(got), len(want))
		}
	}
	for _, o := range f.set.Objects {
		got := s3Tree[filepath.Join(filepath.Dir(strings.TrimPrefix(o.Key, "tenant/")), o.Name)]
		want := o.Dump
		if want == nil {
			want = o.Data // locked or foreign: byte for byte
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s as %s: %d bytes, want %d", o.Key, o.Name, len(got), len(want))
		}
	}
	p.stop(t)

	// Remount: listing and sizes come from the cache's index.
	f.proxy.ResetCounts()
	p, dir = f.mount(t, "--debug")
	sizes := map[string]int64{}
	filepath.WalkDir(filepath.Join(dir, "tenant"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := os.Lstat(path); err == nil {
				sizes[path] = fi.Size()
			}
		}
		return nil
	})
	if c := f.proxy.Counts(); c.Get != 0 || len(sizes) != len(f.set.Objects) {
		t.Fatalf("ls -lR after a remount: %d files, %+v\n%s", len(sizes), c, p.stderr)
	}
	for _, o := range f.set.Objects {
		path := filepath.Join(dir, "tenant", filepath.Dir(strings.TrimPrefix(o.Key, "tenant/")), o.Name)
		want := int64(len(o.Dump))
		if o.Dump == nil {
			want = int64(len(o.Data))
		}
		if sizes[path] != want {
			t.Fatalf("%s: size %d after remount, want %d", path, sizes[path], want)
		}
	}
	if strings.Contains(p.stderr.String(), "full decode pass") {
		t.Fatalf("the remount decoded again:\n%s", p.stderr)
	}
	p.stop(t)
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Objects come and go while mounted: a new one appears, a deleted one's
// open file reads ESTALE; one replaced while it is being read fails that
// read with EIO (and one log line), never mixing versions.
func TestMountS3Changes(t *testing.T) {
	f := newS3Fixture(t)
	// A cache too small to keep a decoded dump: reads after the first
	// pass (which learns the size) need another pass.
	p, dir := f.mount(t, "--backupy-views", "all", "--backupy-cache-size", "1K")
	job := filepath.Join(dir, "tenant", "co_1", "agt_1", "job_pg")
	pg := f.set.Object("tenant/co_1/agt_1/job_pg/run_pg1.enc")

	// A new object appears once the listing expires (one second).
	if _, err := os.ReadDir(job); err != nil {
		t.Fatal(err)
	}
	f.srv.Put(t, s3Bucket, "tenant/co_1/agt_1/job_pg/run_pg2.enc", pg.Data)
	waitFor(t, func() bool {
		_, err := os.Stat(filepath.Join(job, "run_pg2.pgdump"))
		return err == nil
	})

	// Deleted while open: reads of what is not cached are ESTALE.
	zst, err := os.Open(filepath.Join(job, "run_pg2.pgdump.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer zst.Close()
	if _, err := zst.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.srv.Delete(t, s3Bucket, "tenant/co_1/agt_1/job_pg/run_pg2.enc")
	waitFor(t, func() bool {
		_, err := os.Stat(filepath.Join(job, "run_pg2.pgdump"))
		return errors.Is(err, fs.ErrNotExist)
	})
	if _, err := zst.ReadAt(make([]byte, 4096), 5<<19); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("read of a deleted object: %v", err)
	}

	// Replaced during a full read: the read fails with EIO.
	if fi, err := os.Stat(filepath.Join(job, "run_pg1.pgdump")); err != nil || fi.Size() != int64(len(pg.Dump)) {
		t.Fatalf("stat: %v %v", fi, err)
	}
	// The decoded file is evicted once the pass that sized it is done.
	waitFor(t, func() bool {
		dat, _ := filepath.Glob(filepath.Join(f.cache, "*.dat"))
		return len(dat) == 0
	})
	replaced := false
	f.proxy.BeforeForward(func(r s3test.Request) {
		// A block read of the full pass (not a small read of listing).
		if first, last := rangeOf(r.Range); r.Key == pg.Key && first >= 2<<20 && last-first >= 1<<20 && !replaced {
			replaced = true
			if _, err := f.srv.PutErr(s3Bucket, pg.Key, append([]byte(nil), f.set.Object("tenant/co_1/agt_1/job_sql/run_sql1.enc").Data...)); err != nil {
				t.Errorf("replacing: %v", err)
			}
		}
	})
	f.proxy.ResetCounts()
	got, err := os.ReadFile(filepath.Join(job, "run_pg1.pgdump"))
	f.proxy.BeforeForward(nil)
	if !replaced || !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of an object replaced mid-read: replaced %v, %d bytes, %v", replaced, len(got), err)
	}
	if !bytes.HasPrefix(pg.Dump, got) {
		t.Fatal("the bytes read before the failure are not the old version's")
	}
	waitFor(t, func() bool { return strings.Contains(p.stderr.String(), "replaced while it was being read") })
	if n := strings.Count(p.stderr.String(), "replaced while it was being read"); n != 1 {
		t.Errorf("%d log lines for one replaced object:\n%s", n, p.stderr)
	}
	p.stop(t)
}

// S3 goes silent while mounted: decoded files keep reading; reads of
// anything else fail with EIO within the timeout; the mount stays up and
// recovers when S3 answers again.
func TestMountS3Unreachable(t *testing.T) {
	f := newS3Fixture(t)
	p, dir := f.mount(t, "--backupy-views", "all", "--s3-timeout", "2s")
	job := filepath.Join(dir, "tenant", "co_1", "agt_1")
	sql := f.set.Object("tenant/co_1/agt_1/job_sql/run_sql1.enc")
	cached := filepath.Join(job, "job_sql", "run_sql1.sql")
	// A read far from the start decodes the whole object into the cache.
	h, err := os.Open(cached)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReadAt(make([]byte, 10), int64(len(sql.Dump)-10)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := os.ReadDir(filepath.Join(job, "job_pg")); err != nil {
		t.Fatal(err)
	}

	f.proxy.SetFault(func(s3test.Request) s3test.Fault { return s3test.Stall })
	defer f.proxy.Release()
	if b, err := os.ReadFile(cached); err != nil || !bytes.Equal(b, sql.Dump) {
		t.Fatalf("a decoded file while S3 is silent: %d bytes, %v", len(b), err)
	}
	start := time.Now()
	zst, err := os.Open(filepath.Join(job, "job_pg", "run_pg1.pgdump.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer zst.Close()
	_, err = zst.ReadAt(make([]byte, 4096), 2<<20)
	if !errors.Is(err, syscall.EIO) || time.Since(start) > 20*time.Second {
		t.Fatalf("read of uncached data while S3 is silent: %v after %v", err, time.Since(start))
	}
	// Listing answers with what it knew.
	if _, err := os.ReadDir(filepath.Join(job, "job_pg")); err != nil {
		t.Fatalf("listing while S3 is silent: %v", err)
	}
	f.proxy.SetFault(nil)
	f.proxy.Release()
	if _, err := zst.ReadAt(make([]byte, 4096), 2<<20); err != nil {
		t.Fatalf("after S3 is back: %v", err)
	}
	p.stop(t)
}

// Wrong credentials or a missing bucket: the mount fails at once with one
// line naming the store and what S3 said.
func TestMountS3Refused(t *testing.T) {
	f := newS3Fixture(t)
	for _, tt := range []struct {
		env  []string
		url  string
		says string
	}{
		{[]string{"AWS_SECRET_ACCESS_KEY=wrong"}, "s3://backups/tenant", "s3://backups/tenant: S3 said SignatureDoesNotMatch"},
		{nil, "s3://missing-bucket", "s3://missing-bucket: S3 said NoSuchBucket"},
	} {
		dir := t.TempDir()
		out, code := runMountToExit(t, append(f.env(), tt.env...), "--backupy", tt.url, "--backupy-cache-dir", f.cache, dir)
		if code == 0 || !strings.Contains(out, tt.says) || strings.Count(out, "\n") != 1 {
			t.Fatalf("%s: exit %d:\n%s", tt.url, code, out)
		}
	}
}

// runMountToExit runs a mount that must fail, and returns what it said
// and its exit status.
func runMountToExit(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, backupfsBinary(t), append([]string{"mount"}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("mount did not fail within 60s:\n%s", errb.String())
	}
	return errb.String(), cmd.ProcessState.ExitCode()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func rangeOf(r string) (first, last int64) {
	a, b, _ := strings.Cut(strings.TrimPrefix(r, "bytes="), "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return -1, -1
	}
	return first, last
}

var _ = io.EOF
