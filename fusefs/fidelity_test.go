package fusefs_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"lukechampine.com/blake3"
)

func num(t *testing.T, v any) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(string(v.(json.Number)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// jsonBytes turns a list-contents string or byte array into bytes.
func jsonBytes(v any) []byte {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []any:
		b := make([]byte, len(v))
		for i, c := range v {
			n, _ := strconv.Atoi(string(c.(json.Number)))
			b[i] = byte(n)
		}
		return b
	}
	return nil
}

func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	buf := make([]byte, sz)
	sz, _ = unix.Llistxattr(p, buf)
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		v := make([]byte, vs)
		vs, _ = unix.Lgetxattr(p, name, v)
		out[name] = string(v[:vs])
	}
	return out
}

// Every entry of every fixture snapshot, seen through the mount with lstat,
// readlink, listxattr/getxattr and read, equals what Bupstash printed.
func TestMountMatchesBupstashListings(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	if checked := checkListings(t, m, fixtures); checked < 100 {
		t.Fatalf("only %d entries checked", checked)
	}
}

// checkListings checks every fixture with expected listings, mounted as
// the source of its name, against them. It returns the entries checked.
func checkListings(t *testing.T, m *mounted, fixtures []fixture) int {
	t.Helper()
	checked := 0
	for _, f := range fixtures {
		if f.expected == "" {
			continue
		}
		items := readJSONL(t, filepath.Join(testdata, f.expected, "list.jsonl"))
		ents, err := os.ReadDir(m.path(f.name, "ids"))
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		for _, it := range items {
			want = append(want, it["id"].(string))
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s/ids = %v, bupstash lists %v", f.name, got, want)
		}
		for _, it := range items {
			id := it["id"].(string)
			tags := it["tags"].(map[string]any)
			if _, ok := it["index_tree"]; !ok {
				continue // raw items: see TestRawItems
			}
			name := "list-contents-" + id + ".jsonl"
			if f.byTag {
				name = "list-contents-" + tags["fixture"].(string) + ".jsonl"
			}
			want := map[string]bool{}
			listing := readJSONL(t, filepath.Join(testdata, f.expected, name))
			inSnapshotLinks(t, listing)
			for _, e := range listing {
				// "." is the item directory itself: it shows the saved root.
				rel := string(jsonBytes(e["path"]))
				checkEntry(t, m.path(f.name, "ids", id, rel), e)
				want[rel] = true
				checked++
			}
			// Nothing beyond what Bupstash lists.
			root := m.path(f.name, "ids", id)
			err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(root, p)
				if !want[rel] {
					t.Errorf("%s/%s: %q is in the mount, not in bupstash's listing", f.name, id, rel)
				}
				delete(want, rel)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			for rel := range want {
				t.Errorf("%s/%s: %q is listed by bupstash, not found walking the mount", f.name, id, rel)
			}
		}
	}
	return checked
}

// inSnapshotLinks replaces the saved link count of hard-linked files
// (what the source had) by the number of their names in the listing,
// which is what extracting the snapshot gives and the mount shows.
func inSnapshotLinks(t *testing.T, listing []map[string]any) {
	t.Helper()
	group := func(e map[string]any) (string, bool) {
		mode := num(t, e["mode"])
		if mode&syscall.S_IFMT == syscall.S_IFDIR || num(t, e["nlink"]) < 2 {
			return "", false
		}
		return fmt.Sprint(e["norm_dev"], ":", e["ino"]), true
	}
	names := map[string]int{}
	for _, e := range listing {
		if g, ok := group(e); ok {
			names[g]++
		}
	}
	for _, e := range listing {
		if g, ok := group(e); ok {
			e["nlink"] = json.Number(fmt.Sprint(names[g]))
		}
	}
}

