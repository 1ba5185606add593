// Command mkrepo writes Bupstash repositories of chosen shapes for tests
// and benchmarks of backupfs: millions of small files, huge files, deep
// trees, sparse files, hard links, xattrs, many items. It is a thin front
// end to package testrepo; see there for the format details.
//
//	mkrepo -dir /tmp/r -files 1000000                 # a million small files
//	mkrepo -dir /tmp/r -files 0 -huge 1G -content random
//	mkrepo -dir /tmp/r -raw 1G                        # one raw item
//	mkrepo -dir /tmp/r -items 10000 -files 5          # ten thousand snapshots
//
// The key goes to -key (default DIR.key). Running it again on an existing
// repository adds items with that key.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashkey"
	"github.com/backupfs/backupfs/internal/untrusted"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "mkrepo:", err)
		os.Exit(1)
	}
}

type config struct {
	dir, keyPath string
	shape        testrepo.Shape
	snapshot     bool
	items, jobs  int
	raw          int64
	name         string
	opts         testrepo.Options
	verbose      bool
}

func parse(args []string) (*config, error) {
	fl := flag.NewFlagSet("mkrepo", flag.ContinueOnError)
	c := &config{}
	var (
		sizeDist, content, compression, huge, raw, maxChunk, sparseSize string
		sparse, hardlinks, xattrs                                       bool
	)
	fl.StringVar(&c.dir, "dir", "", "repository `directory` (created unless it is a repository)")
	fl.StringVar(&c.keyPath, "key", "", "key `file` (default DIR.key; read when DIR exists, written when it is created)")
	fl.IntVar(&c.shape.Files, "files", 1000, "regular files per snapshot")
	fl.IntVar(&c.shape.FilesPerDir, "files-per-dir", 24, "average files per directory")
	fl.StringVar(&sizeDist, "size-dist", testrepo.DefaultSizes.String(), "file sizes: fixed:SIZE, uniform:MIN-MAX or lognormal:MEDIAN[:SIGMA]")
	fl.IntVar(&c.shape.Depth, "depth", 6, "maximum directory depth (one chain is this deep)")
	fl.StringVar(&content, "content", "text", "file and raw content: text (compressible), random or zero")
	fl.StringVar(&huge, "huge", "0", "add one file huge.bin of this `size` at the root (e.g. 1G)")
	fl.BoolVar(&sparse, "sparse", false, "add sparse files (one per 1000 files, at least one)")
	fl.StringVar(&sparseSize, "sparse-size", "8M", "size of each sparse file")
	fl.BoolVar(&hardlinks, "hardlinks", false, "give one file in 100 (at least one) a second name")
	fl.BoolVar(&xattrs, "xattrs", false, "give one entry in 20 extended attributes")
	fl.BoolVar(&c.shape.Special, "special", false, "add symlinks, fifos, devices, non-UTF-8 names, pre-1970 times")
	fl.IntVar(&c.items, "items", 1, "number of items (each a snapshot and/or a raw item)")
	fl.IntVar(&c.jobs, "jobs", 0, "items written in parallel (default: 1 for one item, else GOMAXPROCS)")
	fl.StringVar(&raw, "raw", "0", "write a raw item of this `size` per item (only raw items unless snapshot flags are given)")
	fl.StringVar(&compression, "compression", "zstd", "data leaf compression: zstd, lz4 or none")
	fl.StringVar(&maxChunk, "max-chunk", "8M", "maximum leaf size (at most 20M)")
	fl.Uint64Var(&c.shape.Seed, "seed", 1, "seed of the generated shapes and contents (item i uses seed+i)")
	fl.IntVar(&c.opts.Workers, "workers", 0, "goroutines per item (default GOMAXPROCS / jobs)")
	fl.StringVar(&c.name, "name", "", "source name for the default name tag (default tree / raw.bin)")
	fl.BoolVar(&c.verbose, "v", false, "print every item (default when there are at most 20)")
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if c.dir == "" {
		return nil, errors.New("-dir is required")
	}
	if c.keyPath == "" {
		c.keyPath = strings.TrimSuffix(c.dir, "/") + ".key"
	}
	var err error
	if c.shape.Sizes, err = testrepo.ParseSizeDist(sizeDist); err != nil {
		return nil, err
	}
	if c.shape.Content, err = testrepo.ParseContentKind(content); err != nil {
		return nil, err
	}
	if c.opts.Compression, err = testrepo.ParseCompression(compression); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		v   string
		dst *int64
	}{{huge, &c.shape.Huge}, {raw, &c.raw}, {sparseSize, &c.shape.SparseSize}} {
		if *s.dst, err = testrepo.ParseSize(s.v); err != nil {
			return nil, err
		}
	}
	mc, err := testrepo.ParseSize(maxChunk)
	if err != nil {
		return nil, err
	}
	c.opts.MaxChunkSize = int(mc)
	if sparse {
		c.shape.SparseFiles = max(1, c.shape.Files/1000)
	}
	if hardlinks {
		c.shape.Hardlinks = max(1, c.shape.Files/100)
	}
	if xattrs {
		c.shape.XattrEvery = 20
	}
	// With -raw, snapshots are made only if a snapshot flag was given.
	c.snapshot = true
	if c.raw > 0 {
		c.snapshot = false
		fl.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "files", "files-per-dir", "size-dist", "depth", "huge", "sparse", "sparse-size", "hardlinks", "xattrs", "special":
				c.snapshot = true
			}
		})
	}
	if c.items < 1 {
		return nil, errors.New("-items must be at least 1")
	}
	if c.jobs <= 0 {
		c.jobs = 1
		if c.items > 1 {
			c.jobs = min(c.items, runtime.GOMAXPROCS(0))
		}
	}
	if c.opts.Workers <= 0 {
		c.opts.Workers = max(1, runtime.GOMAXPROCS(0)/c.jobs)
	}
	return c, nil
}

