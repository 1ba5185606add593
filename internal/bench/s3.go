package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/crypto/gcmframe"
	"github.com/backupfs/backupfs/internal/s3test"
	"github.com/backupfs/backupfs/internal/slowlink"
)

// The s3 group mounts Backupy objects in a bucket of a real S3 server
// (versitygw on 127.0.0.1) reached through a slow link: 25 ms round trip
// and 200 Mbit/s, each way, shared by every connection. Requests are
// counted by a proxy between the link and the server.
const (
	s3Bucket     = "bench"
	s3LinkDelay  = 12500 * time.Microsecond // each way: 25 ms round trip
	s3LinkRate   = 25_000_000               // bytes per second: 200 Mbit/s
	s3BigKey     = "big/co_1/agt_1/job_pg/run_big.enc"
	s3BigDump    = 1<<30 - 64<<10 // the 1 GiB object's dump, incompressible
	s3ManyPrefix = "many"
	s3FewPrefix  = "few"
	s3ManyCount  = 1000
	s3FewCount   = 100
)

// s3Key is the data key of every object of the group.
func s3Key() []byte {
	k := sha256.Sum256([]byte("backupfs bench s3"))
	return k[:]
}

// s3Env is the AWS environment of the mounts: the server's credentials
// and nothing of the machine's AWS configuration.
func s3Env(endpoint string) error {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "AWS_") {
			os.Unsetenv(name)
		}
	}
	for _, kv := range s3test.Env(endpoint) {
		name, value, _ := strings.Cut(kv, "=")
		if err := os.Setenv(name, value); err != nil {
			return err
		}
	}
	return nil
}

// s3Setup is the server, the counting proxy and the slow link in front.
type s3Setup struct {
	srv   *s3test.Server
	proxy *s3test.Proxy
	link  *slowlink.Link
	ring  string
}

