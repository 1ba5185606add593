package treediff

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// JSONLine writes what `bupstash list-contents --format jsonl1` wrote for
// every entry of every fixture listed by Bupstash 0.11 or later, byte for
// byte (0.10.3 wrote an older form of jsonl1).
func TestJSONLineMatchesBupstash(t *testing.T) {
	checked := 0
	for _, f := range fixtures[1:] {
		r := openRepo(t, filepath.Join(testdata, f.repo), filepath.Join(testdata, f.key))
		items, err := r.Items(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if !it.HasIndex() {
				continue
			}
			name := "list-contents-" + it.ID.String() + ".jsonl"
			if f.byTag {
				name = "list-contents-" + it.Tags["fixture"] + ".jsonl"
			}
			want, err := os.ReadFile(filepath.Join(testdata, f.expected, name))
			if err != nil {
				t.Fatal(err)
			}
			idx, err := r.OpenItem(it).Index()
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for {
				e, err := idx.Next(context.Background())
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got.WriteString(JSONLine(e) + "\n")
				checked++
			}
			idx.Close()
			if got.String() != string(want) {
				t.Errorf("%s %s:\n got  %s\n want %s", f.name, it.ID, got.String(), want)
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d entries checked", checked)
	}
}

func TestRustLossy(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"caf\xe9", "caf\uFFFD"},
		{"\xe9\xe9", "\uFFFD\uFFFD"},
		{"a\xe2\x82b", "a\uFFFDb"},             // a cut-short sequence is one replacement
		{"\xf0\x9f\x98", "\uFFFD"},             // so is one cut at the end
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogates: each byte
		{"\xc0\xaf", "\uFFFD\uFFFD"},           // overlong
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"ok ü", "ok ü"},
	} {
		if got := RustLossy([]byte(c.in)); got != c.want {
			t.Errorf("RustLossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDisplayMode(t *testing.T) {
	for _, c := range []struct {
		mode uint32
		want string
	}{
		{0o100644, "-rw-r--r--"}, {0o104755, "-rwsr-xr-x"}, {0o104644, "-rwSr--r--"}, {0o102755, "-rwxr-sr-x"},
		{0o41777, "drwxrwxrwt"}, {0o41776, "drwxrwxrwT"}, {0o120777, "lrwxrwxrwx"}, {0o20644, "crw-r--r--"},
		{0o60600, "brw-------"}, {0o10644, "prw-r--r--"}, {0o140755, "?rwxr-xr-x"},
	} {
		if got := DisplayMode(c.mode); got != c.want {
			t.Errorf("DisplayMode(%o) = %s, want %s", c.mode, got, c.want)
		}
	}
}

func TestPathCmp(t *testing.T) {
	// Bupstash's own ordering test (index.rs test_index_path_cmp), and
	// the order its indexer writes.
	order := []string{".", "a", "b", "c", "a/b", "a/c", "a/b/c", "a/c/c", "b/a", "c/a/b"}
	for i := range order {
		for j := range order {
			got := pathCmp([]byte(order[i]), []byte(order[j]))
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("pathCmp(%s, %s) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
}

func TestParseIgnore(t *testing.T) {
	ig, err := ParseIgnore("times,xattrs,file-content")
	if err != nil || ig != IgnoreMtime|IgnoreCtime|IgnoreXattrs|IgnoreSize|IgnoreDataHash {
		t.Fatalf("ParseIgnore = %b, %v", ig, err)
	}
	for _, bad := range []string{"", "time", "dev,", "mtime"} {
		if _, err := ParseIgnore(bad); err == nil {
			t.Errorf("ParseIgnore(%q) accepted", bad)
		}
	}
}

// The in-memory index gives back what was put in.
func TestIndexRoundTrip(t *testing.T) {
	h := [32]byte{1, 2, 3}
	entries := []*bupstash.IndexEntry{
		{Path: []byte("."), Mode: bupstash.ModeDir | 0o755, Nlink: 3, HasCursor: true, Version: 5},
		{Path: []byte("caf\xe9"), Mode: bupstash.ModeRegular | 0o644, Size: 12, DataHash: &h, Mtime: -2, Ctime: 1 << 40, CtimeNsec: 999999999,
			Xattrs: []bupstash.Xattr{{Name: "user.b", Value: []byte{0, 1}}, {Name: "user.a", Value: nil}}, HasCursor: true, ChunkDelta: 3, Version: 5},
		{Path: []byte("l"), Mode: bupstash.ModeSymlink | 0o777, Link: []byte{}, Xattrs: []bupstash.Xattr{}, HasCursor: true, Version: 5},
		{Path: []byte(strings.Repeat("x/", 3000) + "y"), Mode: bupstash.ModeCharDev | 0o600, DevMajor: 1, DevMinor: 3, Sparse: true, HasCursor: true, Version: 5},
	}
	b := newBuilder()
	for _, e := range entries {
		if err := b.add(e); err != nil {
			t.Fatal(err)
		}
	}
	x, err := b.finish()
	if err != nil {
		t.Fatal(err)
	}
	r := x.reader()
	for i, want := range entries {
		got, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if JSONLine(got) != JSONLine(want) || !equal(got, want, 0) || (got.Xattrs == nil) != (want.Xattrs == nil) {
			t.Errorf("entry %d: %s, want %s", i, JSONLine(got), JSONLine(want))
		}
	}
	if _, err := r.Next(context.Background()); err != io.EOF {
		t.Fatalf("after the last entry: %v", err)
	}
	if x.sizeWidth() != len("12B") {
		t.Fatalf("size width %d", x.sizeWidth())
	}
}