func run(args []string, out io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	start := time.Now()
	r, created, err := openOrCreate(c)
	if err != nil {
		return err
	}
	defer r.Close()
	state := "opened"
	if created {
		state = "created"
	}
	fmt.Fprintf(out, "repository %s (%s), key %s (id %s)\n", c.dir, state, c.keyPath, bupstash.Xid(r.Key().ID))
	if c.snapshot {
		fmt.Fprintf(out, "snapshot shape: %d files (%s, %s content), %d per directory, depth %d, huge %s, %d sparse, %d hard links, xattrs every %d, special %v\n",
			c.shape.Files, c.shape.Sizes, contentName(c.shape.Content), c.shape.FilesPerDir, c.shape.Depth,
			testrepo.FormatSize(c.shape.Huge), c.shape.SparseFiles, c.shape.Hardlinks, c.shape.XattrEvery, c.shape.Special)
	}

	var (
		mu                   sync.Mutex
		total                []*testrepo.ItemInfo
		next                 atomic.Int64
		firstErr             error
		wg                   sync.WaitGroup
		verbose              = c.verbose || c.items <= 20
		bw                   = bufio.NewWriter(out)
		lastReport           = time.Now()
		ctxJobs, cancelItems = context.WithCancel(ctx)
	)
	defer cancelItems()
	report := func(i int, info *testrepo.ItemInfo, kind string) {
		mu.Lock()
		defer mu.Unlock()
		total = append(total, info)
		if verbose {
			printItem(bw, i, c.items, info, kind)
			bw.Flush()
		} else if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(bw, "  %d items written, %v\n", len(total), time.Since(start).Round(time.Millisecond))
			bw.Flush()
		}
	}
	for range c.jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= c.items || ctxJobs.Err() != nil {
					return
				}
				if err := writeItem(ctxJobs, r, c, i, report); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("item %d: %w", i+1, err)
					}
					mu.Unlock()
					cancelItems()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	var entries int
	var data, index uint64
	var stored int64
	for _, it := range total {
		entries += it.Entries
		data += it.DataSize
		index += it.IndexSize
		stored += it.Stored
	}
	fmt.Fprintf(bw, "total: %d items, %d entries, data %s, index %s, %s stored, in %v (%s/s), CPU %s, peak RSS %s\n",
		len(total), entries, human(data), human(index), human(uint64(stored)), elapsed.Round(time.Millisecond),
		human(uint64(float64(data+index)/max(elapsed.Seconds(), 1e-9))), cpuTime(), peakRSS())
	return bw.Flush()
}

