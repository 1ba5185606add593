package dump_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
)

const testdata = "../../testdata"

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The sha256 of what genuine `bupstash get` writes for the snapshots of
// the 0.12.1 fixture.
var knownTarChecksums = map[string]string{
	"fdd75e29487490b4ef3eb1792242fc00": "f5117d50b16a1e3163a1c0613b4eb2e08574c4153055c6187c293d6c412b191c",
	"4d0adcd0cbd80b68cb20bcfa49edc161": "3a8234b5aa160a19ad46e1a4f73690025bc5723f8aab66989d307de9ae4387fd",
	"7f3491e57862cd4bef370cafbb47b1c4": "af932d7d459eeaf8a6c925b5d687107f2047f9ec0940fbf78245e94a59586661",
	"48a22dd86a5d60520ab4a0f6f1c07bef": "0d28a56f4ad2e44bfdcffd0854e8876d584a1d30e7d9f212fe0b538048158bc1",
}

func open(t *testing.T, c *cache.ChunkCache) (*bupstash.Repository, []*bupstash.Item) {
	t.Helper()
	k, err := bupstashtest.LoadKey(testdata + "/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(context.Background(), testdata+"/bupstash-0.12.1/repo", k, bupstash.Options{Cache: c, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	items, err := r.Items(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r, items
}

func TestTarMatchesBupstashGet(t *testing.T) {
	r, items := open(t, nil)
	seen := 0
	for _, it := range items {
		want, ok := knownTarChecksums[it.ID.String()]
		if !ok {
			continue
		}
		seen++
		var buf bytes.Buffer
		if err := dump.Tar(context.Background(), r.OpenItem(it), &buf); err != nil {
			t.Fatalf("%s: %v", it.ID, err)
		}
		if got := sha(buf.Bytes()); got != want {
			t.Errorf("%s: tar sha256 %s, bupstash get gives %s", it.ID, got, want)
		}
	}
	if seen != 4 {
		t.Fatalf("checked %d tars", seen)
	}
}

// A cache much smaller than a leaf still works: leaves are handed to
// their readers without being kept.
func TestTinyCache(t *testing.T) {
	r, items := open(t, cache.New(4096))
	it, _ := bupstash.FindItem(items, "fdd75e29")
	var buf bytes.Buffer
	if err := dump.Tar(context.Background(), r.OpenItem(it), &buf); err != nil {
		t.Fatal(err)
	}
	if sha(buf.Bytes()) != knownTarChecksums[it.ID.String()] {
		t.Fatal("tar differs with a tiny cache")
	}
}
