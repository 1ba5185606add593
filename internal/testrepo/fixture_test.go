package testrepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashkey"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// The strongest check that the generator writes what Bupstash writes:
// regenerate the items of the genuine Bupstash 0.12.1 fixture from their
// own entries and contents, with the same key, and compare. Leaf
// plaintexts, leaf boundaries, index bytes and interior nodes must then be
// identical, so the trees' root addresses must be too. Content-defined
// cuts are disabled (SplitBits 31): Bupstash found none in these small
// streams, and our rolling hash, unlike Bupstash's, would place its own.

const fixtureDir = "../../testdata/bupstash-0.12.1"

// fixtureTars are the sha256 of `bupstash get` for the fixture snapshots
// (from the fixture's README).
var fixtureTars = map[string]string{
	"fdd75e29487490b4ef3eb1792242fc00": "f5117d50b16a1e3163a1c0613b4eb2e08574c4153055c6187c293d6c412b191c",
	"4d0adcd0cbd80b68cb20bcfa49edc161": "3a8234b5aa160a19ad46e1a4f73690025bc5723f8aab66989d307de9ae4387fd",
	"7f3491e57862cd4bef370cafbb47b1c4": "af932d7d459eeaf8a6c925b5d687107f2047f9ec0940fbf78245e94a59586661",
	"48a22dd86a5d60520ab4a0f6f1c07bef": "0d28a56f4ad2e44bfdcffd0854e8876d584a1d30e7d9f212fe0b538048158bc1",
}

// loadFixtureKey reads a fixture key with its secrets, as a writer needs
// it.
func loadFixtureKey(t *testing.T, name string) *bupstashkey.Key {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, "keys", name))
	if err != nil {
		t.Fatal(err)
	}
	k, err := bupstashkey.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// readerKey is k as a reader takes it.
