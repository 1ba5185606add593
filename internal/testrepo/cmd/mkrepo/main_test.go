package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
)

func TestMkrepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	var out bytes.Buffer
	args := []string{"-dir", dir, "-files", "50", "-depth", "3", "-size-dist", "uniform:0-2K", "-sparse", "-sparse-size", "64K",
		"-hardlinks", "-xattrs", "-special", "-items", "3", "-compression", "lz4", "-seed", "7"}
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "(created)") || strings.Count(s, " snapshot name=tree.tar") != 3 || !strings.Contains(s, "total: 3 items") {
		t.Errorf("output:\n%s", s)
	}
	// A second run adds raw items with the key written by the first.
	out.Reset()
	if err := run([]string{"-dir", dir, "-raw", "100K", "-items", "2", "-content", "random"}, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "(opened)") || strings.Count(s, " raw name=raw.bin") != 2 {
		t.Errorf("output:\n%s", s)
	}

	key, err := bupstashtest.LoadKey(dir + ".key")
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(context.Background(), dir, key, bupstash.Options{Cache: cache.New(16 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	items, err := r.Items(context.Background())
	if err != nil || len(items) != 5 {
		t.Fatalf("%d items: %v", len(items), err)
	}
	for _, it := range items {
		o := r.OpenItem(it)
		if it.HasIndex() {
			if err := dump.Tar(context.Background(), o, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		f, err := o.Data()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := f.NewReader().WriteTo(&b); err != nil || b.Len() != 100<<10 {
			t.Fatalf("raw item: %d bytes, %v", b.Len(), err)
		}
	}

	for _, bad := range [][]string{
		{},
		{"-dir", dir, "-compression", "brotli"},
		{"-dir", dir, "-size-dist", "nope"},
		{"-dir", filepath.Join(t.TempDir(), "other"), "-key", dir + ".key"},
		{"-dir", dir, "-key", filepath.Join(t.TempDir(), "missing.key")},
		{"-dir", dir, "-items", "0"},
		{"-dir", dir, "extra"},
	} {
		if err := run(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