func contentName(k testrepo.ContentKind) string {
	return [...]string{"text", "random", "zero"}[k]
}

func openOrCreate(c *config) (*testrepo.Repo, bool, error) {
	if _, err := os.Stat(filepath.Join(c.dir, "tx.lock")); err == nil {
		key, err := loadKey(c.keyPath)
		if err != nil {
			return nil, false, fmt.Errorf("existing repository needs its key: %w", err)
		}
		r, err := testrepo.Open(c.dir, key, &c.opts)
		return r, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if _, err := os.Stat(c.keyPath); err == nil {
		return nil, false, fmt.Errorf("%s exists; remove it or pass -key for the new repository's key", c.keyPath)
	}
	r, err := testrepo.Create(c.dir, &c.opts)
	if err != nil {
		return nil, false, err
	}
	if err := r.WriteKey(c.keyPath); err != nil {
		r.Close()
		return nil, false, err
	}
	return r, true, nil
}

// writeItem writes item i: a snapshot and/or a raw item.
func writeItem(ctx context.Context, r *testrepo.Repo, c *config, i int, report func(int, *testrepo.ItemInfo, string)) error {
	seed := c.shape.Seed + uint64(i)
	if c.snapshot {
		shape := c.shape
		shape.Seed = seed
		name := c.name
		if name == "" {
			name = "tree"
		}
		info, err := r.AddSnapshot(ctx, shape.Source(), testrepo.ItemMeta{Source: name})
		if err != nil {
			return err
		}
		report(i, info, "snapshot")
	}
	if c.raw > 0 {
		name := c.name
		if name == "" {
			name = "raw.bin"
		}
		content := c.shape.Content.Make(c.raw, seed^0x726177)
		info, err := r.AddRaw(ctx, content.Open(), testrepo.ItemMeta{Source: name})
		if err != nil {
			return err
		}
		report(i, info, "raw")
	}
	return nil
}

func printItem(w io.Writer, i, n int, it *testrepo.ItemInfo, kind string) {
	rate := float64(it.DataSize+it.IndexSize) / max(it.Duration.Seconds(), 1e-9)
	fmt.Fprintf(w, "item %d/%d %s %s name=%s data %s (%d leaves, height %d)",
		i+1, n, it.ID, kind, it.Tags["name"], human(it.DataSize), it.DataHTree.DataChunkCount, it.DataHTree.Height)
	if it.Snapshot {
		fmt.Fprintf(w, ", %d entries, index %s (%d leaves, height %d)",
			it.Entries, human(it.IndexSize), it.IndexHTree.DataChunkCount, it.IndexHTree.Height)
	}
	fmt.Fprintf(w, ", %d nodes, %s stored, %v (%s/s)\n", it.Nodes, human(uint64(it.Stored)), it.Duration.Round(time.Millisecond), human(uint64(rate)))
}

func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// cpuTime reports the user and system CPU time used so far.
func cpuTime() string {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return "unknown"
	}
	d := func(tv syscall.Timeval) time.Duration { return time.Duration(tv.Nano()).Round(10 * time.Millisecond) }
	return fmt.Sprintf("%v user + %v sys", d(ru.Utime), d(ru.Stime))
}

// peakRSS reports the process's peak resident memory (Linux).
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadKey reads a key file with its secrets, which a writer needs.
func loadKey(path string) (*bupstashkey.Key, error) {
	b, err := untrusted.ReadFile(path, untrusted.Key)
	if err != nil {
		return nil, err
	}
	return bupstashkey.Parse(b)
}
