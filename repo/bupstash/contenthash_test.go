package bupstash_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
)

// TestContentHashDespiteReordering reads files in 64 KiB pieces that
// arrive slightly out of order, as a mount's readahead delivers them: the
// content is still checked against the index's hash, and a file whose
// bytes do not match it fails the read that completes it.
func TestContentHashDespiteReordering(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // 640,000 bytes, several leaves
	var wrong [32]byte
	o, tr := loadForgedSnapshot(t, bupstashtest.Snapshot{
		Item:        bupstashtest.Item{Format: 3, Timestamp: time.Unix(1700000000, 0)},
		EntryFormat: 5,
		Entries: []bupstashtest.Entry{
			{Path: ".", Mode: bupstash.ModeDir | 0o755},
			{Path: "good", Mode: bupstash.ModeRegular | 0o644, Content: content},
			{Path: "lies", Mode: bupstash.ModeRegular | 0o644, Content: content, Hash: &wrong},
		},
		LeafSize:    100_000,
		Compression: bupstash.CompressionNone,
	})
	const piece = 64 << 10
	order := []int{1, 0, 2, 4, 3, 5, 7, 6, 8, 9} // pieces of the file, as they arrive
	read := func(name string) error {
		k, ok := tr.Lookup(0, []byte(name))
		if !ok {
			t.Fatalf("%s not found", name)
		}
		file, err := tr.File(o, k)
		if err != nil {
			t.Fatal(err)
		}
		rd := file.NewReader()
		buf := make([]byte, piece)
		var firstErr error
		for _, i := range order {
			off := int64(i) * piece
			n, err := rd.ReadAt(buf, off)
			if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == file.Size()) && firstErr == nil {
				firstErr = err
			}
			if !bytes.Equal(buf[:n], content[off:off+int64(n)]) {
				t.Fatalf("%s: piece %d differs", name, i)
			}
		}
		return firstErr
	}
	if err := read("good"); err != nil {
		t.Fatalf("good: %v", err)
	}
	if err := read("lies"); !errors.Is(err, bupstash.ErrCorrupt) || !strings.Contains(err.Error(), "hash") {
		t.Fatalf("a file whose content does not match its hash, read out of order: %v", err)
	}
}
