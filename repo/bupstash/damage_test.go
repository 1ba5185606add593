package bupstash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
)

// readEverything lists a repository and reads every index and every byte of
// every file and raw item, returning a digest of what it read per item. A
// damaged repository must make it fail; it must never return different
// bytes for an item.
func readEverything(dir, keyPath string) (digests map[Xid][32]byte, err error) {
	digests = map[Xid][32]byte{}
	k, err := loadKey(keyPath)
	if err != nil {
		return nil, err
	}
	r, err := Open(context.Background(), dir, k, Options{Cache: cache.New(64 << 20), Logger: quietLog})
	if err != nil {
		return nil, err
	}
	items, err := r.Items(context.Background())
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		h := sha256.New()
		o := r.OpenItem(it)
		if !it.HasIndex() {
			d, err := o.Data()
			if err != nil {
				return nil, err
			}
			if _, err := io.Copy(h, d.NewReader()); err != nil {
				return nil, err
			}
			digests[it.ID] = [32]byte(h.Sum(nil))
			continue
		}
		idx, err := o.Index()
		if err != nil {
			return nil, err
		}
		for {
			e, err := idx.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			h.Write(e.Path)
			if !e.IsRegular() {
				continue
			}
			f, err := o.File(e)
			if err != nil {
				return nil, err
			}
			if _, err := io.Copy(h, f.NewReader()); err != nil {
				return nil, err
			}
		}
		digests[it.ID] = [32]byte(h.Sum(nil))
	}
	return digests, nil
}

// sameContent reports whether every item read in got was read with the
// content it has in clean. Items missing from got (skipped as another
// key's) read nothing, which is not a lie.
func sameContent(got, clean map[Xid][32]byte) bool {
	for id, d := range got {
		if clean[id] != d {
			return false
		}
	}
	return true
}

const damageRepo = "bupstash-0.12.1/repo"

var damageKey = filepath.Join(testdata, "bupstash-0.12.1/keys/primary.key")

