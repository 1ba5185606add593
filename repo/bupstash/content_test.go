package bupstash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/backupfs/backupfs/internal/bupstashkey"

	"github.com/backupfs/backupfs/crypto/box"
	"lukechampine.com/blake3"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Checksums of raw items and of `bupstash get` tar output, from the
// fixtures' READMEs.
var knownChecksums = map[string]string{
	// bupstash-0.10.3/README.md
	"c3c7b8e93cec5c85c45a58e6c866f918": "47f3ac0f8001f5dccfe03a3225806aca3b40bbeeff161f0e61bd85c153bf35d0",
	"598f1fee879bef635b4fcca8b69167dc": "2daeb1f36095b44b318410b3f4e8b5d989dcc7bb023d1426c492dab0a3053e74",
	"71a32f3f77f2db9817eb9f56c60e9637": "b0b43789f1857820775bdb3ab67a4dd824bee60034dc4233f5412eb20ff4a4b8",
	// bupstash-versions/README.md: the stdin items hold "raw\n"
	"b467fd2f8192eddc81bb22361e6fa2ca": "8e5ceeca3a438135cfd1372eafe969ccc4440798e378d8b8ed24242f026a704f",
	"8352379292d190352020aa38331d3228": "8e5ceeca3a438135cfd1372eafe969ccc4440798e378d8b8ed24242f026a704f",
	"aa3ef9123c6d9e656aae17e39eb20994": "8e5ceeca3a438135cfd1372eafe969ccc4440798e378d8b8ed24242f026a704f",
	// bupstash-0.12.1/README.md, raw items
	"d5dbf2447bdcf7807b25732d40a02b35": "a25c27baed0c36618ea226cee708e38908e6baa262f37ff032795869ff60a4f7",
	"a9efc039bcd20bcdb8d0a8b5f047f7a3": "8f7f167a86b0dd98a6e3c2e92750b1b41c1b42d5b114d0d7d8498993bd8559a2",
	"b5576b674d8b9640de071fee640d140b": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
}

func TestRawItemChecksums(t *testing.T) {
	seen := 0
	for _, f := range fixtures {
		r := openFixture(t, f)
		for _, it := range listItems(t, r) {
			want, ok := knownChecksums[it.ID.String()]
			if !ok || it.HasIndex() {
				continue
			}
			seen++
			got := readAll(t, r.OpenItem(it))
			if uint64(len(got)) != it.DataSize || sha(got) != want {
				t.Errorf("%s/%s: %d bytes sha256 %s, want %d bytes %s", f.name, it.ID, len(got), sha(got), it.DataSize, want)
			}
		}
	}
	if seen != len(knownChecksums) {
		t.Fatalf("checked %d raw items, know %d", seen, len(knownChecksums))
	}
}

func TestSnapshotDataStream(t *testing.T) {
	r := openFixture(t, fixtures[0])
	it, _ := FindItem(listItems(t, r), "81e33ca1")
	if got := sha(readAll(t, r.OpenItem(it))); got != "295a9bb052426f8c92694c828c8964ec30d1468ede5e828f39583a12b11fd1df" {
		t.Fatalf("data stream sha256 %s", got)
	}
}

// Every regular file of every snapshot reads back with the BLAKE3 hash the
// index records, and the cursor method agrees with the stream-offset method.
func TestEveryFileMatchesItsHash(t *testing.T) {
	files := 0
	for _, f := range fixtures {
		r := openFixture(t, f)
		for _, it := range listItems(t, r) {
			if !it.HasIndex() {
				continue
			}
			o := r.OpenItem(it)
			stream := readAll(t, o)
			for _, e := range readIndex(t, o) {
				if !e.IsRegular() {
					continue
				}
				files++
				file, err := o.File(e)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(file.NewReader())
				if err != nil {
					t.Fatalf("%s %s %q: %v", f.name, it.ID, e.Path, err)
				}
				if uint64(len(got)) != e.Size {
					t.Fatalf("%q: %d bytes, want %d", e.Path, len(got), e.Size)
				}
				if e.DataHash != nil && blake3.Sum256(got) != *e.DataHash {
					t.Errorf("%s %q: content hash mismatch", f.name, e.Path)
				}
				if !bytes.Equal(got, stream[e.StreamOffset:e.StreamOffset+e.Size]) {
					t.Errorf("%s %q: cursor read differs from the stream at offset %d", f.name, e.Path, e.StreamOffset)
				}
			}
		}
	}
	// Every regular file of every fixture snapshot: 82 in maxbupst's, the
	// rest in the generated repositories.
	if files != 148 {
		t.Fatalf("%d files checked, the fixtures hold 148", files)
	}
}

