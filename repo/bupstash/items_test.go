package bupstash

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bupstash's `list --format jsonl1` adds these pseudo-tags.
var pseudoTags = map[string]bool{"id": true, "size": true, "timestamp": true}

func treeJSON(t HTreeMeta) map[string]any {
	return map[string]any{
		"address":          t.Address.String(),
		"height":           json.Number(strconv.FormatUint(t.Height, 10)),
		"data_chunk_count": json.Number(strconv.FormatUint(t.DataChunkCount, 10)),
	}
}

func TestItemsMatchBupstashList(t *testing.T) {
	for _, f := range fixtures {
		if f.expected == "" {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			r := openFixture(t, f)
			if r.Schema() != f.schema {
				t.Errorf("schema = %d, want %d", r.Schema(), f.schema)
			}
			items := listItems(t, r)
			want := readJSONL(t, filepath.Join(testdata, f.expected, "list.jsonl"))
			if len(items) != len(want) {
				t.Fatalf("%d items, bupstash lists %d", len(items), len(want))
			}
			for i, w := range want {
				it := items[i]
				check := func(field string, got, want any) {
					t.Helper()
					gb, _ := json.Marshal(got)
					wb, _ := json.Marshal(want)
					if string(gb) != string(wb) {
						t.Errorf("item %s %s = %s, bupstash says %s", it.ID, field, gb, wb)
					}
				}
				check("id", it.ID.String(), w["id"])
				check("decryption_key_id", it.PrimaryKeyID.String(), w["decryption_key_id"])
				check("put_key_id", it.SendKeyID.String(), w["put_key_id"])
				check("data_hash_key_part", hexOf(it.secret.dataHashPart2[:]), w["data_hash_key_part"])
				check("index_hash_key_part", hexOf(it.secret.indexHashPart2[:]), w["index_hash_key_part"])
				check("unix_timestamp_millis", json.Number(strconv.FormatInt(it.Timestamp.UnixMilli(), 10)), w["unix_timestamp_millis"])
				check("data_size", json.Number(strconv.FormatUint(it.DataSize, 10)), w["data_size"])
				check("index_size", json.Number(strconv.FormatUint(it.IndexSize, 10)), w["index_size"])
				check("data_tree", treeJSON(it.DataHTree), w["data_tree"])
				if it.IndexHTree != nil {
					check("index_tree", treeJSON(*it.IndexHTree), w["index_tree"])
				} else if w["index_tree"] != nil {
					t.Errorf("item %s has no index tree, bupstash shows one", it.ID)
				}
				tags := map[string]any{}
				for k, v := range w["tags"].(map[string]any) {
					if !pseudoTags[k] {
						tags[k] = v
					}
				}
				check("tags", it.Tags, tags)
			}
		})
	}
}

func hexOf(b []byte) string { return Address(b).String() }

// maxbupst's expected listing is YAML of a fixed shape; this reads just
// that shape: "- item_id:" starts an item, nested blocks by indentation.
func readMaxbupstExpected(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var items []map[string]string
	var section string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if strings.HasPrefix(trimmed, "- ") {
			items = append(items, map[string]string{})
			trimmed = strings.TrimPrefix(trimmed, "- ")
			indent += 2
		}
		if len(items) == 0 {
			continue
		}
		k, v, _ := strings.Cut(trimmed, ":")
		v = strings.TrimSpace(v)
		switch {
		case v == "":
			section = k
		case indent <= 5:
			items[len(items)-1][k] = v
		default:
			items[len(items)-1][section+"."+k] = v
		}
	}
	return items
}

func TestItemsMatchMaxbupstListing(t *testing.T) {
	r := openFixture(t, fixtures[0])
	items := listItems(t, r)
	want := readMaxbupstExpected(t, filepath.Join(testdata, "bupstash-0.10.3/small-0.10.3-expected.yml"))
	if len(items) != len(want) || len(want) != 3 {
		t.Fatalf("%d items, expected listing has %d", len(items), len(want))
	}
	for i, w := range want {
		it := items[i]
		h := it.plainHash()
		got := map[string]string{
			"item_id":                   it.ID.String(),
			"primary_key_id":            it.PrimaryKeyID.String(),
			"timestamp_ms":              strconv.FormatInt(it.Timestamp.UnixMilli(), 10),
			"datatree.height":           strconv.FormatUint(it.DataHTree.Height, 10),
			"datatree.data_chunk_count": strconv.FormatUint(it.DataHTree.DataChunkCount, 10),
			"datatree.address":          it.DataHTree.Address.String(),
			"plain_text_hash":           hexOf(h[:]),
			"send_key_id":               it.SendKeyID.String(),
			"index_hash_key_part_2":     hexOf(it.secret.indexHashPart2[:]),
			"data_hash_key_part_2":      hexOf(it.secret.dataHashPart2[:]),
			"data_size":                 strconv.FormatUint(it.DataSize, 10),
			"index_size":                strconv.FormatUint(it.IndexSize, 10),
		}
		if it.IndexHTree != nil {
			got["indextree.height"] = strconv.FormatUint(it.IndexHTree.Height, 10)
			got["indextree.data_chunk_count"] = strconv.FormatUint(it.IndexHTree.DataChunkCount, 10)
			got["indextree.address"] = it.IndexHTree.Address.String()
		}
		for k, v := range w {
			if k == "repository" || k == "key_id" || strings.HasPrefix(k, "tags.") {
				continue
			}
			if got[k] != v {
				t.Errorf("item %d %s = %q, maxbupst expects %q", i, k, got[k], v)
			}
		}
		ntags := 0
		for k := range w {
			if strings.HasPrefix(k, "tags.") {
				ntags++
				if it.Tags[strings.TrimPrefix(k, "tags.")] != w[k] {
					t.Errorf("item %d tag %s = %q, want %q", i, k, it.Tags[strings.TrimPrefix(k, "tags.")], w[k])
				}
			}
		}
		if ntags != len(it.Tags) {
			t.Errorf("item %d has %d tags, want %d", i, len(it.Tags), ntags)
		}
	}
}

