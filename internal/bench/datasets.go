package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupfs/backupfs/internal/untrusted"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// A Dataset is a repository shape the benchmarks read: Items snapshots of
// Shape (item i with seed Shape.Seed+i).
type Dataset struct {
	Name  string
	About string // what it is, for the report
	Shape testrepo.Shape
	Items int
}

// The datasets, by name.
var (
	// Large holds big files: huge.bin (1 GiB) for sequential and random
	// reads, and four 256 MiB files for parallel readers. Text content
	// compresses about 3:1 with zstd, in leaves of up to 8 MiB.
	Large = Dataset{
		Name:  "large",
		About: "1 snapshot: huge.bin (1 GiB) and 4 files of 256 MiB, text, zstd leaves up to 8 MiB",
		Shape: testrepo.Shape{Seed: 11, Files: 4, FilesPerDir: 4, Depth: 1, Sizes: testrepo.Fixed(256 << 20), Huge: 1 << 30},
		Items: 1,
	}
	// Million is one snapshot of a million entries, for listing speed and
	// the memory a huge tree costs; its files are small.
	Million = Dataset{
		Name:  "million",
		About: "1 snapshot of 1,000,000 entries (960,000 small files in 40,000 directories)",
		Shape: testrepo.Shape{Seed: 12, Files: 960_000, FilesPerDir: 24, Depth: 8, Sizes: testrepo.LogNormal{Median: 256, Sigma: 1, Max: 64 << 10}},
		Items: 1,
	}
	// Small is a home directory's worth of small files, read whole by tar.
	Small = Dataset{
		Name:  "small",
		About: "1 snapshot of 200,000 small files (lognormal, median 2 KiB), 8,333 directories",
		Shape: testrepo.Shape{Seed: 13, Files: 200_000},
		Items: 1,
	}
	// Diff is a home directory's worth of small files again, half as
	// many: backupfs diff and bupstash diff compare it with a live copy.
	Diff = Dataset{
		Name:  "diff",
		About: "1 snapshot of 100,000 small files (lognormal, median 2 KiB), 4,166 directories",
		Shape: testrepo.Shape{Seed: 15, Files: 100_000},
		Items: 1,
	}
	// Files100k is issue 13's tree of tiny files: 100 directories of about
	// 1,000 files of about 130 bytes (13 MB in all), where the cost is
	// the round trips per file, not the bytes.
	Files100k = Dataset{
		Name:  "files100k",
		About: "1 snapshot of 100,000 tiny files (lognormal, median 100 bytes, 13 MB in all) in 100 directories",
		Shape: testrepo.Shape{Seed: 15, Files: 100_000, FilesPerDir: 1000, Depth: 1, Sizes: testrepo.LogNormal{Median: 100, Sigma: 0.7, Max: 4 << 10}},
		Items: 1,
	}
	// Files64k is 10,000 files of 64 KiB in 10 directories: 640 MB, where
	// the bytes, not the round trips, dominate.
	Files64k = Dataset{
		Name:  "files64k",
		About: "1 snapshot of 10,000 files of 64 KiB (640 MB) in 10 directories",
		Shape: testrepo.Shape{Seed: 16, Files: 10_000, FilesPerDir: 1000, Depth: 1, Sizes: testrepo.Fixed(64 << 10)},
		Items: 1,
	}
	// Items is a repository of many backups, for mount start.
	Items = Dataset{
		Name:  "items",
		About: "10,000 snapshots of 5 files each",
		Shape: testrepo.Shape{Seed: 14, Files: 5, FilesPerDir: 5, Depth: 1},
		Items: 10_000,
	}
)

// Datasets lists every dataset.
var Datasets = []*Dataset{&Large, &Million, &Small, &Diff, &Items, &Items1k, &Entries100k, &Files100k, &Files64k}

// DatasetByName returns the named dataset.
func DatasetByName(name string) (*Dataset, error) {
	for _, d := range Datasets {
		if d.Name == name {
			return d, nil
		}
	}
	return nil, fmt.Errorf("no dataset %q", name)
}

