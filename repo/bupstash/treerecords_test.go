package bupstash_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// TestTreeRecordSpills checks the entries whose attributes do not fit a
// tree's compact record: more distinct owners than the owner table holds,
// change times far from modification times, names of 255 bytes and more
// (also on directories and hard links). Each must come back as saved.
func TestTreeRecordSpills(t *testing.T) {
	const owners = 70_000 // the table holds 65,535
	long := strings.Repeat("n", 300)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	tree := testrepo.NewTree()
	want := map[string]testrepo.Entry{}
	add := func(e testrepo.Entry) {
		tree.MustAdd(e)
		want[e.Path] = e
	}
	for i := range owners {
		e := testrepo.File(fmt.Sprintf("owners/f%05d", i), nil)
		e.UID, e.GID, e.Mtime = uint64(i), uint64(i+1), mtime
		e.Ctime = mtime.Add(time.Duration(i) * time.Second)
		add(e)
	}
	far := testrepo.File("times/far-future-ctime", testrepo.String("x"))
	far.Mtime, far.Ctime = mtime, mtime.Add(200*365*24*time.Hour) // beyond an int32 of seconds
	add(far)
	past := testrepo.File("times/ctime-before-1970", testrepo.String("y"))
	past.Mtime, past.Ctime = mtime, time.Date(1901, 1, 1, 0, 0, 0, 0, time.UTC)
	add(past)
	add(testrepo.File(long[:254], testrepo.String("254")))
	add(testrepo.File(long[:255], testrepo.String("255")))
	add(testrepo.Dir(long))
	add(testrepo.File(long+"/"+long, testrepo.String("inside")))
	if err := tree.Hardlink(long+"/"+long[:256], long+"/"+long); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	r, err := testrepo.Create(filepath.Join(dir, "repo"), &testrepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.AddSnapshot(context.Background(), tree.Source(), testrepo.ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	repo, err := bupstash.Open(context.Background(), filepath.Join(dir, "repo"), r.ReaderKey(), bupstash.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	items, err := repo.Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	it, err := bupstash.FindItem(items, info.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := repo.OpenItem(it).LoadTree(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	find := func(p string) uint32 {
		t.Helper()
		rec := uint32(0)
		for _, name := range strings.Split(p, "/") {
			k, ok := tr.Lookup(rec, []byte(name))
			if !ok {
				t.Fatalf("%s: not found", p)
			}
			rec = k
		}
		return rec
	}
	for p, e := range want {
		rec := find(p)
		a := tr.Attr(rec)
		if a.UID != uint32(e.UID) || a.GID != uint32(e.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, a.UID, a.GID, e.UID, e.GID)
		}
		ct := e.CtimeOrDefault()
		if a.Ctime != ct.Unix() || a.CtimeNsec != uint32(ct.Nanosecond()) {
			t.Errorf("%s: ctime %d.%09d, want %v", p, a.Ctime, a.CtimeNsec, ct)
		}
		if string(tr.Name(rec)) != filepath.Base(p) {
			t.Errorf("%s: name %q", p, tr.Name(rec))
		}
	}
	// The hard link shares its target's inode; both count two links.
	a, b := tr.Attr(find(long+"/"+long)), tr.Attr(find(long+"/"+long[:256]))
	if a.InodeRecord != b.InodeRecord || a.Nlink != 2 || b.Nlink != 2 {
		t.Errorf("hard link: %+v and %+v", a, b)
	}
	if kids := tr.Children(find(long)); len(kids) != 2 {
		t.Errorf("the long-named directory holds %d entries", len(kids))
	}
}
