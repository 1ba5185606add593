package bupstash

import (
	"bytes"
	"testing"
)

// TestReadaheadToleratesReordering reads a file the way the kernel does
// when several readahead requests are in flight: sequentially overall, but
// with neighbouring requests swapped. The reader must still see a
// sequential stream, decode leaves ahead of it, and return the right bytes.
func TestReadaheadToleratesReordering(t *testing.T) {
	const leafSize, nleaves, piece = 1 << 20, 8, 128 << 10
	leaves := make([][]byte, nleaves)
	var want []byte
	for i := range leaves {
		leaves[i] = benchData(leafSize, uint64(i))
		want = append(want, leaves[i]...)
	}
	r, it := memRepository(t, leaves, CompressionZstd, 64<<20)
	f, err := r.OpenItem(it).Data()
	if err != nil {
		t.Fatal(err)
	}
	rd := f.NewReader()
	buf := make([]byte, piece)
	for off := int64(0); off < int64(len(want)); off += 2 * piece {
		for _, o := range []int64{off + piece, off} { // each pair swapped
			n, err := rd.ReadAt(buf, o)
			if err != nil {
				t.Fatalf("read at %d: %v", o, err)
			}
			if !bytes.Equal(buf[:n], want[o:o+int64(n)]) {
				t.Fatalf("read at %d: wrong bytes", o)
			}
		}
	}
	st := r.cache.Stats()
	if st.Prefetched == 0 {
		t.Fatalf("no leaf was decoded ahead of the reader: %+v", st)
	}
	if st.Misses > 2 {
		t.Errorf("%d leaves were decoded by the reader itself, want at most 2 (readahead should have had them ready): %+v", st.Misses, st)
	}
}