// Specific contents from the fixture READMEs.
func TestKnownFileContents(t *testing.T) {
	r := openFixture(t, fixtures[5])
	it, _ := FindItem(listItems(t, r), "fdd75e29")
	o := r.OpenItem(it)
	want := map[string]string{
		"a.txt":         "hello\n",
		"after-big.txt": "after big\n",
		"caf\xe9":       "latin1 name\n",
		"hard1":         "hardlinked content\n",
		"hard2":         "hardlinked content\n",
		"setuid.sh":     "#!/bin/sh\n",
		"sub/s.txt":     "sub file\n",
		"private/p.txt": "secret\n",
		"ümlaut.txt":    "umlaut\n",
	}
	shas := map[string]string{
		"big.txt":    "c75927a789339c0a3b2356a51e58034fff65652da125d215ff6a37992b94a24e",
		"sparse.bin": "aa6872113164993086a16d25f22ae6bfcdc09d0a631f95d3cd37f9ed16e0a1d9",
	}
	for _, e := range readIndex(t, o) {
		w, ok := want[string(e.Path)]
		s, hasSHA := shas[string(e.Path)]
		if !ok && !hasSHA {
			continue
		}
		f, _ := o.File(e)
		got, err := io.ReadAll(f.NewReader())
		if err != nil {
			t.Fatal(err)
		}
		if ok && string(got) != w {
			t.Errorf("%q = %q, want %q", e.Path, got, w)
		}
		if hasSHA && sha(got) != s {
			t.Errorf("%q sha256 %s, want %s", e.Path, sha(got), s)
		}
		delete(want, string(e.Path))
		delete(shas, string(e.Path))
	}
	if len(want)+len(shas) != 0 {
		t.Fatalf("not found: %v %v", want, shas)
	}
}

// Reads at random offsets and lengths equal slices of a sequential read,
// for files spanning several leaves (zzz.txt is 3 MB over three leaves,
// big.txt 11.6 MB inside a 16 MB leaf) and for raw items.
func TestRandomAccessMatchesSequential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(t *testing.T, name string, newFile func() *File, whole []byte) {
		for i := 0; i < 60; i++ {
			f := newFile() // fresh: leaf lengths must be learned or probed
			off := rng.Int64N(int64(len(whole)) + 10)
			n := rng.IntN(3 << 20)
			buf := make([]byte, n)
			got, err := f.NewReader().ReadAt(buf, off)
			wantN := max(0, min(int64(n), int64(len(whole))-off))
			if int64(got) != wantN {
				t.Fatalf("%s: ReadAt(%d, %d) = %d bytes, want %d (err %v)", name, n, off, got, wantN, err)
			}
			if int64(n) > wantN && err != io.EOF {
				t.Fatalf("%s: short read without io.EOF: %v", name, err)
			}
			if int64(n) <= wantN && err != nil {
				t.Fatalf("%s: ReadAt(%d, %d): %v", name, n, off, err)
			}
			if got > 0 && !bytes.Equal(buf[:got], whole[off:off+int64(got)]) {
				t.Fatalf("%s: ReadAt(%d, %d) returned wrong bytes", name, n, off)
			}
		}
	}
	for _, f := range fixtures {
		r := openFixture(t, f)
		for _, it := range listItems(t, r) {
			if !it.HasIndex() {
				if it.DataSize < 1000 {
					continue
				}
				whole := readAll(t, r.OpenItem(it))
				check(t, f.name+"/"+it.ID.String(), func() *File {
					d, _ := r.OpenItem(it).Data()
					return d
				}, whole)
				continue
			}
			o := r.OpenItem(it)
			for _, e := range readIndex(t, o) {
				if !e.IsRegular() || e.Size < 1<<20 {
					continue
				}
				f0, _ := o.File(e)
				whole, _ := io.ReadAll(f0.NewReader())
				check(t, f.name+"/"+string(e.Path), func() *File {
					f, _ := r.OpenItem(it).File(e)
					return f
				}, whole)
			}
		}
	}
}

