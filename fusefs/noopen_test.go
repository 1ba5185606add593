package fusefs_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/backupy"
)

// The kernel opens files without asking the filesystem and keeps their
// pages across opens (no-open mode): a Backupy object's meta.json, which
// changes as passes learn more, must still read as it is now, not as it
// was when first read.
func TestNoOpenMetaJSONFollowsItsObject(t *testing.T) {
	s, keys := newBackupyStore(t)
	m, _ := mountBackupy(t, s.dir, keys, backupy.ViewMeta)
	meta := m.path("db/co_1/agt_1/job_pg/run_pg1.meta.json")
	before, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	// A full pass learns the dump's size and checks its hash.
	if _, err := os.ReadFile(m.path("db/co_1/agt_1/job_pg/run_pg1.pgdump")); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Fatalf("meta.json did not change after a full pass:\n%s", after)
	}
	if !bytes.Contains(after, []byte("verified")) {
		t.Fatalf("meta.json after a full pass does not say verified:\n%s\nbefore:\n%s", after, before)
	}
}

// smallFilesTree is a directory of small files, all in one leaf.
func smallFilesTree(files int) (*testrepo.Tree, map[string][]byte) {
	tree := testrepo.NewTree()
	want := map[string][]byte{}
	for i := range files {
		name := fmt.Sprintf("d/f%04d.txt", i)
		b := []byte(strings.Repeat(fmt.Sprintf("file %d\n", i), 1+i%7))
		want[name] = b
		e := testrepo.File(name, testrepo.Bytes(b))
		e.UID, e.GID = 1000, 1000 // not the test's user
		tree.MustAdd(e)
	}
	return tree, want
}

// Reading a tree of small files costs no OPEN beyond the first (answered
// ENOSYS, after which the kernel opens files itself), and every file still
// reads right.
func TestNoOpenReadsWithoutOpen(t *testing.T) {
	tree, want := smallFilesTree(100)
	m, root := mountGenerated(t, nil, tree)
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	if opens, _ := m.fs.Requests(); opens > 1 {
		t.Errorf("%d OPEN requests for 100 files, want at most the first", opens)
	}
}

// Once a file of a directory has been read, the kernel is given the next
// small files whose leaves are decoded: reading them costs no READ, and
// they read right.
func TestSmallFilesReadFromPagesFilledAhead(t *testing.T) {
	tree, want := smallFilesTree(200)
	m, root := mountGenerated(t, nil, tree)
	dir := filepath.Join(root, "d")
	// A stat by name makes listings give files' attributes, so that the
	// kernel holds the inodes the pages go to.
	if _, err := os.Stat(filepath.Join(dir, "f0000.txt")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 200 {
		t.Fatalf("%d entries, %v", len(ents), err)
	}
	read := func(name string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want["d/"+name]) {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	read(ents[0].Name())
	waitFor(t, "the pushes to finish", m.fs.PushesDone)
	_, before := m.fs.Requests()
	for _, e := range ents[1:] {
		read(e.Name())
	}
	if _, after := m.fs.Requests(); after != before {
		t.Errorf("%d READs for 199 files whose pages were filled ahead, want none", after-before)
	}
}

// Saved POSIX ACLs are enforced where other users may enter, which costs
// a GETXATTR for each file a non-owner opens; on a mount only its user
// may enter, reading files of other owners costs none.
func TestACLsEnforcedOnlyForOtherUsers(t *testing.T) {
	for _, allowOther := range []bool{false, true} {
		tree, want := smallFilesTree(20)
		src, id := writeGenerated(t, nil, tree)
		m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{AllowOther: allowOther}, nil, src)
		for name, b := range want {
			got, err := os.ReadFile(m.path("gen", "ids", id, name))
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("%s: %q, %v", name, got, err)
			}
		}
		n := m.fs.GetXattrRequests()
		if allowOther && n == 0 {
			t.Errorf("--allow-other: no ACL was asked for: saved ACLs are not enforced")
		}
		if !allowOther && n != 0 {
			t.Errorf("without --allow-other: %d GETXATTRs reading 20 files", n)
		}
	}
}
