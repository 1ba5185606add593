package serve

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// fixture is a repository in testdata/ and the servers that can open it.
type fixture struct {
	name     string
	dir      string   // relative to the module root
	versions []string // servers that open it (0.10.3 only opens schema 6)
	key      string   // its primary key, relative to the module root
}

var fixtures = []fixture{
	{"small-0.10.3", "testdata/bupstash-0.10.3/small-0.10.3", []string{"0.10.3", "0.11.1", "0.12.1"}, "testdata/bupstash-0.10.3/maxbupst-testkey.key"},
	{"simplegetput-0.10.3", "testdata/bupstash-0.10.3/simplegetput-0.10.3", []string{"0.10.3", "0.12.1"}, "testdata/bupstash-0.10.3/simplegetput-0.10.3/bupstash-test-primary.key"},
	{"v0.10.3", "testdata/bupstash-versions/v0.10.3/repo", []string{"0.10.3", "0.11.1", "0.12.1"}, "testdata/bupstash-versions/v0.10.3/primary.key"},
	{"v0.11.0", "testdata/bupstash-versions/v0.11.0/repo", []string{"0.11.1", "0.12.1"}, "testdata/bupstash-versions/v0.11.0/primary.key"},
	{"v0.11.1", "testdata/bupstash-versions/v0.11.1/repo", []string{"0.11.1", "0.12.1"}, "testdata/bupstash-versions/v0.11.1/primary.key"},
	{"0.12.1", "testdata/bupstash-0.12.1/repo", []string{"0.11.1", "0.12.1"}, "testdata/bupstash-0.12.1/keys/primary.key"},
}

// moduleRoot finds the directory holding go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// copyRepo copies a repository (a fixture, relative to the module root)
// into a temporary directory:
// bupstash serve may write to what it opens.
func copyRepo(t testing.TB, rel string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	src := rel
	if !filepath.IsAbs(src) {
		src = filepath.Join(moduleRoot(t), rel)
	}
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("copying %s: %v: %s", rel, err, out)
	}
	return dst
}

// serverEnv is the environment servers run in: none of the user's
// BUPSTASH_* settings.
func serverEnv(t testing.TB) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C"}
}

// serveCommand runs the genuine bupstash serve of version on dir.
func serveCommand(t testing.TB, version, dir string, flags ...string) Command {
	bin := testtools.Bupstash(t, version)
	argv := append([]string{bin, "serve"}, flags...)
	argv = append(argv, dir)
	return Command{Argv: argv, Env: serverEnv(t), Name: "bupstash-" + version + " serve " + filepath.Base(dir)}
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// liveItems lists the item files of a repository: the live set, which
// Bupstash's gc treats as authoritative.
func liveItems(t testing.TB, dir string) map[bupstash.Xid][]byte {
	t.Helper()
	names, err := os.ReadDir(filepath.Join(dir, "items"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[bupstash.Xid][]byte{}
	for _, n := range names {
		id, err := bupstash.ParseXid(n.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "items", n.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[id] = b
	}
	return out
}

// removedItems lists the ids of items/*.removed files.
func removedItems(t testing.TB, dir string) map[bupstash.Xid][]byte {
	t.Helper()
	names, _ := os.ReadDir(filepath.Join(dir, "items"))
	out := map[bupstash.Xid][]byte{}
	for _, n := range names {
		base, ok := strings.CutSuffix(n.Name(), ".removed")
		if !ok {
			continue
		}
		id, err := bupstash.ParseXid(base)
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "items", n.Name()))
		out[id] = b
	}
	return out
}

// treesOf decodes the tree shapes from item metadata.
func treesOf(t testing.TB, meta []byte) (data bupstash.HTreeMeta, index *bupstash.HTreeMeta) {
	t.Helper()
	d := bare.NewDecoder(meta)
	v := d.Uint()
	d.Fixed(16)
	if v >= 1 {
		d.U64()
	}
	tree := func() bupstash.HTreeMeta {
		return bupstash.HTreeMeta{Height: d.Uint(), DataChunkCount: d.Uint(), Address: d.Array32()}
	}
	data = tree()
	if d.Option() {
		ix := tree()
		index = &ix
	}
	d.Data()
	if err := d.Finish(); err != nil {
		t.Fatalf("item metadata: %v", err)
	}
	return data, index
}

// storedChunk reads a chunk file of a repository.
func storedChunk(t testing.TB, dir string, addr bupstash.Address) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "data", hex.EncodeToString(addr[:])))
	if err != nil {
		t.Fatalf("chunk %s: %v", addr, err)
	}
	return b
}

func sameChunk(t testing.TB, dir string, ch Chunk) {
	t.Helper()
	if want := storedChunk(t, dir, ch.Addr); !bytes.Equal(ch.Data, want) {
		t.Fatalf("chunk %s: got %d bytes, differing from the %d stored", ch.Addr, len(ch.Data), len(want))
	}
}

func sortedIDs(m map[bupstash.Xid][]byte) []string {
	var out []string
	for id := range m {
		out = append(out, id.String())
	}
	sort.Strings(out)
	return out
}
