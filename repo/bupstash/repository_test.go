package bupstash

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

func TestOpenRefusesWhatItCannotRead(t *testing.T) {
	k := mustLoadKey(t, "bupstash-0.12.1/keys/primary.key")
	for _, tt := range []struct {
		name   string
		damage func(dir string)
		want   error
		hint   string
	}{
		{"schema 4", func(dir string) { write(dir, "meta/schema_version", "4") }, ErrUnsupportedSchema, "bupstash 0.10.x"},
		{"schema 9", func(dir string) { write(dir, "meta/schema_version", "9") }, ErrUnsupportedSchema, "newer"},
		{"sqlite era", func(dir string) {
			os.Remove(filepath.Join(dir, "tx.lock"))
			write(dir, "bupstash.sqlite3", "")
		}, ErrUnsupportedSchema, "migrate"},
		{"not a repository", func(dir string) { os.Remove(filepath.Join(dir, "tx.lock")) }, ErrNotRepository, "no tx.lock"},
		{"no schema version", func(dir string) { os.Remove(filepath.Join(dir, "meta", "schema_version")) }, ErrNotRepository, "`bupstash init`"},
		{"external store", func(dir string) {
			write(dir, "meta/storage_engine", `{"ExternalStore": {"socket_path": "/run/s.sock", "path": "x"}}`)
		}, ErrUnsupportedStore, "external storage plugin"},
		{"unknown store", func(dir string) { write(dir, "meta/storage_engine", `"Nope"`) }, ErrUnsupportedStore, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyFixture(t, "bupstash-0.12.1/repo")
			tt.damage(dir)
			_, err := Open(context.Background(), dir, k, Options{Logger: quietLog})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.hint) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.hint)
			}
		})
	}
	if _, err := Open(context.Background(), "ssh://host/srv/repo", k, Options{}); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "through its server") {
		t.Fatalf("ssh: %v", err)
	}
	put := mustLoadKey(t, "bupstash-0.12.1/keys/put.key")
	if _, err := Open(context.Background(), filepath.Join(testdata, "bupstash-0.12.1/repo"), put, Options{}); !errors.Is(err, ErrPutOnlyKey) {
		t.Fatalf("put key: %v", err)
	}
}

// Reading never writes to the repository: nothing it holds changes, not
// even a modification time.
func TestReadingNeverWrites(t *testing.T) {
	dir := copyFixture(t, "bupstash-0.12.1/repo")
	before := snapshotTimes(t, dir)
	r := openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")
	if _, err := readEverything(dir, damageKey); err != nil {
		t.Fatal(err)
	}
	listItems(t, r)
	if after := snapshotTimes(t, dir); after != before {
		t.Fatalf("repository changed:\n%s\nvs\n%s", before, after)
	}
}

func snapshotTimes(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + fi.ModTime().String() + " " + fi.Mode().String() + "\n")
		}
		return nil
	})
	return b.String()
}

// journal appends the trailing BLAKE3 hash that makes a log "hot".
func journal(ops []byte) []byte {
	sum := blake3.Sum256(ops)
	return append(ops, sum[:]...)
}

func itemIDs(t *testing.T, r *Repository) map[string]bool {
	ids := map[string]bool{}
	for _, it := range listItems(t, r) {
		ids[it.ID.String()] = true
	}
	return ids
}

