package bupstash_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// BenchmarkLoadTree decodes the index of a 200,000-entry snapshot (small
// files in a tree of 8,000 directories) into a Tree: the work behind the
// first ls of a snapshot in the mount. It reports entries per second and
// the bytes allocated per entry.
func BenchmarkLoadTree(b *testing.B) {
	dir := b.TempDir()
	r, err := testrepo.Create(filepath.Join(dir, "repo"), &testrepo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	shape := testrepo.Shape{Seed: 1, Files: 192_000, Sizes: testrepo.Fixed(100)}
	info, err := r.AddSnapshot(context.Background(), shape.Source(), testrepo.ItemMeta{})
	if err != nil {
		b.Fatal(err)
	}
	key := r.ReaderKey()
	if err := r.Close(); err != nil {
		b.Fatal(err)
	}
	repo, err := bupstash.Open(context.Background(), filepath.Join(dir, "repo"), key, bupstash.Options{})
	if err != nil {
		b.Fatal(err)
	}
	items, err := repo.Items(context.Background())
	if err != nil || len(items) != 1 {
		b.Fatalf("%d items, %v", len(items), err)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for b.Loop() {
		t, err := repo.OpenItem(items[0]).LoadTree(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if t.Len() != info.Entries {
			b.Fatalf("%d records for %d entries", t.Len(), info.Entries)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(info.Entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N)/float64(info.Entries), "B/entry")
}