func (s *Suite) startS3(ctx context.Context) (*s3Setup, error) {
	if s.cfg.Versitygw == "" {
		return nil, errors.New("the s3 group needs versitygw: give -versitygw or set BACKUPFS_VERSITYGW (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	}
	data := filepath.Join(s.cfg.Work, "s3-data") // kept: uploads are done once
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	srv, err := s3test.Launch(s.cfg.Versitygw, data)
	if err != nil {
		return nil, err
	}
	st := &s3Setup{srv: srv}
	fail := func(err error) (*s3Setup, error) { st.close(); return nil, err }
	if err := s.s3Data(ctx, srv); err != nil {
		return fail(err)
	}
	if st.proxy, err = s3test.StartProxy(srv.Endpoint); err != nil {
		return fail(err)
	}
	if st.link, err = slowlink.Listen(strings.TrimPrefix(st.proxy.URL, "http://"), s3LinkDelay, s3LinkRate); err != nil {
		return fail(err)
	}
	if err := s3Env("http://" + st.link.Addr()); err != nil {
		return fail(err)
	}
	st.ring = filepath.Join(s.cfg.Work, "s3-bench.keyring")
	if err := os.WriteFile(st.ring, []byte("* hex:"+hex.EncodeToString(s3Key())+"\n"), 0o600); err != nil {
		return fail(err)
	}
	return st, nil
}

func (st *s3Setup) close() {
	if st.link != nil {
		st.link.Close()
	}
	if st.proxy != nil {
		st.proxy.Close()
	}
	st.srv.Close()
}

// s3Data uploads what the group reads unless an earlier run did.
func (s *Suite) s3Data(ctx context.Context, srv *s3test.Server) error {
	c := srv.Client()
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		if err := srv.CreateBucketErr(s3Bucket); err != nil {
			return err
		}
	}
	have := func(key string) bool {
		_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
		return err == nil
	}
	if !have(s3BigKey) {
		s.cfg.Logf("   uploading a 1 GiB object")
		if err := s.uploadBig(srv); err != nil {
			return err
		}
	}
	for _, set := range []struct {
		prefix string
		n      int
	}{{s3ManyPrefix, s3ManyCount}, {s3FewPrefix, s3FewCount}} {
		if have(fmt.Sprintf("%s/run_%04d.enc", set.prefix, set.n-1)) {
			continue
		}
		s.cfg.Logf("   uploading %d small objects under %s/", set.n, set.prefix)
		for i := range set.n {
			obj, err := smallObject(i)
			if err != nil {
				return err
			}
			if _, err := srv.PutErr(s3Bucket, fmt.Sprintf("%s/run_%04d.enc", set.prefix, i), obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// uploadBig writes the 1 GiB object to a file (compressing and
// encrypting as the agent does) and uploads it.
func (s *Suite) uploadBig(srv *s3test.Server) error {
	path := filepath.Join(s.cfg.Work, "s3-big.enc")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	fw, err := gcmframe.NewWriter(bw, s3Key())
	if err != nil {
		return err
	}
	zw, err := zstd.NewWriter(fw, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1}) // an io.Reader: incompressible bytes, fast
	if _, err := zw.Write([]byte("PGDMP\x01\x0e\x00")); err != nil {
		return err
	}
	if _, err := io.CopyN(zw, rng, s3BigDump-8); err != nil {
		return err
	}
	for _, c := range []io.Closer{zw, fw} {
		if err := c.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return srv.Upload(s3Bucket, s3BigKey, f, size)
}

// smallObject is an encrypted MySQL dump of a few KiB.
func smallObject(i int) ([]byte, error) {
	var dump strings.Builder
	dump.WriteString("-- MySQL dump 10.13  Distrib 8.0.36\n")
	for j := range 100 {
		fmt.Fprintf(&dump, "INSERT INTO t VALUES (%d,%d);\n", i, j)
	}
	var zst, out bytes.Buffer
	zw, err := zstd.NewWriter(&zst)
	if err != nil {
		return nil, err
	}
	io.Copy(zw, strings.NewReader(dump.String()))
	zw.Close()
	fw, err := gcmframe.NewWriter(&out, s3Key())
	if err != nil {
		return nil, err
	}
	fw.Write(zst.Bytes())
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// mountS3 mounts the bucket prefix with a cache directory of its own.
func (s *Suite) mountS3(ctx context.Context, st *s3Setup, prefix, cacheDir string) (*Server, error) {
	return startServer(ctx, s.cfg.Work, s.cfg.Backupfs, "mount",
		"--backupy", "s3://"+s3Bucket+"/"+prefix, "--backupy-keyring", st.ring,
		"--backupy-cache-dir", cacheDir, "--backupy-views", "all",
		"--cache-size", strconv.FormatInt(s.cfg.CacheSize, 10))
}

func (s *Suite) runS3(ctx context.Context) error {
	st, err := s.startS3(ctx)
	if err != nil {
		return err
	}
	defer st.close()
	const group = "Backupy in S3, through a 25 ms / 200 Mbit/s link"
	link := float64(s3LinkRate) / 1e6

	// Reference: one plain ranged GET of 64 MiB through the same link.
	ref, err := s3RawGet(ctx, "http://"+st.link.Addr(), 64<<20)
	if err != nil {
		return err
	}
	s.add(group, "reference: one ranged GET of 64 MiB", mbps(ref), fmt.Sprintf("MB/s (link: %.0f MB/s)", link))

	// The first full read of the 1 GiB object: the decode pass fetches it
	// with several ranged GETs in flight.
	var rates, walls, rss []float64
	for range s.cfg.Runs {
		cache, err := os.MkdirTemp(s.cfg.Work, "s3-cache-")
		if err != nil {
			return err
		}
		var carried int64
		var wall time.Duration
		r, err := mounted(ctx, func() (*Server, error) { return s.mountS3(ctx, st, "big", cache) }, func(srv *Server) error {
			_, down0 := st.link.Carried()
			r, err := runToNull(ctx, "", "cat", filepath.Join(srv.Dir, "big", "co_1", "agt_1", "job_pg", "run_big.pgdump"))
			_, down1 := st.link.Carried()
			carried, wall = down1-down0, r.Wall
			return err
		})
		os.RemoveAll(cache)
		if err != nil {
			return err
		}
		rates = append(rates, float64(carried)/wall.Seconds()/1e6)
		walls = append(walls, wall.Seconds())
		rss = append(rss, float64(r.MaxRSS))
	}
	first := median(rates)
	s.add(group, "first full read of a 1 GiB object (cat of its dump)", mbps(first),
		fmt.Sprintf("MB/s across the link; %.1f s; %.0f%% of the link, %.2f× the reference; peak RSS %s",
			median(walls), 100*first/link, first/ref, mib(median(rss))))
	s.target("first full read of an S3 object crosses the link at ≥ 85% of its bandwidth", first/link, 0.85, true, "×")
	s.largeRSS = append(s.largeRSS, int64(median(rss)))

	// A random 4 KiB read of a never-decoded object: its .zst view is
	// random-access (one ranged GET of the frame). The dump itself needs
	// its size first, which only a full pass finds.
	var reads []float64
	for i := range s.cfg.Runs {
		cache, err := os.MkdirTemp(s.cfg.Work, "s3-cache-")
		if err != nil {
			return err
		}
		_, err = mounted(ctx, func() (*Server, error) { return s.mountS3(ctx, st, "big", cache) }, func(srv *Server) error {
			p := filepath.Join(srv.Dir, "big", "co_1", "agt_1", "job_pg", "run_big.pgdump.zst")
			f, err := os.Open(p) // lists and opens frame 0: not timed
			if err != nil {
				return err
			}
			defer f.Close()
			off := int64(100+i*97) << 20
			start := time.Now()
			if _, err := f.ReadAt(make([]byte, 4096), off); err != nil {
				return err
			}
			reads = append(reads, time.Since(start).Seconds())
			return nil
		})
		os.RemoveAll(cache)
		if err != nil {
			return err
		}
	}
	frame, err := s3RawGet(ctx, "http://"+st.link.Addr(), gcmframe.FullFrameSize)
	if err != nil {
		return err
	}
	frameSecs := float64(gcmframe.FullFrameSize) / 1e6 / frame
	s.add(group, "random 4 KiB read of a never-decoded object (.zst view)", secs(median(reads)),
		fmt.Sprintf("one ranged GET of its 1 MiB frame; %.2f× one plain GET of a frame (%s)", median(reads)/frameSecs, secs(frameSecs)))

	// ls -l of a prefix of 1,000 objects, cold (new cache directory) and
	// after a remount; and of 100 objects, to show the count does not
	// grow with the objects beyond ListObjects paging.
	for _, set := range []struct {
		prefix string
		n      int
	}{{s3ManyPrefix, s3ManyCount}, {s3FewPrefix, s3FewCount}} {
		cache, err := os.MkdirTemp(s.cfg.Work, "s3-cache-")
		if err != nil {
			return err
		}
		for _, warm := range []bool{false, true} {
			st.proxy.ResetCounts()
			var wall, ready time.Duration
			var listed int64
			_, err := mounted(ctx, func() (*Server, error) { return s.mountS3(ctx, st, set.prefix, cache) }, func(srv *Server) error {
				r, err := runTool(ctx, "", "ls", "-l", filepath.Join(srv.Dir, set.prefix))
				wall, listed, ready = r.Wall, r.Lines, srv.Ready
				return err
			})
			if err != nil {
				os.RemoveAll(cache)
				return err
			}
			c := st.proxy.Counts()
			state := "first mount"
			if warm {
				state = "remount"
			}
			pages := (set.n + 999) / 1000
			// The mount lists its root (and examines new objects) before
			// it answers: that is in its time to mount, not in ls's.
			s.add(group, fmt.Sprintf("ls -l of %d objects, %s", set.n, state), secs(wall.Seconds()),
				fmt.Sprintf("after mounting in %s; %d lines; %d requests in the mount's life: %d ListObjects, %d GETs (%d page(s) of keys)",
					secs(ready.Seconds()), listed-1, c.List+c.Get+c.Head+c.Other, c.List, c.Get, pages))
			if warm && set.n == s3ManyCount {
				// The mount's check, its root listing, and one listing
				// again if ls comes after the listing's TTL: per page.
				s.target("ls -l of 1,000 S3 objects after a remount: requests per ListObjects page, no GET", float64(c.List+c.Get+c.Head+c.Other)/float64(pages), 3, false, "requests")
			}
		}
		os.RemoveAll(cache)
	}
	return nil
}

// s3RawGet times one ranged GET of n bytes of the big object through
// endpoint and returns MB/s.
func s3RawGet(ctx context.Context, endpoint string, n int64) (float64, error) {
	c := s3.New(s3.Options{
		Region: s3test.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s3test.AccessKey, s3test.SecretKey, ""),
	})
	start := time.Now()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(s3BigKey), Range: aws.String(fmt.Sprintf("bytes=%d-%d", 8<<20, 8<<20+n-1))})
	if err != nil {
		return 0, err
	}
	got, err := io.Copy(io.Discard, out.Body)
	out.Body.Close()
	if err != nil || got != n {
		return 0, fmt.Errorf("reference GET: %d bytes, %v", got, err)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}
