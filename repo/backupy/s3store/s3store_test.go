package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/backupytest"
	"github.com/backupfs/backupfs/internal/s3test"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/backupy/s3store"
)

const bucket = "backups"

// fixture is a server with one bucket holding a set of Backupy objects
// under a prefix, reached through a fault-injecting proxy.
type fixture struct {
	srv   *s3test.Server
	proxy *s3test.Proxy
	set   *backupytest.Set
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := s3test.Start(t)
	srv.CreateBucket(t, bucket)
	set := backupytest.Make(1, "tenant/", 3)
	for _, o := range set.Objects {
		srv.Put(t, bucket, o.Key, o.Data)
	}
	srv.Put(t, bucket, "elsewhere/x.enc", []byte("outside the prefix"))
	f := &fixture{srv: srv, proxy: s3test.NewProxy(t, srv.Endpoint), set: set}
	s3test.Isolate(t, s3test.Env(f.proxy.URL)...)
	return f
}

func (f *fixture) open(t *testing.T, prefix string, opts s3store.Options) *s3store.Store {
	t.Helper()
	s, err := s3store.New(context.Background(), bucket, prefix, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Listing is one level at a time, relative to the prefix, with ETags;
// reads return the object's bytes at any offset, io.EOF at its end.
func TestListAndRead(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	s := f.open(t, "tenant", s3store.Options{})
	if s.Name() != "s3://backups/tenant" || !s.PathStyle() || s.Region() != s3test.Region {
		t.Fatalf("name %s, path style %v, region %s", s.Name(), s.PathStyle(), s.Region())
	}
	root, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Objects) != 0 || !slices.Equal(root.Dirs, []string{"co_1"}) {
		t.Fatalf("root: %+v", root)
	}
	l, err := s.List(ctx, "co_1")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(l.Dirs)
	if !slices.Equal(l.Dirs, []string{"agt_1", "agt_2"}) || len(l.Objects) != 1 || l.Objects[0].Key != "co_1/README.txt" || l.Objects[0].ETag == "" {
		t.Fatalf("co_1: %+v", l)
	}
	if _, err := s.List(ctx, "co_1/nothing"); !errors.Is(err, backupy.ErrNotFound) {
		t.Fatalf("a level that holds nothing: %v", err)
	}

	pg := f.set.Object("tenant/co_1/agt_1/job_pg/run_pg1.enc")
	info := listed(t, s, "co_1/agt_1/job_pg", "run_pg1.enc")
	if info.Size != int64(len(pg.Data)) {
		t.Fatalf("size %d, want %d", info.Size, len(pg.Data))
	}
	obj, err := s.Open(ctx, info)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	f.proxy.ResetCounts()
	for _, r := range []struct{ off, n int64 }{{0, 4}, {info.Size - 4, 4}, {1 << 20, 1 << 20}, {12345, 100000}, {info.Size - 10, 10}, {4, 4}} {
		buf := make([]byte, r.n)
		n, err := obj.ReadAt(ctx, buf, r.off)
		if err != nil || int64(n) != r.n || !bytes.Equal(buf, pg.Data[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", r.off, r.n, n, err)
		}
	}
	// The small reads at the head and the tail came from two windows.
	if got := f.proxy.Counts().Get; got != 4 {
		t.Errorf("%d GETs for 2 large and 4 small reads, want 4", got)
	}
	buf := make([]byte, 100)
	if n, err := obj.ReadAt(ctx, buf, info.Size-40); n != 40 || err != io.EOF || !bytes.Equal(buf[:40], pg.Data[info.Size-40:]) {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
	if n, err := obj.ReadAt(ctx, buf, info.Size); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
}

func listed(t *testing.T, s *s3store.Store, dir, name string) backupy.ObjectInfo {
	t.Helper()
	l, err := s.List(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range l.Objects {
		if o.Key == dir+"/"+name {
			return o
		}
	}
	t.Fatalf("%s/%s not listed: %+v", dir, name, l)
	return backupy.ObjectInfo{}
}

// A replaced object's old version reads no more (ErrChanged, never the
// new bytes); a deleted one is ErrNotFound.
func TestReplacedAndDeleted(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	s := f.open(t, "tenant/", s3store.Options{})
	info := listed(t, s, "co_1", "README.txt")
	obj, _ := s.Open(ctx, info)
	f.srv.Put(t, bucket, "tenant/co_1/README.txt", []byte("another version!\n"))
	buf := make([]byte, 8)
	if n, err := obj.ReadAt(ctx, buf, 0); !errors.Is(err, backupy.ErrChanged) || n != 0 {
		t.Fatalf("read of a replaced object: %d %q, %v", n, buf[:n], err)
	}
	f.srv.Delete(t, bucket, "tenant/co_1/README.txt")
	obj2, _ := s.Open(ctx, listedOr(t, s, info))
	if _, err := obj2.ReadAt(ctx, buf, 0); !errors.Is(err, backupy.ErrNotFound) && !errors.Is(err, backupy.ErrChanged) {
		t.Fatalf("read of a deleted object: %v", err)
	}
}

func listedOr(_ *testing.T, _ *s3store.Store, info backupy.ObjectInfo) backupy.ObjectInfo {
	return info
}

// Throttling, resets before the answer and in the middle of a body are
// retried: the reads succeed with the right bytes.
func TestFaultsAreRetried(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	s := f.open(t, "tenant", s3store.Options{Timeout: 20 * time.Second, StallTimeout: 5 * time.Second})
	pg := f.set.Object("tenant/co_1/agt_1/job_pg/run_pg1.enc")
	info := listed(t, s, "co_1/agt_1/job_pg", "run_pg1.enc")
	obj, _ := s.Open(ctx, info)
	for _, fault := range []s3test.Fault{s3test.SlowDown, s3test.Reset, s3test.ResetMidBody} {
		n := 0
		f.proxy.SetFault(func(r s3test.Request) s3test.Fault {
			if r.IsGetObject() && n < 2 {
				n++
				return fault
			}
			return s3test.Pass
		})
		f.proxy.ResetCounts()
		buf := make([]byte, 1<<20)
		if got, err := obj.ReadAt(ctx, buf, 2<<20); err != nil || got != len(buf) || !bytes.Equal(buf, pg.Data[2<<20:3<<20]) {
			t.Fatalf("fault %d: read %d, %v", fault, got, err)
		}
		if c := f.proxy.Counts().Get; c != 3 {
			t.Errorf("fault %d: %d GETs, want 3 (two failed, one answered)", fault, c)
		}
	}
	// Listing is retried too.
	n := 0
	f.proxy.SetFault(func(r s3test.Request) s3test.Fault {
		if r.List && n < 2 {
			n++
			return s3test.SlowDown
		}
		return s3test.Pass
	})
	if _, err := s.List(ctx, "co_1"); err != nil {
		t.Fatal(err)
	}
}

// A service that stops answering fails reads with ErrUnreachable, in
// bounded time, and not as an interrupted call (which the mount would
// answer with EINTR, not EIO).
func TestUnreachable(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	s := f.open(t, "tenant", s3store.Options{Timeout: 2 * time.Second, StallTimeout: 400 * time.Millisecond})
	info := listed(t, s, "co_1", "README.txt")
	obj, _ := s.Open(ctx, info)
	for _, fault := range []s3test.Fault{s3test.Stall, s3test.Reset} {
		f.proxy.SetFault(func(s3test.Request) s3test.Fault { return fault })
		start := time.Now()
		_, err := obj.ReadAt(ctx, make([]byte, 4), 0)
		took := time.Since(start)
		if !errors.Is(err, s3store.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			t.Fatalf("fault %d: %v", fault, err)
		}
		if took > 10*time.Second {
			t.Fatalf("fault %d: failing took %v", fault, took)
		}
		if _, err := s.List(ctx, ""); !errors.Is(err, s3store.ErrUnreachable) {
			t.Fatalf("fault %d: listing: %v", fault, err)
		}
	}
	f.proxy.SetFault(nil)
	f.proxy.Release()
	if _, err := obj.ReadAt(ctx, make([]byte, 4), 0); err != nil {
		t.Fatalf("after the service is back: %v", err)
	}
}

// What the service refuses is one line naming the store and what S3
// said; nothing is retried.
func TestServiceErrors(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	for _, tt := range []struct {
		env    []string
		bucket string
		code   string
	}{
		{[]string{"AWS_SECRET_ACCESS_KEY=wrong"}, bucket, "SignatureDoesNotMatch"},
		// AWS says InvalidAccessKeyId; Versity Gateway its own code.
		{[]string{"AWS_ACCESS_KEY_ID=nobody"}, bucket, "XAdminUserNotFound"},
		{nil, "no-such-bucket", "NoSuchBucket"},
	} {
		s3test.Isolate(t, append(s3test.Env(f.proxy.URL), tt.env...)...)
		s, err := s3store.New(ctx, tt.bucket, "tenant", s3store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.proxy.ResetCounts()
		err = s.Check(ctx)
		var se *s3store.ServiceError
		if !errors.As(err, &se) || se.Code != tt.code || strings.Contains(err.Error(), "\n") ||
			!strings.HasPrefix(err.Error(), "s3://"+tt.bucket+"/tenant: S3 said "+tt.code) {
			t.Fatalf("%v: %v", tt.env, err)
		}
		if c := f.proxy.Counts().List; c != 1 {
			t.Errorf("%s: %d listings, want 1 (no retries)", tt.code, c)
		}
	}
	// No credentials anywhere: said at once, without reaching beyond
	// this machine for instance credentials.
	s3test.Isolate(t, "AWS_ENDPOINT_URL_S3="+f.proxy.URL)
	s, err := s3store.New(ctx, bucket, "", s3store.Options{})
	if err == nil {
		err = s.Check(ctx)
	}
	if err == nil || !strings.Contains(err.Error(), "s3://backups") {
		t.Fatalf("no credentials: %v", err)
	}
}

// The standard chain: a profile's credentials and region from the
// configuration files, the endpoint from AWS_ENDPOINT_URL; an option's
// endpoint overrides the environment's.
func TestStandardChain(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(cfg, []byte("[profile backup]\nregion = "+s3test.Region+"\n"), 0o600)
	os.WriteFile(creds, []byte("[backup]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n"), 0o600)
	s3test.Isolate(t, "AWS_PROFILE=backup", "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE="+creds,
		"AWS_ENDPOINT_URL="+f.proxy.URL)
	s := f.open(t, "tenant", s3store.Options{})
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint() != f.proxy.URL || !s.PathStyle() {
		t.Fatalf("endpoint %q, path style %v", s.Endpoint(), s.PathStyle())
	}
	// The option wins over the environment.
	s3test.Isolate(t, "AWS_PROFILE=backup", "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE="+creds,
		"AWS_ENDPOINT_URL_S3=http://127.0.0.1:1")
	s = f.open(t, "tenant", s3store.Options{Endpoint: f.srv.Endpoint, Profile: "backup"})
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint() != f.srv.Endpoint {
		t.Fatalf("endpoint %q", s.Endpoint())
	}
}

// Through a backupy.Store, an S3 store shows the same files with the
// same bytes as a directory holding the same objects.
func TestStoreMatchesLocal(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	local := t.TempDir()
	for _, o := range f.set.Objects {
		p := filepath.Join(local, filepath.FromSlash(o.Key))
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, o.Data, 0o600)
	}
	keys, err := backupy.ParseKeyring(strings.NewReader(f.set.Keyring), "test keyring")
	if err != nil {
		t.Fatal(err)
	}
	opts := backupy.Options{Keys: keys, Views: backupy.AllViews, CacheDir: t.TempDir()}
	ls, err := backupy.OpenStore(ctx, filepath.Join(local, "tenant"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	objects := f.open(t, "tenant", s3store.Options{InFlight: 3, BlockSize: 1 << 20})
	opts.CacheDir = t.TempDir()
	ss, err := backupy.Open(ctx, objects, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	want := ls.Blobs()
	got := ss.Blobs()
	if len(got) != len(want) || len(got) != len(f.set.Objects) {
		t.Fatalf("%d objects in S3, %d local, %d made", len(got), len(want), len(f.set.Objects))
	}
	for i := range want {
		lb, sb := want[i], got[i]
		if lb.Path != sb.Path || lb.Kind != sb.Kind || lb.Size != sb.Size {
			t.Fatalf("%s %s %d vs %s %s %d", lb.Path, lb.Kind, lb.Size, sb.Path, sb.Kind, sb.Size)
		}
		lf, err1 := ls.Files(ctx, lb)
		sf, err2 := ss.Files(ctx, sb)
		if err1 != nil || err2 != nil || len(lf) != len(sf) {
			t.Fatalf("%s: files %v %v", lb.Path, err1, err2)
		}
		for j := range lf {
			if lf[j].Name() != sf[j].Name() {
				t.Fatalf("%s: %s vs %s", lb.Path, lf[j].Name(), sf[j].Name())
			}
			if strings.HasSuffix(lf[j].Name(), ".meta.json") {
				continue // names its store
			}
			a, errA := readAll(ctx, lf[j])
			b, errB := readAll(ctx, sf[j])
			if (errA == nil) != (errB == nil) || !bytes.Equal(a, b) {
				t.Fatalf("%s: %d bytes (%v) local, %d (%v) from S3", sf[j].Name(), len(a), errA, len(b), errB)
			}
		}
		if lb.State() != sb.State() {
			t.Fatalf("%s: state %s vs %s", lb.Path, lb.State(), sb.State())
		}
	}
	main, err := ss.Main(ctx, ss.Blob("co_1/agt_1/job_pg/run_pg1.enc"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(ctx, main); err != nil || !bytes.Equal(b, f.set.Object("tenant/co_1/agt_1/job_pg/run_pg1.enc").Dump) {
		t.Fatalf("the dump: %v", err)
	}
}

func readAll(ctx context.Context, f *backupy.File) ([]byte, error) {
	h, err := f.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []byte
	buf := make([]byte, 256<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(ctx, buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
