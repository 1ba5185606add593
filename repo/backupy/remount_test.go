package backupy

import (
	"context"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"testing"
)

// countingStore counts the object reads of an ObjectStore.
type countingStore struct {
	ObjectStore
	reads atomic.Int64
}

func (c *countingStore) Open(ctx context.Context, obj ObjectInfo) (Object, error) {
	o, err := c.ObjectStore.Open(ctx, obj)
	if err != nil {
		return nil, err
	}
	return countingObject{o, c}, nil
}

type countingObject struct {
	Object
	c *countingStore
}

func (o countingObject) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	o.c.reads.Add(1)
	return o.Object.ReadAt(ctx, p, off)
}

// A remount lists, names and sizes every object it has seen before from
// the cache's index, without one read of the objects (on S3, without a
// GET): encrypted, unencrypted, empty, locked and foreign ones alike. A
// different key set is not taken on trust: the locked object is tried
// with a key not tried before.
func TestRemountReadsNothing(t *testing.T) {
	ctx := context.Background()
	key, other := newKey(t), newKey(t)
	objects := map[string][]byte{
		"a/run_pg.enc":     agentEncrypt(t, agentZstd(t, pgDump(3<<20), true), key),
		"a/run_small.enc":  agentEncrypt(t, agentZstd(t, textish(3, 5000), false), key),
		"a/run_plain.enc":  agentZstd(t, textish(4, 300000), false),
		"a/run_empty.enc":  agentEncrypt(t, nil, key),
		"b/run_locked.enc": agentEncrypt(t, agentZstd(t, pgDump(4000), true), other),
		"b/notes.txt":      []byte("not a backup\n"),
	}
	ring := "* hex:" + hex.EncodeToString(key) + "\n"
	keys, err := ParseKeyring(strings.NewReader(ring), "ring")
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestStore(t, keys, objects)
	want := map[string]string{}
	for _, b := range ts.Blobs() {
		files, err := ts.Files(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		main := files[0]
		if _, err := main.Size(ctx); err != nil { // a pass where no header says
			t.Fatal(err)
		}
		want[b.Path] = main.Name()
	}
	ts.Store.Close()

	local, err := NewLocalDir(ts.dir)
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingStore{ObjectStore: local}
	s, err := Open(ctx, counted, ts.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, b := range s.Blobs() {
		files, err := s.Files(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if files[0].Name() != want[b.Path] {
			t.Fatalf("%s: %s after the remount, %s before", b.Path, files[0].Name(), want[b.Path])
		}
		if _, ok := files[0].SizeKnown(); !ok {
			t.Fatalf("%s: size unknown after the remount", b.Path)
		}
	}
	if n := counted.reads.Load(); n != 0 || len(s.Blobs()) != len(objects) {
		t.Fatalf("%d reads for %d objects", n, len(s.Blobs()))
	}
	s.Close()

	// Another key: the locked object is tried with it (one read of its
	// first frame), nothing else is read.
	keys2, _ := ParseKeyring(strings.NewReader(ring+"* hex:"+hex.EncodeToString(other)+"\n"), "ring2")
	opts := ts.opts
	opts.Keys = keys2
	counted = &countingStore{ObjectStore: local}
	s, err = Open(ctx, counted, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	locked := s.Blob("b/run_locked.enc")
	files, err := s.Files(ctx, locked)
	if err != nil || locked.Locked() || files[0].Name() != "run_locked.pgdump" {
		t.Fatalf("the locked object with its key: %v %v", files[0].Name(), err)
	}
	for _, b := range s.Blobs() {
		if _, err := s.Files(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := counted.reads.Load(); n != 1 {
		t.Fatalf("%d reads with one new key, want 1", n)
	}
}
