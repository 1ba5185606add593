package bupstash

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/cache"
)

// The fixtures in testdata/ were written by genuine Bupstash 0.10.3, 0.11.0,
// 0.11.1 and 0.12.1, with what Bupstash printed for them (see the READMEs
// next to them).
const testdata = "../../testdata"

type fixture struct {
	name string
	repo string
	key  string
	// expected/ directory with list.jsonl and list-contents-*.jsonl, if any
	expected string
	// list-contents files named by fixture tag rather than item id
	contentsByTag bool
	schema        int
}

var fixtures = []fixture{
	{name: "maxbupst-small-0.10.3", repo: "bupstash-0.10.3/small-0.10.3", key: "bupstash-0.10.3/maxbupst-testkey.key", schema: 6},
	{name: "simplegetput-0.10.3", repo: "bupstash-0.10.3/simplegetput-0.10.3", key: "bupstash-0.10.3/simplegetput-0.10.3/bupstash-test-primary.key", schema: 6},
	{name: "v0.10.3", repo: "bupstash-versions/v0.10.3/repo", key: "bupstash-versions/v0.10.3/primary.key", expected: "bupstash-versions/v0.10.3/expected", contentsByTag: true, schema: 6},
	{name: "v0.11.0", repo: "bupstash-versions/v0.11.0/repo", key: "bupstash-versions/v0.11.0/primary.key", expected: "bupstash-versions/v0.11.0/expected", contentsByTag: true, schema: 7},
	{name: "v0.11.1", repo: "bupstash-versions/v0.11.1/repo", key: "bupstash-versions/v0.11.1/primary.key", expected: "bupstash-versions/v0.11.1/expected", contentsByTag: true, schema: 8},
	{name: "v0.12.1", repo: "bupstash-0.12.1/repo", key: "bupstash-0.12.1/keys/primary.key", expected: "bupstash-0.12.1/expected", schema: 8},
}

// loadKey reads a key file (the front end reads keys as untrusted files;
// tests read their own fixtures).
func loadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKey(b)
}

// quietLog keeps expected warnings (skipped items, …) out of test output.
var quietLog = slog.New(slog.DiscardHandler)

func openFixture(t testing.TB, f fixture) *Repository {
	t.Helper()
	return openFixtureKey(t, f.repo, f.key)
}

func openFixtureKey(t testing.TB, repo, key string) *Repository {
	t.Helper()
	k, err := loadKey(filepath.Join(testdata, key))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(repo) {
		repo = filepath.Join(testdata, repo)
	}
	r, err := Open(context.Background(), repo, k, Options{Cache: cache.New(64 << 20), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func listItems(t testing.TB, r *Repository) []*Item {
	t.Helper()
	items, err := r.Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// readJSONL decodes one JSON object per line, keeping numbers exact.
func readJSONL(t testing.TB, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// contentsFile returns the expected list-contents file for a snapshot item.
func (f fixture) contentsFile(it *Item) string {
	if f.contentsByTag {
		return filepath.Join(testdata, f.expected, "list-contents-"+it.Tags["fixture"]+".jsonl")
	}
	return filepath.Join(testdata, f.expected, "list-contents-"+it.ID.String()+".jsonl")
}

// copyFixture copies a fixture repository into a temporary directory that
// a test may damage.
func copyFixture(t testing.TB, rel string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(rel))
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(testdata, rel))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// readAll reads an item's whole data stream.
func readAll(t testing.TB, o *OpenItem) []byte {
	t.Helper()
	f, err := o.Data()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f.NewReader())
	if err != nil {
		t.Fatal(err)
	}
	return b
}
