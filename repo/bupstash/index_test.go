package bupstash

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

func readIndex(t testing.TB, o *OpenItem) []*IndexEntry {
	t.Helper()
	idx, err := o.Index()
	if err != nil {
		t.Fatal(err)
	}
	var out []*IndexEntry
	for {
		e, err := idx.Next(context.Background())
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

func num(v uint64) json.Number { return json.Number(strconv.FormatUint(v, 10)) }

// entryField renders one field of an entry the way `bupstash list-contents
// --format jsonl1` does, given the shape Bupstash used for it.
func entryField(e *IndexEntry, field string, want any) any {
	switch field {
	case "mode":
		return num(uint64(e.Mode))
	case "size":
		return num(e.Size)
	case "path":
		if _, ok := want.([]any); ok {
			return byteArray(e.Path)
		}
		return string(e.Path)
	case "mtime":
		return num(uint64(e.Mtime))
	case "mtime_nsec":
		return num(uint64(e.MtimeNsec))
	case "ctime":
		return num(uint64(e.Ctime))
	case "ctime_nsec":
		return num(uint64(e.CtimeNsec))
	case "uid":
		return num(e.UID)
	case "gid":
		return num(e.GID)
	case "norm_dev":
		return num(e.NormDev)
	case "nlink":
		return num(e.Nlink)
	case "ino":
		return num(e.Ino)
	case "dev_major", "dev_minor":
		v := e.DevMajor
		if field == "dev_minor" {
			v = e.DevMinor
		}
		if want == nil {
			if v != 0 {
				return num(v)
			}
			return nil
		}
		return num(v)
	case "sparse":
		return e.Sparse
	case "link_target":
		if e.Link == nil {
			return nil
		}
		if _, ok := want.([]any); ok {
			return byteArray(e.Link)
		}
		return string(e.Link)
	case "xattrs":
		if e.Xattrs == nil {
			return nil
		}
		m := map[string]any{}
		for _, x := range e.Xattrs {
			wm, _ := want.(map[string]any)
			if _, ok := wm[x.Name].([]any); ok {
				m[x.Name] = byteArray(x.Value)
			} else {
				m[x.Name] = string(x.Value)
			}
		}
		return m
	case "data_hash":
		if e.DataHash == nil {
			return nil
		}
		return "blake3:" + hex.EncodeToString(e.DataHash[:])
	}
	return fmt.Sprintf("unknown field %q", field)
}

func byteArray(b []byte) []any {
	out := make([]any, len(b))
	for i, c := range b {
		out[i] = json.Number(strconv.Itoa(int(c)))
	}
	return out
}

// Every index entry of every snapshot must equal what Bupstash's own
// list-contents printed, field by field.
func TestIndexMatchesBupstashListContents(t *testing.T) {
	for _, f := range fixtures {
		if f.expected == "" {
			continue
		}
		r := openFixture(t, f)
		for _, it := range listItems(t, r) {
			if !it.HasIndex() {
				continue
			}
			t.Run(f.name+"/"+it.Tags["fixture"], func(t *testing.T) {
				entries := readIndex(t, r.OpenItem(it))
				want := readJSONL(t, f.contentsFile(it))
				if len(entries) != len(want) {
					t.Fatalf("%d entries, bupstash lists %d", len(entries), len(want))
				}
				for i, w := range want {
					e := entries[i]
					for field, wv := range w {
						gv := entryField(e, field, wv)
						gb, _ := json.Marshal(gv)
						wb, _ := json.Marshal(wv)
						if !bytes.Equal(gb, wb) {
							t.Errorf("entry %d (%q) %s = %s, bupstash says %s", i, e.Path, field, gb, wb)
						}
					}
				}
			})
		}
	}
}

func TestIndexMaxbupst(t *testing.T) {
	r := openFixture(t, fixtures[0])
	it, err := FindItem(listItems(t, r), "81e33ca1db1e6d562bc7146ddd9b37ab")
	if err != nil {
		t.Fatal(err)
	}
	entries := readIndex(t, r.OpenItem(it))
	if len(entries) != 84 {
		t.Fatalf("%d entries, want 84", len(entries))
	}
	byPath := map[string]*IndexEntry{}
	regular, hashes := 0, 0
	for _, e := range entries {
		byPath[string(e.Path)] = e
		if e.IsRegular() {
			regular++
		}
		if e.DataHash != nil {
			hashes++
		}
		if e.Version != 3 {
			t.Fatalf("entry %q is format %d, want 3", e.Path, e.Version)
		}
	}
	if regular != 82 || hashes != 82 {
		t.Fatalf("%d regular files, %d hashes; want 82 each", regular, hashes)
	}
	// Cursors as docs/bupstash-format.md §14.3 lists them: size, delta
	// start..end @ c.
	for _, c := range []struct {
		path                        string
		size, delta, start, end, c0 uint64
	}{
		{".aux_create_small_repo.sh.swp", 12288, 0, 0, 12288, 0},
		{"bupstash_item.o", 229048, 1, 734353, 100513, 0},
		{"maxbupst", 903176, 1, 615119, 123884, 1},
		{"zsodiumbinding.o", 14280, 1, 202330, 0, 2},
		{"testcpp/Makefile", 180, 0, 0, 180, 3},
		{"testcpp/zblake3.hpp", 1922, 1, 59636, 0, 3},
	} {
		e := byPath[c.path]
		if e == nil {
			t.Fatalf("no entry %q", c.path)
		}
		got := [5]uint64{e.Size, e.ChunkDelta, e.StartOffset, e.EndOffset, e.FirstChunk}
		if want := [5]uint64{c.size, c.delta, c.start, c.end, c.c0}; got != want {
			t.Errorf("%s: size/delta/start/end/c = %v, want %v", c.path, got, want)
		}
	}
	if e := byPath["."]; e.Mode != 0o40755 || e.UID != 1000 || e.Nlink != 6 {
		t.Errorf("root = %+v", e)
	}
}

// Hand-made entries cover what no fixture has: formats 1 and 2, and a
// format-4 entry whose xattr names lack the OsString variant (the layout
// Bupstash 0.11.1 used in memory under tag 3).
func TestDecodeEntryFormats(t *testing.T) {
	hash := blake3.Sum256([]byte("x"))
	common := func(e *bare.Encoder, v1 bool) {
		e.String("dir/f")
		e.Uint(0o100644)
		e.Uint(1)    // size
		e.Uint(1000) // uid
		e.Uint(100)  // gid
		e.Uint(5)    // mtime
		e.Uint(6)
		e.Uint(7) // ctime
		e.Uint(8)
		e.Uint(2049) // dev
		e.Uint(42)   // ino
		e.Uint(1)    // nlink
		e.Option(false)
		e.Uint(0)
		e.Uint(0)
		e.Option(true)
		e.Uint(1)
		e.String("user.a")
		e.Data([]byte("va"))
	}
	var v1, v2, v4quirk, v4 bare.Encoder
	v1.Uint(0)
	common(&v1, true)
	for range 4 {
		v1.Uint(9)
	}
	v2.Uint(1)
	common(&v2, false)
	for range 4 {
		v2.Uint(9)
	}
	v2.Uint(1)
	v2.Fixed(hash[:])

	v4tail := func(e *bare.Encoder, osString bool) {
		e.Uint(3)
		e.Data([]byte("dir/f"))
		for _, v := range []uint64{1, 5, 6, 7, 8, 42, 0, 0o100644, 1000, 100, 1} {
			e.Uint(v)
		}
		e.Option(false)
		e.Uint(0)
		e.Uint(0)
		e.Bool(false)
		e.Option(true)
		e.Uint(1)
		if osString {
			e.Uint(0)
		}
		e.Data([]byte("user.a"))
		e.Data([]byte("va"))
		e.Uint(0)
		e.Uint(0)
		e.Uint(1)
		e.Uint(1)
		e.Fixed(hash[:])
	}
	v4tail(&v4, true)
	v4tail(&v4quirk, false)

	for _, tt := range []struct {
		name    string
		b       []byte
		version int
		cursor  bool
		hash    bool
	}{
		{"format 1", v1.Buf, 1, false, false},
		{"format 2", v2.Buf, 2, false, true},
		{"format 4", v4.Buf, 4, true, true},
		{"format 4, 0.11.1 xattr layout", v4quirk.Buf, 4, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e IndexEntry
			d := bare.NewDecoder(tt.b)
			if err := decodeEntry(d, &e); err != nil {
				t.Fatal(err)
			}
			if err := d.Finish(); err != nil {
				t.Fatal(err)
			}
			if e.Version != tt.version || string(e.Path) != "dir/f" || e.Mode != 0o100644 || e.Size != 1 ||
				e.Mtime != 5 || e.MtimeNsec != 6 || e.Ctime != 7 || e.CtimeNsec != 8 || e.Ino != 42 {
				t.Fatalf("entry = %+v", e)
			}
			if len(e.Xattrs) != 1 || e.Xattrs[0].Name != "user.a" || string(e.Xattrs[0].Value) != "va" {
				t.Fatalf("xattrs = %+v", e.Xattrs)
			}
			if e.HasCursor != tt.cursor || (e.DataHash != nil) != tt.hash {
				t.Fatalf("cursor %v hash %v", e.HasCursor, e.DataHash != nil)
			}
			// Every truncation is reported as short, never decoded.
			for n := 0; n < len(tt.b); n++ {
				var e IndexEntry
				if err := decodeEntry(bare.NewDecoder(tt.b[:n]), &e); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncated at %d: err = %v", n, err)
				}
			}
		})
	}
}

func TestValidPath(t *testing.T) {
	for _, tt := range []struct {
		p  string
		ok bool
	}{
		{".", true}, {"a", true}, {"a/b", true}, {"caf\xe9", true},
		{"", false}, {"/a", false}, {"a/", false}, {"a//b", false}, {"..", false},
		{"a/../b", false}, {"./a", false}, {"a/.", false}, {"a\x00b", false},
	} {
		if got := validPath([]byte(tt.p)); got != tt.ok {
			t.Errorf("validPath(%q) = %v, want %v", tt.p, got, tt.ok)
		}
	}
}
