package testrepo

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkRaw measures writing raw items of incompressible data into one
// repository.
func BenchmarkRaw(b *testing.B) {
	const size = 128 << 20
	r, err := Create(filepath.Join(b.TempDir(), "repo"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := r.AddRaw(context.Background(), Random(size, uint64(i)).Open(), ItemMeta{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot measures writing snapshots of 20000 small files (the
// default Shape: about 4 KiB of text each), reporting the cost per entry.
func BenchmarkSnapshot(b *testing.B) {
	r, err := Create(filepath.Join(b.TempDir(), "repo"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var entries, bytes int
	for i := 0; b.Loop(); i++ {
		info, err := r.AddSnapshot(context.Background(), Shape{Seed: uint64(i), Files: 20000}.Source(), ItemMeta{})
		if err != nil {
			b.Fatal(err)
		}
		entries += info.Entries
		bytes += int(info.DataSize + info.IndexSize)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(entries), "ns/entry")
	b.ReportMetric(float64(bytes)/b.Elapsed().Seconds()/(1<<20), "MiB/s")
}
