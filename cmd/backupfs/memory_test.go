package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/testrepo"
)

// The mount's memory is bounded by admission: decodes in flight count
// against --cache-size before they allocate, so peak RSS stays within
// --cache-size + 64 MiB however many readers there are. These tests read a
// large raw item at distinct offsets with many readers at once (each
// offset needs a leaf of up to 8 MiB decoded) and measure the mount
// process's peak RSS (VmHWM). With a 1 MiB cache, 32 such readers took a
// mount to 210 MiB before admission, 128 readers to 326 MiB.

// rssSlack is what a mount may hold beyond its cache: the Go runtime and
// heap, FUSE request buffers, decodes past the cache's limit.
const rssSlack = 64 << 20

var (
	plainOnce sync.Once
	plainBin  string
	plainErr  error
)

// plainBinary is the backupfs binary built without the race detector,
// whose shadow memory would swamp the RSS being measured; or the one
// BACKUPFS_RSS_BINARY names, to measure another build (main's, say).
func plainBinary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("BACKUPFS_RSS_BINARY"); b != "" {
		return b
	}
	plainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "backupfs-plain")
		if err != nil {
			plainErr = err
			return
		}
		plainBin = filepath.Join(dir, "backupfs")
		if out, err := exec.Command("go", "build", "-o", plainBin, ".").CombinedOutput(); err != nil {
			plainErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBin
}

// largeRawItem writes a repository holding one raw item of size bytes of
// text (zstd leaves of up to 8 MiB, as Bupstash 0.12 writes) and returns
// the repository and its key file.
func largeRawItem(t testing.TB, dir string, size int64) (repo, key string) {
	t.Helper()
	repo, key = filepath.Join(dir, "repo"), filepath.Join(dir, "repo.key")
	r, err := testrepo.Create(repo, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WriteKey(key); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddRaw(context.Background(), testrepo.Text(size, 1).Open(), testrepo.ItemMeta{Source: "big.txt"}); err != nil {
		t.Fatal(err)
	}
	return repo, key
}

// peakRSS mounts repo with the given cache, has readers read perReader
// bytes each at distinct, evenly spread offsets of the item at once, and
// returns the mount's peak RSS in bytes.
func peakRSS(t testing.TB, repo, key, cacheSize string, readers int, perReader int64) int64 {
	t.Helper()
	fusetest.RequireFUSE(t)
	mnt := t.TempDir()
	cmd := exec.Command(plainBinary(t), "mount", "--repo", repo, "--key", key, "--cache-size", cacheSize, mnt)
	cmd.Env = cleanEnv()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if fusetest.Mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}()
	var file string
	for deadline := time.Now().Add(30 * time.Second); file == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 30 s:\n%s", stderr)
		}
		select {
		case <-exited:
			t.Fatalf("backupfs mount exited:\n%s", stderr)
		default:
		}
		if m, _ := filepath.Glob(filepath.Join(mnt, "repo", "ids", "*", "big.txt")); len(m) == 1 {
			file = m[0]
		}
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	stride := st.Size() / int64(readers)
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(file)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			n, err := io.Copy(io.Discard, io.NewSectionReader(f, int64(i)*stride, min(perReader, stride)))
			if err == nil && n != min(perReader, stride) {
				err = fmt.Errorf("reader %d: %d bytes", i, n)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		t.Fatalf("%d readers not done after 10 minutes", readers)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return peakOf(t, cmd.Process.Pid)
}

func parseCache(t testing.TB, s string) int64 {
	t.Helper()
	n, err := parseByteSize(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The bound in CI, for a representative subset of cache sizes and reader
// counts (the full table is BenchmarkMountPeakRSS).
func TestMountMemoryStaysWithinTheCacheBound(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 384 MiB item")
	}
	repo, key := largeRawItem(t, t.TempDir(), 384<<20)
	for _, c := range []struct {
		cache   string
		readers int
	}{
		{"1M", 32},
		{"1M", 128},
		{"64M", 128},
	} {
		t.Run(fmt.Sprintf("cache=%s/readers=%d", c.cache, c.readers), func(t *testing.T) {
			peak := peakRSS(t, repo, key, c.cache, c.readers, 256<<10)
			bound := parseCache(t, c.cache) + rssSlack
			t.Logf("peak RSS %d MiB (bound %d MiB)", peak>>20, bound>>20)
			if peak > bound {
				t.Errorf("peak RSS %d MiB, over --cache-size %s + 64 MiB", peak>>20, c.cache)
			}
		})
	}
}

// BenchmarkMountPeakRSS gives the mount's peak RSS for 1, 32, 128 and 384
// readers at distinct offsets of a 3 GiB raw item (BACKUPFS_RSS_ITEM sets
// another size), with --cache-size 1M, 64M and 256M: metric peak-MiB,
// and over-bound-MiB, how far past --cache-size + 64 MiB (0 when within).
// Each reader reads 1 MiB. It writes the item once, in a temporary
// directory; it takes minutes. BACKUPFS_RSS_BINARY measures another build.
func BenchmarkMountPeakRSS(b *testing.B) {
	size := int64(3 << 30)
	if s := os.Getenv("BACKUPFS_RSS_ITEM"); s != "" {
		n, err := parseByteSize(s)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	dir, err := os.MkdirTemp("", "backupfs-rss")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	repo, key := largeRawItem(b, dir, size)
	for _, cache := range []string{"1M", "64M", "256M"} {
		for _, readers := range []int{1, 32, 128, 384} {
			b.Run(fmt.Sprintf("cache=%s/readers=%d", cache, readers), func(b *testing.B) {
				peak := peakRSS(b, repo, key, cache, readers, 1<<20)
				b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
				b.ReportMetric(float64(max(0, peak-parseCache(b, cache)-rssSlack))/(1<<20), "over-bound-MiB")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