func readerKey(t testing.TB, k *bupstashkey.Key) *bupstash.Key {
	t.Helper()
	rk, err := bupstash.ParseKey(k.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return rk
}

// fixtureEntries reads a snapshot's entries and contents with the reader.
func fixtureEntries(t *testing.T, o *bupstash.OpenItem) []Entry {
	t.Helper()
	ctx := context.Background()
	idx, err := o.Index()
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for {
		g, err := idx.Next(ctx)
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		e := Entry{
			Path: string(g.Path), Mode: g.Mode, UID: g.UID, GID: g.GID,
			Mtime: time.Unix(g.Mtime, int64(g.MtimeNsec)), Ctime: time.Unix(g.Ctime, int64(g.CtimeNsec)),
			Ino: g.Ino, Nlink: g.Nlink, Dev: g.NormDev, Link: string(g.Link),
			DevMajor: g.DevMajor, DevMinor: g.DevMinor, Sparse: g.Sparse,
		}
		for _, x := range g.Xattrs {
			if e.Xattrs == nil {
				e.Xattrs = map[string][]byte{}
			}
			e.Xattrs[x.Name] = x.Value
		}
		if g.IsRegular() {
			f, err := o.File(g)
			if err != nil {
				t.Fatal(err)
			}
			e.Content = Bytes(readAll(t, f.NewReader()))
		}
		es = append(es, e)
	}
}

func TestRegenerateBupstashFixture(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := loadFixtureKey(t, "primary.key")
	putKey := loadFixtureKey(t, "put.key")
	fx, err := bupstash.Open(ctx, filepath.Join(fixtureDir, "repo"), readerKey(t, primary), bupstash.Options{Cache: cache.New(64 << 20), Logger: quiet, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	items, err := fx.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	repos := map[bupstash.Xid]*Repo{}
	for _, k := range []*bupstashkey.Key{primary, putKey} {
		for _, comp := range []Compression{Zstd, None, LZ4} {
			r, err := CreateWithKey(filepath.Join(dir, bupstash.Xid(k.ID).String()+comp.String()), k, &Options{
				Compression: comp, MaxChunkSize: MaxChunkSizeLimit, SplitBits: 31,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			repos[bupstash.Xid(k.ID)] = r // the last one, for raw items
		}
	}
	seen := 0
	for _, it := range items {
		want := it.Tags["fixture"]
		t.Run(want, func(t *testing.T) {
			o := fx.OpenItem(it)
			key := primary
			if it.SendKeyID == bupstash.Xid(putKey.ID) {
				key = putKey
			}
			comp := Zstd
			switch want {
			case "snapshot-none":
				comp = None
			case "file-lz4":
				comp = LZ4
			}
			r, err := Open(filepath.Join(dir, bupstash.Xid(key.ID).String()+comp.String()), key, &Options{
				Compression: comp, MaxChunkSize: MaxChunkSizeLimit, SplitBits: 31,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			meta := ItemMeta{Timestamp: it.Timestamp, Tags: it.Tags, NoDefaultTags: true}
			var info *ItemInfo
			var es []Entry
			if it.HasIndex() {
				es = fixtureEntries(t, o)
				info, err = r.AddSnapshot(ctx, Entries(es), meta)
			} else {
				f, err := o.Data()
				if err != nil {
					t.Fatal(err)
				}
				info, err = r.AddRaw(ctx, bytes.NewReader(readAll(t, f.NewReader())), meta)
				if err != nil {
					t.Fatal(err)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.DataHTree != it.DataHTree || info.DataSize != it.DataSize || info.IndexSize != it.IndexSize {
				t.Errorf("data tree %+v (%d/%d bytes), Bupstash wrote %+v (%d/%d)",
					info.DataHTree, info.DataSize, info.IndexSize, it.DataHTree, it.DataSize, it.IndexSize)
			}
			if it.HasIndex() && info.IndexHTree != *it.IndexHTree {
				t.Errorf("index tree %+v, Bupstash wrote %+v", info.IndexHTree, *it.IndexHTree)
			}
			if !info.Timestamp.Equal(it.Timestamp) || info.Tags["fixture"] != want {
				t.Errorf("metadata %v %v", info.Timestamp, info.Tags)
			}
			if !it.HasIndex() {
				return
			}
			// The regenerated snapshot renders as the same tar as `bupstash get`.
			rd, err := bupstash.Open(ctx, r.Dir(), readerKey(t, primary), bupstash.Options{Cache: cache.New(64 << 20), Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			gen := findItem(t, rd, info.ID)
			h := sha256.New()
			if err := dump.Tar(ctx, rd.OpenItem(gen), h); err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != fixtureTars[it.ID.String()] {
				t.Errorf("tar sha256 %s, bupstash get gave %s", got, fixtureTars[it.ID.String()])
			}
			if key == primary && info.DataSize < 1<<20 {
				verifySnapshot(t, r, info, es)
			}
		})
		seen++
	}
	if seen != 7 || !strings.Contains(fmtTags(items), "multi-path") {
		t.Fatalf("fixture has %d items: %s", seen, fmtTags(items))
	}
}

func fmtTags(items []*bupstash.Item) string {
	var b strings.Builder
	for _, it := range items {
		b.WriteString(it.Tags["fixture"] + " ")
	}
	return b.String()
}

// TestAddToBupstashRepository adds items to a copy of the genuine
// repository: they join its oplog after Bupstash's own operations, and
// the reader lists old and new items together.
func TestAddToBupstashRepository(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtureDir, "repo"))); err != nil {
		t.Fatal(err)
	}
	oplog, err := os.ReadFile(filepath.Join(dir, "repo.oplog"))
	if err != nil {
		t.Fatal(err)
	}
	primary := loadFixtureKey(t, "primary.key")
	r, err := Open(dir, primary, smallOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	old, err := openReader(t, r, nil).Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tr := kitchenSink(t)
	// Dated after the fixture's items whatever the clock says.
	ts := old[len(old)-1].Timestamp.Add(time.Second)
	info, err := r.AddSnapshot(context.Background(), tr.Source(), ItemMeta{Source: "tree", Timestamp: ts})
	if err != nil {
		t.Fatal(err)
	}
	items, err := openReader(t, r, nil).Items(context.Background())
	if err != nil || len(items) != 8 || items[7].ID != info.ID {
		t.Fatalf("%d items (%v), last %s", len(items), err, items[len(items)-1].ID)
	}
	after, err := os.ReadFile(filepath.Join(dir, "repo.oplog"))
	if err != nil || !bytes.HasPrefix(after, oplog) || after[len(oplog)] != 0 {
		t.Fatalf("oplog not appended to: %v", err)
	}
	verifySnapshot(t, r, info, tr.Entries())
}