// ItemShape returns the shape of item i.
func (d *Dataset) ItemShape(i int) testrepo.Shape {
	s := d.Shape
	s.Seed += uint64(i)
	return s
}

// fingerprint names a dataset's generated files: a changed shape or
// generator gets a new directory rather than stale data.
func (d *Dataset) fingerprint() string {
	sizes := "default"
	if d.Shape.Sizes != nil {
		sizes = d.Shape.Sizes.String()
	}
	h := sha256.Sum256(fmt.Appendf(nil, "v1 %d %+v %s", d.Items, d.Shape, sizes))
	return d.Name + "-" + hex.EncodeToString(h[:6])
}

// Generated is a dataset written to disk.
type Generated struct {
	*Dataset
	Repo, Key string
	// Item is the id of the first item; ItemDir its directory in a mount
	// (under the source directory "repo").
	Item    string
	Entries int   // index entries of the first item
	Bytes   int64 // data bytes of all items
}

// ItemDir is the first item's tree inside a mount of the dataset.
func (g *Generated) ItemDir(mnt string) string { return filepath.Join(mnt, "repo", "ids", g.Item) }

// Prepare returns the dataset under workDir, generating it first if it is
// not there yet (which takes from seconds to about a minute).
func Prepare(ctx context.Context, d *Dataset, workDir string, logf func(string, ...any)) (*Generated, error) {
	base := filepath.Join(workDir, d.fingerprint())
	g := &Generated{Dataset: d, Repo: filepath.Join(base, "repo"), Key: filepath.Join(base, "primary.key")}
	stamp := filepath.Join(base, "complete")
	if b, err := os.ReadFile(stamp); err == nil {
		if _, err := fmt.Sscanf(string(b), "%s %d %d", &g.Item, &g.Entries, &g.Bytes); err == nil {
			return g, nil
		}
	}
	// Anything there is an interrupted generation.
	if err := os.RemoveAll(base); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	logf("generating dataset %s (%s) in %s", d.Name, d.About, base)
	start := time.Now()
	if err := generate(ctx, d, g); err != nil {
		return nil, fmt.Errorf("generating %s: %w", d.Name, err)
	}
	logf("  %d items, %d entries in the first, %.1f GiB of data, in %v", d.Items, g.Entries, float64(g.Bytes)/(1<<30), time.Since(start).Round(time.Second))
	return g, os.WriteFile(stamp, fmt.Appendf(nil, "%s %d %d\n", g.Item, g.Entries, g.Bytes), 0o644)
}

func generate(ctx context.Context, d *Dataset, g *Generated) error {
	// One item uses every core; many items are written a core each.
	opts := &testrepo.Options{}
	jobs := 1
	if d.Items > 1 {
		jobs = runtime.GOMAXPROCS(0)
		opts.Workers = 1
	}
	r, err := testrepo.Create(g.Repo, opts)
	if err != nil {
		return err
	}
	if err := r.WriteKey(g.Key); err != nil {
		r.Close()
		return err
	}
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= d.Items || ctx.Err() != nil {
					return
				}
				info, err := r.AddSnapshot(ctx, d.ItemShape(i).Source(), testrepo.ItemMeta{Source: d.Name})
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				if err == nil {
					g.Bytes += int64(info.DataSize)
					if i == 0 {
						g.Item, g.Entries = info.ID.String(), info.Entries
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := r.Close(); err != nil && first == nil {
		first = err
	}
	if first == nil && g.Item == "" {
		first = errors.New("no item written")
	}
	return first
}

// checkKey makes sure the generated key loads, so a broken dataset
// directory is reported before anything is timed.
func (g *Generated) checkKey() error {
	if _, err := os.Stat(g.Repo); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dataset %s: %s is missing", g.Name, g.Repo)
	}
	b, err := untrusted.ReadFile(g.Key, untrusted.Key)
	if err != nil {
		return err
	}
	_, err = bupstash.ParseKey(b)
	return err
}