// A committed but unapplied schema-8 transaction (hot tx.wal) is applied in
// memory: here it removes one item and renames another away.
func TestHotWALIsOverlaid(t *testing.T) {
	const gone, renamed = "d5dbf2447bdcf7807b25732d40a02b35", "a9efc039bcd20bcdb8d0a8b5f047f7a3"
	var e bare.Encoder
	e.Uint(0) // Begin
	e.U64(2)
	e.Uint(4) // Remove
	e.String("items/" + gone)
	e.Uint(5) // Rename
	e.String("items/" + renamed)
	e.String("items/" + renamed + ".removed")
	e.Uint(3) // WriteFileAt: append RemoveItems to the oplog
	e.String("repo.oplog")
	e.Uint(2546)
	e.Data([]byte{1, 0})
	e.Uint(6) // Mkdir
	e.String("wal")
	e.Uint(1) // End

	dir := copyFixture(t, "bupstash-0.12.1/repo")
	os.WriteFile(filepath.Join(dir, "tx.wal"), journal(e.Buf), 0o644)
	ids := itemIDs(t, openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key"))
	if ids[gone] || ids[renamed] || len(ids) != 5 {
		t.Fatalf("items with the WAL applied: %v", ids)
	}
	v := metaView{dir: dir}
	ov, err := loadOverlay(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	v.overlay = ov
	oplog, _ := v.readFile("repo.oplog", 1<<20)
	if len(oplog) != 2548 || oplog[2546] != 1 {
		t.Fatalf("oplog overlay: %d bytes", len(oplog))
	}

	// A torn WAL (hash mismatch) was never committed: ignore it.
	torn := journal(e.Buf)
	torn[len(torn)-1] ^= 1
	os.WriteFile(filepath.Join(dir, "tx.wal"), torn, 0o644)
	if ids := itemIDs(t, openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")); len(ids) != 7 {
		t.Fatalf("torn WAL changed the listing: %v", ids)
	}

	// A hot WAL that cannot be parsed is refused with a way out.
	os.WriteFile(filepath.Join(dir, "tx.wal"), journal([]byte{9, 9, 9}), 0o644)
	r := openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")
	if _, err := r.Items(context.Background()); !errors.Is(err, ErrBadJournal) || !strings.Contains(err.Error(), "bupstash list") {
		t.Fatalf("bad WAL: %v", err)
	}
}

// A half-applied schema 5–7 transaction (hot rollback.journal) is undone in
// memory.
func TestHotRollbackJournalIsUndone(t *testing.T) {
	// 0.11.0 (schema 7): undo a removal (rename back) and an addition.
	const removed, added = "bba133c4a3ed9fe189a107804b41a6d9", "8352379292d190352020aa38331d3228"
	var e bare.Encoder
	e.Uint(4) // RenameFile: the interrupted rm renamed it to .removed
	e.String("items/" + removed + ".removed")
	e.String("items/" + removed)
	e.Uint(1) // RemoveFile: the interrupted put created it
	e.String("items/" + added)
	e.Uint(3) // TruncateFile: undo an oplog append
	e.String("repo.oplog")
	e.Uint(1000)
	e.Uint(0) // RollbackComplete

	dir := copyFixture(t, "bupstash-versions/v0.11.0/repo")
	os.WriteFile(filepath.Join(dir, "rollback.journal"), journal(e.Buf), 0o644)
	ids := itemIDs(t, openFixtureKey(t, dir, "bupstash-versions/v0.11.0/primary.key"))
	if !ids[removed] || ids[added] || len(ids) != 3 {
		t.Fatalf("items with the journal undone: %v", ids)
	}
	// A journal that is not hot means nothing was changed yet.
	os.WriteFile(filepath.Join(dir, "rollback.journal"), e.Buf, 0o644)
	if ids := itemIDs(t, openFixtureKey(t, dir, "bupstash-versions/v0.11.0/primary.key")); ids[removed] || !ids[added] {
		t.Fatalf("cold journal changed the listing: %v", ids)
	}
}

func TestJournalPathsStayInside(t *testing.T) {
	for _, p := range []string{"", "/etc/passwd", "../x", "a/../../x", "..", "./a"} {
		var e bare.Encoder
		e.Uint(1)
		e.String(p)
		e.Uint(0)
		o := &overlay{files: map[string][]byte{}, base: t.TempDir()}
		if err := o.applyRollback(e.Buf); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

// The metadata lock is shared: listing waits while a writer (another
// process) holds tx.lock exclusively, and gives up when its context ends.
func TestListingWaitsForWriters(t *testing.T) {
	dir := copyFixture(t, "bupstash-0.12.1/repo")
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldWriteLock$")
	holder.Env = append(os.Environ(), "BACKUPFS_TEST_LOCK="+filepath.Join(dir, "tx.lock"))
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "locked" {
		t.Fatalf("helper: %q %v", buf, err)
	}

	r := openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := r.Items(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("listing under a writer's lock: %v", err)
	}
	stdin.Close() // the helper unlocks and exits
	if err := holder.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(listItems(t, r)) != 7 {
		t.Fatal("listing after the writer finished")
	}
}

func TestHelperHoldWriteLock(t *testing.T) {
	p := os.Getenv("BACKUPFS_TEST_LOCK")
	if p == "" {
		return // only runs as TestListingWaitsForWriters' helper process
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked")
	buf := make([]byte, 1)
	os.Stdin.Read(buf) // until the parent closes our stdin
}

func mustLoadKey(t *testing.T, rel string) *Key {
	t.Helper()
	k, err := loadKey(filepath.Join(testdata, rel))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func write(dir, rel, content string) {
	os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644)
}