// Flipping any byte of any stored object — item file, interior node, index
// leaf, data leaf — gives an error, never different content.
func TestFlippedBytesAreDetected(t *testing.T) {
	clean, err := readEverything(filepath.Join(testdata, damageRepo), damageKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := copyFixture(t, damageRepo)
	var files []string
	for _, sub := range []string{"items", "data"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if filepath.Ext(e.Name()) != ".removed" {
				files = append(files, filepath.Join(dir, sub, e.Name()))
			}
		}
	}
	kinds := map[string]int{}
	for _, p := range files {
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		kind := objectKind(t, dir, p)
		if kind != "item" {
			// Chunks of removed items are never read; damage there is harmless.
			os.Remove(p)
			_, err = readEverything(dir, damageKey)
			os.WriteFile(p, orig, 0o644)
			if err == nil {
				kinds["unreferenced"]++
				continue
			}
		}
		for _, pos := range []int{0, 24, len(orig) / 2, len(orig) - 33, len(orig) - 2, len(orig) - 1} {
			if pos < 0 || pos >= len(orig) {
				continue
			}
			bad := bytes.Clone(orig)
			bad[pos] ^= 0x10
			if err := os.WriteFile(p, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readEverything(dir, damageKey)
			switch {
			case err == nil && !sameContent(got, clean):
				t.Fatalf("%s (%s) byte %d flipped: different content read without an error", filepath.Base(p), kind, pos)
			case err == nil:
				t.Fatalf("%s (%s) byte %d flipped: not detected", filepath.Base(p), kind, pos)
			}
			kinds[kind]++
		}
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"item", "interior node", "index leaf", "data leaf"} {
		if kinds[k] == 0 {
			t.Errorf("no %s was damaged", k)
		}
	}
}

// objectKind tells what a stored object is, for the test's own coverage check.
func objectKind(t *testing.T, dir, p string) string {
	if filepath.Base(filepath.Dir(p)) == "items" {
		return "item"
	}
	b, _ := os.ReadFile(p)
	var a Address
	copy(a[:], mustDecodeHex(t, filepath.Base(p)))
	if _, err := parseNode(b, a); err == nil {
		return "interior node"
	}
	k, _ := loadKey(damageKey)
	if _, err := k.indexOpener().Open(nil, b); err == nil {
		return "index leaf"
	}
	return "data leaf"
}

func mustDecodeHex(t *testing.T, s string) []byte {
	b, err := ParseXid(s[:32])
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseXid(s[32:])
	return append(b[:], c[:]...)
}

func TestDamagedRepositories(t *testing.T) {
	const big = "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb"  // data leaf 0 of fdd75e29
	const node = "72234dc7ffbbdbc1cfbb1041d5c96b355c09f3e7f9565fbc82f316b66e4695dd" // its root node
	const index = "43d3dff1d9270edbae99c9cefb8bb948a53ae5b22f2995dfb3a9359d61f8cc77"
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
	}{
		{"missing data leaf", func(t *testing.T, dir string) { rm(t, dir, "data", big) }, ErrChunkMissing},
		{"missing interior node", func(t *testing.T, dir string) { rm(t, dir, "data", node) }, ErrChunkMissing},
		{"missing index leaf", func(t *testing.T, dir string) { rm(t, dir, "data", index) }, ErrChunkMissing},
		{"truncated data leaf", func(t *testing.T, dir string) { truncate(t, dir, "data", big, 1000) }, box.ErrAuth},
		{"data leaf cut below the envelope size", func(t *testing.T, dir string) { truncate(t, dir, "data", big, 40) }, box.ErrShortEnvelope},
		{"empty data leaf", func(t *testing.T, dir string) { truncate(t, dir, "data", big, 0) }, box.ErrShortEnvelope},
		{"truncated interior node", func(t *testing.T, dir string) { truncate(t, dir, "data", node, 100) }, ErrCorrupt},
		{"truncated item file", func(t *testing.T, dir string) { truncate(t, dir, "items", "fdd75e29487490b4ef3eb1792242fc00", 200) }, ErrCorrupt},
		{"data leaf swapped for another", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "data", "e423fac6ddf1861de95af3bdd385b45d498b8f483ee2deb6e8dbc346c5f27f92"))
			os.WriteFile(filepath.Join(dir, "data", big), b, 0o644)
		}, ErrCorrupt},
		{"item file swapped for another", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "items", "d5dbf2447bdcf7807b25732d40a02b35"))
			os.WriteFile(filepath.Join(dir, "items", "fdd75e29487490b4ef3eb1792242fc00"), b, 0o644)
		}, ErrCorrupt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyFixture(t, damageRepo)
			tt.damage(t, dir)
			_, err := readEverything(dir, damageKey)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ce *ChunkError
			var ie *ItemError
			if !errors.As(err, &ce) && !errors.As(err, &ie) {
				t.Fatalf("error %q names neither the chunk nor the item", err)
			}
		})
	}
}

// A damaged leaf makes only the files in that leaf fail.
func TestDamageIsContained(t *testing.T) {
	dir := copyFixture(t, damageRepo)
	rm(t, dir, "data", "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb") // leaf 0 of fdd75e29
	r := openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")
	it, _ := FindItem(listItems(t, r), "fdd75e29")
	o := r.OpenItem(it)
	ok, failed := 0, 0
	for _, e := range readIndex(t, o) {
		if !e.IsRegular() || e.Size == 0 {
			continue
		}
		f, _ := o.File(e)
		_, err := io.ReadAll(f.NewReader())
		var ce *ChunkError
		switch {
		case err == nil:
			ok++
			if e.FirstChunk == 0 {
				t.Errorf("%q lives in the missing leaf but read fine", e.Path)
			}
		case errors.As(err, &ce) && ce.Leaf == 0 && errors.Is(err, ErrChunkMissing):
			failed++
		default:
			t.Errorf("%q: %v", e.Path, err)
		}
	}
	if ok == 0 || failed == 0 {
		t.Fatalf("%d files read, %d failed: want some of each", ok, failed)
	}
}