func checkEntry(t *testing.T, p string, e map[string]any) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Errorf("lstat %s: %v", p, err)
		return
	}
	fail := func(field string, got, want any) {
		t.Helper()
		t.Errorf("%s: %s = %v, bupstash says %v", p, field, got, want)
	}
	mode := uint32(num(t, e["mode"]))
	if st.Mode != mode {
		fail("mode", strconv.FormatUint(uint64(st.Mode), 8), strconv.FormatUint(uint64(mode), 8))
	}
	for _, c := range []struct {
		field string
		got   uint64
	}{
		{"uid", uint64(st.Uid)}, {"gid", uint64(st.Gid)},
		{"mtime", uint64(st.Mtim.Sec)}, {"mtime_nsec", uint64(st.Mtim.Nsec)},
		{"ctime", uint64(st.Ctim.Sec)}, {"ctime_nsec", uint64(st.Ctim.Nsec)},
		{"nlink", uint64(st.Nlink)},
	} {
		if want := num(t, e[c.field]); c.got != want {
			fail(c.field, c.got, want)
		}
	}
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		if want := num(t, e["size"]); uint64(st.Size) != want {
			fail("size", st.Size, want)
		}
		if st.Blocks != (st.Size+511)/512 && e["sparse"] != true {
			fail("blocks", st.Blocks, (st.Size+511)/512)
		}
		content, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			return
		}
		if h, ok := e["data_hash"].(string); ok {
			sum := blake3.Sum256(content)
			if h != "blake3:"+hex.EncodeToString(sum[:]) {
				fail("content hash", hex.EncodeToString(sum[:]), h)
			}
		}
	case syscall.S_IFLNK:
		target, err := os.Readlink(p)
		if want := string(jsonBytes(e["link_target"])); err != nil || target != want {
			fail("link target", target, want)
		}
		if st.Size != int64(len(target)) {
			fail("symlink size", st.Size, len(target))
		}
	case syscall.S_IFCHR, syscall.S_IFBLK:
		if unix.Major(st.Rdev) != uint32(num(t, e["dev_major"])) || unix.Minor(st.Rdev) != uint32(num(t, e["dev_minor"])) {
			fail("rdev", st.Rdev, []any{e["dev_major"], e["dev_minor"]})
		}
	}
	want := map[string]string{}
	if xs, ok := e["xattrs"].(map[string]any); ok {
		for k, v := range xs {
			want[k] = string(jsonBytes(v))
		}
	}
	if mode&syscall.S_IFMT != syscall.S_IFLNK {
		if got := listXattrs(t, p); !mapsEqual(got, want) {
			fail("xattrs", got, want)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Raw items are one file named after their name tag, or "data".
func TestRawItems(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	for _, tt := range []struct {
		source, id, name, sha string
		mode                  os.FileMode
	}{
		{"maxbupst", "c3c7b8e93cec5c85c45a58e6c866f918", "data", "47f3ac0f8001f5dccfe03a3225806aca3b40bbeeff161f0e61bd85c153bf35d0", 0o444},
		{"maxbupst", "598f1fee879bef635b4fcca8b69167dc", "zero8m.bin", "2daeb1f36095b44b318410b3f4e8b5d989dcc7bb023d1426c492dab0a3053e74", 0o444},
		{"simplegetput", "71a32f3f77f2db9817eb9f56c60e9637", "foo.txt", "b0b43789f1857820775bdb3ab67a4dd824bee60034dc4233f5412eb20ff4a4b8", 0o444},
		{"v0.12.1", "d5dbf2447bdcf7807b25732d40a02b35", "data", "a25c27baed0c36618ea226cee708e38908e6baa262f37ff032795869ff60a4f7", 0o444},
		{"v0.12.1", "a9efc039bcd20bcdb8d0a8b5f047f7a3", "s.txt", "8f7f167a86b0dd98a6e3c2e92750b1b41c1b42d5b114d0d7d8498993bd8559a2", 0o444},
		{"v0.12.1", "b5576b674d8b9640de071fee640d140b", "data", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0o444},
	} {
		dir := m.path(tt.source, "ids", tt.id)
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 || ents[0].Name() != tt.name {
			t.Errorf("%s: entries %v, %v; want just %q", dir, ents, err, tt.name)
			continue
		}
		fi, _ := os.Stat(filepath.Join(dir, tt.name))
		b, err := os.ReadFile(filepath.Join(dir, tt.name))
		if err != nil || sha(b) != tt.sha || fi.Mode() != tt.mode || fi.Size() != int64(len(b)) {
			t.Errorf("%s/%s: %d bytes, sha %s, mode %v, err %v", dir, tt.name, len(b), sha(b), fi.Mode(), err)
		}
	}
}

func TestHardLinksShareAnInode(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	for _, dir := range []string{
		m.path("v0.12.1", "ids", "fdd75e29487490b4ef3eb1792242fc00"),
		m.path("v0.11.0", "ids", "6c21dbc18caa7543d6d274678b5142d2"),
	} {
		var a, b syscall.Stat_t
		n1, n2 := "hard1", "hard2"
		if _, err := os.Stat(filepath.Join(dir, n1)); err != nil {
			n1, n2 = "h1", "h2"
		}
		if err := syscall.Stat(filepath.Join(dir, n1), &a); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(filepath.Join(dir, n2), &b); err != nil {
			t.Fatal(err)
		}
		if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
			t.Errorf("%s: %s ino %d nlink %d, %s ino %d nlink %d", dir, n1, a.Ino, a.Nlink, n2, b.Ino, b.Nlink)
		}
		var c syscall.Stat_t
		syscall.Stat(filepath.Join(dir, "a.txt"), &c)
		if c.Ino == a.Ino {
			t.Errorf("a.txt shares the hard links' inode")
		}
	}
}

func TestNonUTF8Names(t *testing.T) {
	m := mountFixtures(t, fsOptions())
	for _, tt := range []struct{ dir, name string }{
		{m.path("v0.12.1", "ids", "fdd75e29487490b4ef3eb1792242fc00"), "caf\xe9"},
		{m.path("v0.11.1", "ids", "2344665cf5b0c7a8cd4eee53844cd8bf"), "caf\xe9"},
		{m.path("v0.10.3", "ids", "5acad51178b99c6a3da30483754c6223"), "caf\uFFFD"},
	} {
		b, err := os.ReadFile(filepath.Join(tt.dir, tt.name))
		if err != nil || len(b) == 0 {
			t.Errorf("%q: %v", tt.name, err)
		}
		ents, _ := os.ReadDir(tt.dir)
		found := false
		for _, e := range ents {
			found = found || e.Name() == tt.name
		}
		if !found {
			t.Errorf("%s does not list %q", tt.dir, tt.name)
		}
	}
}
