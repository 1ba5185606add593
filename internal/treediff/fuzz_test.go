package treediff

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// FuzzRustLossy: the result is UTF-8, valid input is unchanged, and each
// replacement stands for at least one byte.
func FuzzRustLossy(f *testing.F) {
	for _, s := range []string{"caf\xe9", "\xe2\x82", "\xf0\x9f\x98\x80", "\xed\xa0\x80", "ok"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		s := RustLossy(p)
		if !utf8.ValidString(s) {
			t.Fatalf("RustLossy(%q) = %q is not UTF-8", p, s)
		}
		if utf8.Valid(p) && s != string(p) {
			t.Fatalf("valid %q changed to %q", p, s)
		}
		if n := strings.Count(s, "\uFFFD") - bytes.Count(p, []byte("\uFFFD")); n > len(p) {
			t.Fatalf("%d replacements for %d bytes", n, len(p))
		}
	})
}

// FuzzPathCmp: the order is antisymmetric, and "." comes first.
func FuzzPathCmp(f *testing.F) {
	f.Add([]byte("a/b"), []byte("a/c/d"))
	f.Add([]byte("."), []byte("x"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if pathCmp(a, b) != -pathCmp(b, a) {
			t.Fatalf("pathCmp(%q, %q) = %d, reversed %d", a, b, pathCmp(a, b), pathCmp(b, a))
		}
		if string(a) != "." && pathCmp([]byte("."), a) != -1 {
			t.Fatalf(". is not before %q", a)
		}
	})
}

// FuzzIndexRoundTrip: any entry survives the in-memory index.
func FuzzIndexRoundTrip(f *testing.F) {
	f.Add([]byte("a/b"), uint32(0o100644), uint64(5), int64(-2), []byte("user.x"), []byte{0, 1}, true)
	f.Fuzz(func(t *testing.T, path []byte, mode uint32, size uint64, mtime int64, xname, xvalue []byte, cursor bool) {
		e := &bupstash.IndexEntry{Path: path, Mode: mode, Size: size, Mtime: mtime, Ctime: -mtime, HasCursor: cursor,
			Xattrs: []bupstash.Xattr{{Name: string(xname), Value: xvalue}}, Link: xvalue}
		b := newBuilder()
		if err := b.add(e); err != nil {
			t.Fatal(err)
		}
		x, err := b.finish()
		if err != nil {
			t.Fatal(err)
		}
		got, err := x.reader().Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if JSONLine(got) != JSONLine(e) || oldIndex(got) != !cursor {
			t.Fatalf("%s\nbecame %s", JSONLine(e), JSONLine(got))
		}
	})
}