func TestWrongKeys(t *testing.T) {
	// Another repository's primary key: every item is someone else's, and
	// the listing says so, naming both keys, rather than looking empty.
	const repoKey, otherKey = "b4516a10824916f79b9e909e0f8d42b8", "0c29c326ba7cc2e9d111980e8aa1a403"
	var logged bytes.Buffer
	k, err := loadKey(filepath.Join(testdata, "bupstash-versions/v0.11.1/primary.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), filepath.Join(testdata, damageRepo), k,
		Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.List(context.Background())
	if err != nil || len(l.Items) != 0 || len(l.Skipped) != 7 || l.KeyID.String() != otherKey {
		t.Fatalf("foreign key: %d items, %d skipped, key %s, err %v", len(l.Items), len(l.Skipped), l.KeyID, err)
	}
	for _, s := range l.Skipped {
		if s.PrimaryKeyID.String() != repoKey {
			t.Errorf("item %s: skipped as made under %s", s.ID, s.PrimaryKeyID)
		}
	}
	want := "7 items were made under primary key " + repoKey + "; this key belongs to primary key " + otherKey
	if e := l.SkippedError(); e == nil || e.Error() != want || !errors.Is(e, ErrOtherKey) {
		t.Errorf("summary: %v, want %q", e, want)
	}
	_, err = l.Find("fdd75e29")
	want = "item fdd75e29487490b4ef3eb1792242fc00 was made under primary key " + repoKey + "; this key belongs to primary key " + otherKey
	if !errors.Is(err, ErrOtherKey) || err.Error() != want {
		t.Errorf("Find: %v, want %q", err, want)
	}
	if _, err := l.Find("0123"); !errors.Is(err, ErrNoItem) {
		t.Errorf("Find of a missing item: %v", err)
	}
	// Items (the mount's call) warns once per newly seen batch, in one line.
	for range 2 {
		if items, err := r.Items(context.Background()); err != nil || len(items) != 0 {
			t.Fatalf("Items: %d, %v", len(items), err)
		}
	}
	if n := strings.Count(logged.String(), "\n"); n != 1 || !strings.Contains(logged.String(), "7 items were made under primary key "+repoKey) {
		t.Errorf("log: %q", logged.String())
	}
	// The right key id but damaged secret parts: decryption fails.
	raw, _ := os.ReadFile(damageKey)
	k, _ = ParseKey(raw)
	k.k.MetadataSK.V[5] ^= 1
	k.k.DataSK.V[5] ^= 1
	k.k.IdxSK.V[5] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, k.k.Encode(), 0o600)
	if _, err := readEverything(filepath.Join(testdata, damageRepo), bad); !errors.Is(err, box.ErrAuth) {
		t.Fatalf("damaged key: err = %v, want ErrAuth", err)
	}
}

func TestBadKeyFiles(t *testing.T) {
	good, _ := os.ReadFile(damageKey)
	i := bytes.Index(good, []byte("-----BEGIN"))
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"no armor", []byte("hello")},
		{"tags differ", bytes.Replace(good, []byte("-----END BUPSTASH KEY"), []byte("-----END BUPSTASH SUB KEY"), 1)},
		{"sub-key tag on a primary key", bytes.ReplaceAll(good, []byte("BUPSTASH KEY"), []byte("BUPSTASH SUB KEY"))},
		{"bad base64", append(bytes.Clone(good[:i+40]), append([]byte("!!!!"), good[i+44:]...)...)},
		{"truncated body", append(bytes.Clone(good[:len(good)-80]), good[len(good)-27:]...)},
	} {
		if _, err := ParseKey(tt.b); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: err = %v, want ErrBadKey", tt.name, err)
		}
	}
	// Key files carry no checksum, so a flip inside the body yields another
	// key or none. Whatever it yields must read nothing, or read exactly
	// the right bytes (when the flip hits a part readers never use, such as
	// the rollsum key).
	clean, err := readEverything(filepath.Join(testdata, damageRepo), damageKey)
	if err != nil {
		t.Fatal(err)
	}
	end := bytes.Index(good, []byte("-----END"))
	p := filepath.Join(t.TempDir(), "k")
	for pos := i + 30; pos < end; pos += 5 {
		if good[pos] == '\n' || good[pos] == '=' {
			continue
		}
		body := bytes.Clone(good)
		body[pos] ^= 0x01
		os.WriteFile(p, body, 0o600)
		got, err := readEverything(filepath.Join(testdata, damageRepo), p)
		if err == nil && !sameContent(got, clean) {
			t.Fatalf("key damaged at byte %d read different content without an error", pos)
		}
	}
}

func rm(t *testing.T, dir, sub, name string) {
	if err := os.Remove(filepath.Join(dir, sub, name)); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, dir, sub, name string, n int64) {
	if err := os.Truncate(filepath.Join(dir, sub, name), n); err != nil {
		t.Fatal(err)
	}
}
