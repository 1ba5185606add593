package bupstash_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
)

// TestReadCached reads small files only from leaves decoded already: a
// file whose leaf is not in the cache is not read (and its leaf is not
// decoded for it), one whose leaf is reads whole, and one whose bytes do
// not match the index's hash is refused with ErrCorrupt.
func TestReadCached(t *testing.T) {
	a, b := []byte("first small file\n"), []byte("second small file\n")
	var wrong [32]byte
	o, tr := loadForgedSnapshot(t, bupstashtest.Snapshot{
		Item:        bupstashtest.Item{Format: 3, Timestamp: time.Unix(1700000000, 0)},
		EntryFormat: 5,
		Entries: []bupstashtest.Entry{
			{Path: ".", Mode: bupstash.ModeDir | 0o755},
			{Path: "a", Mode: bupstash.ModeRegular | 0o644, Content: a},
			{Path: "b", Mode: bupstash.ModeRegular | 0o644, Content: b},
			{Path: "lies", Mode: bupstash.ModeRegular | 0o644, Content: b, Hash: &wrong},
		},
		LeafSize:    1 << 20,
		Compression: bupstash.CompressionZstd,
	})
	ctx := context.Background()
	file := func(name string) *bupstash.File {
		k, ok := tr.Lookup(0, []byte(name))
		if !ok {
			t.Fatalf("%s not found", name)
		}
		fl, err := tr.File(o, k)
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	buf := make([]byte, 64)
	if ok, err := file("b").ReadCached(ctx, buf); ok || err != nil {
		t.Fatalf("before any read: %v, %v; want nothing read", ok, err)
	}
	if ok, err := file("b").ReadCached(ctx, buf); ok || err != nil {
		t.Fatalf("ReadCached decoded the leaf itself: %v, %v", ok, err)
	}
	// Reading a decodes the leaf the three files share.
	if _, err := file("a").NewReader().ReadAt(buf[:len(a)], 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := file("b").ReadCached(ctx, buf); !ok || err != nil || !bytes.Equal(buf[:len(b)], b) {
		t.Fatalf("after the leaf was decoded: %v, %v, %q", ok, err, buf[:len(b)])
	}
	if ok, err := file("lies").ReadCached(ctx, buf); ok || !errors.Is(err, bupstash.ErrCorrupt) {
		t.Fatalf("a file whose bytes do not match its hash: %v, %v", ok, err)
	}
	if ok, err := file("b").ReadCached(ctx, buf[:len(b)-1]); ok || err != nil {
		t.Fatalf("into a buffer too small: %v, %v", ok, err)
	}
}