func TestItemPutWithSubKey(t *testing.T) {
	// simplegetput: one raw item put by a sub key, whose hash-key part 2
	// differs from the primary key's; reading it needs the item's part 2.
	r := openFixture(t, fixtures[1])
	items := listItems(t, r)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	it := items[0]
	if it.ID.String() != "71a32f3f77f2db9817eb9f56c60e9637" || it.SendKeyID.String() != "4411d77a6fe464c9ea5836a6e77ccdac" {
		t.Fatalf("item %s sent by %s", it.ID, it.SendKeyID)
	}
	if it.Timestamp.UnixMilli() != 1691247544411 || it.Tags["name"] != "foo.txt" || it.FileName() != "foo.txt" {
		t.Fatalf("item = %+v", it)
	}
	if hexOf(it.secret.dataHashPart2[:]) == hexOf(r.key.k.DataHashKeyPart2.V[:]) {
		t.Fatal("fixture premise broken: item part 2 equals the key's")
	}
	got := readAll(t, r.OpenItem(it))
	if string(got) != strings.Repeat("x", 34) {
		t.Fatalf("content %q", got)
	}
}

func TestFindItem(t *testing.T) {
	r := openFixture(t, fixtures[5])
	items := listItems(t, r)
	for _, tt := range []struct {
		in   string
		want string
		err  error
	}{
		{"fdd75e29487490b4ef3eb1792242fc00", "fdd75e29487490b4ef3eb1792242fc00", nil},
		{"FDD75E", "fdd75e29487490b4ef3eb1792242fc00", nil},
		{"4", "", ErrAmbiguousItem}, // 4d0adcd0… and 48a22dd8…
		{"6cbef60a", "", ErrNoItem}, // removed: only items/<id>.removed
		{"zz", "", ErrNoItem},
		{"", "", ErrNoItem},
	} {
		it, err := FindItem(items, tt.in)
		switch {
		case tt.err != nil && !errors.Is(err, tt.err):
			t.Errorf("FindItem(%q) err = %v, want %v", tt.in, err, tt.err)
		case tt.err == nil && (err != nil || it.ID.String() != tt.want):
			t.Errorf("FindItem(%q) = %v, %v", tt.in, it, err)
		}
	}
}

func TestItemTimestamps(t *testing.T) {
	r := openFixture(t, fixtures[0])
	items := listItems(t, r)
	want := time.Date(2023, 6, 11, 12, 59, 0, 915e6, time.UTC)
	if !items[0].Timestamp.Equal(want) {
		t.Fatalf("timestamp %v, want %v", items[0].Timestamp, want)
	}
}

// Re-listing reuses decoded items and notices removals.
func TestItemsRelistAfterRemoval(t *testing.T) {
	dir := copyFixture(t, "bupstash-0.12.1/repo")
	r := openFixtureKey(t, dir, "bupstash-0.12.1/keys/primary.key")
	before := listItems(t, r)
	if err := os.Rename(filepath.Join(dir, "items", before[0].ID.String()), filepath.Join(dir, "items", before[0].ID.String()+".removed")); err != nil {
		t.Fatal(err)
	}
	after := listItems(t, r)
	if len(after) != len(before)-1 || after[0] != before[1] {
		t.Fatalf("after removal: %d items (was %d)", len(after), len(before))
	}
}

func TestItemsFromAnotherKeyAreSkipped(t *testing.T) {
	// The 0.10.3 versions repository opened with the 0.11.0 key: every
	// item belongs to another primary key.
	r := openFixtureKey(t, "bupstash-versions/v0.10.3/repo", "bupstash-versions/v0.11.0/primary.key")
	items, err := r.Items(context.Background())
	if err != nil || len(items) != 0 {
		t.Fatalf("items = %d, err = %v; want none, no error", len(items), err)
	}
	l, err := r.List(context.Background())
	if err != nil || len(l.Skipped) == 0 || len(l.Skipped) != len(listItems(t, openFixture(t, fixtures[2]))) {
		t.Fatalf("skipped = %d, err = %v; want every item", len(l.Skipped), err)
	}
}