// Parallel readers of one OpenItem see the right bytes (run with -race).
func TestConcurrentReaders(t *testing.T) {
	r := openFixture(t, fixtures[5])
	it, _ := FindItem(listItems(t, r), "fdd75e29")
	o := r.OpenItem(it)
	var files []*File
	var wants [][]byte
	for _, e := range readIndex(t, o) {
		if e.IsRegular() && e.Size > 0 {
			f, _ := o.File(e)
			w, _ := io.ReadAll(f.NewReader())
			files = append(files, f)
			wants = append(wants, w)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 100; i++ {
				k := rng.IntN(len(files))
				off := rng.Int64N(int64(len(wants[k])))
				buf := make([]byte, rng.IntN(1<<20)+1)
				n, err := files[k].NewReader().ReadAt(buf, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], wants[k][off:off+int64(n)]) {
					t.Errorf("wrong bytes at %d", off)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestSubKeyCapabilities(t *testing.T) {
	keys := "bupstash-0.12.1/keys/"
	repo := "bupstash-0.12.1/repo"
	for _, tt := range []struct {
		key                      string
		list, contents, readData bool
	}{
		{"primary.key", true, true, true},
		{"list-contents.key", true, true, false},
		{"list.key", true, false, false},
		{"put.key", false, false, false},
	} {
		t.Run(tt.key, func(t *testing.T) {
			k, err := loadKey(testdata + "/" + keys + tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if k.CanListItems() != tt.list || k.CanListContents() != tt.contents || k.CanReadData() != tt.readData {
				t.Fatalf("capabilities %v %v %v", k.CanListItems(), k.CanListContents(), k.CanReadData())
			}
			r, err := Open(context.Background(), testdata+"/"+repo, k, Options{Logger: quietLog})
			if !tt.list {
				if !errors.Is(err, ErrPutOnlyKey) {
					t.Fatalf("Open with a put key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			items := listItems(t, r)
			if len(items) != 7 {
				t.Fatalf("%d items", len(items))
			}
			it, _ := FindItem(items, "fdd75e29")
			o := r.OpenItem(it)
			idx, err := o.Index()
			if !tt.contents {
				if !errors.Is(err, ErrCannotListContents) {
					t.Fatalf("Index: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e, err := idx.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			_, ferr := o.File(e)
			_, derr := o.Data()
			if tt.readData != (ferr == nil) || tt.readData != (derr == nil) {
				t.Fatalf("File: %v, Data: %v", ferr, derr)
			}
			if !tt.readData && (!errors.Is(ferr, ErrCannotReadData) || !errors.Is(derr, ErrCannotReadData)) {
				t.Fatalf("errors %v %v", ferr, derr)
			}
		})
	}
}

func TestKeyKinds(t *testing.T) {
	for key, want := range map[string]string{
		"primary.key": "primary", "list-contents.key": "list-contents sub", "list.key": "list-only sub", "put.key": "put-only sub",
	} {
		k, err := loadKey(testdata + "/bupstash-0.12.1/keys/" + key)
		if err != nil {
			t.Fatal(err)
		}
		if k.Kind() != want {
			t.Errorf("%s: kind %q, want %q", key, k.Kind(), want)
		}
		// Re-encoding gives a key that parses to the same fields.
		k2, err := ParseKey(k.k.Encode())
		if err != nil || *k2.k != *k.k {
			t.Errorf("%s: re-encoded key differs: %v", key, err)
		}
	}
	nk, err := bupstashkey.NewPrimary()
	if err != nil {
		t.Fatal(err)
	}
	if k2, err := ParseKey(nk.Encode()); err != nil || *k2.k != *nk || !k2.CanReadData() {
		t.Fatalf("new key does not round-trip: %v", err)
	}
	if pk, _ := box.PublicKey(&nk.MetadataSK.V); pk != nk.MetadataPK.V {
		t.Fatal("new key's public and secret halves do not match")
	}
	k, _ := loadKey(testdata + "/bupstash-0.12.1/keys/put.key")
	if !strings.Contains(k.PrimaryKeyID().String(), "b4516a10824916f79b9e909e0f8d42b8") {
		t.Fatalf("put key derived from %s", k.PrimaryKeyID())
	}
}
