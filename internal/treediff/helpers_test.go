package treediff

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

const testdata = "../../testdata"

type fixture struct {
	name, repo, key, expected string
	byTag                     bool
}

var fixtures = []fixture{
	{name: "v0.10.3", repo: "bupstash-versions/v0.10.3/repo", key: "bupstash-versions/v0.10.3/primary.key", expected: "bupstash-versions/v0.10.3/expected", byTag: true},
	{name: "v0.11.0", repo: "bupstash-versions/v0.11.0/repo", key: "bupstash-versions/v0.11.0/primary.key", expected: "bupstash-versions/v0.11.0/expected", byTag: true},
	{name: "v0.11.1", repo: "bupstash-versions/v0.11.1/repo", key: "bupstash-versions/v0.11.1/primary.key", expected: "bupstash-versions/v0.11.1/expected", byTag: true},
	{name: "v0.12.1", repo: "bupstash-0.12.1/repo", key: "bupstash-0.12.1/keys/primary.key", expected: "bupstash-0.12.1/expected"},
}

var fixture012 = fixtures[3]

func openRepo(t testing.TB, dir, keyFile string) *bupstash.Repository {
	t.Helper()
	k, err := bupstashtest.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(context.Background(), dir, k, bupstash.Options{Cache: cache.New(64 << 20), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// itemIndex collects an item's index.
func itemIndex(t testing.TB, r *bupstash.Repository, id string) *Index {
	t.Helper()
	ctx := context.Background()
	items, err := r.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	it, err := bupstash.FindItem(items, id)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := r.OpenItem(it).Index()
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	x, err := Collect(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// copyTree copies a directory (a repository: regular files and
// directories) so that genuine bupstash may write to the copy.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v %s", src, dst, err, out)
	}
}

// genuineEnv is the environment genuine bupstash runs with in tests:
// nothing inherited but PATH.
func genuineEnv(dir, repo, key, tz string) []string {
	return []string{
		"BUPSTASH_REPOSITORY=" + repo, "BUPSTASH_KEY=" + key,
		"BUPSTASH_QUERY_CACHE=" + filepath.Join(dir, "qcache"), "HOME=" + dir,
		"TZ=" + tz, "PATH=" + os.Getenv("PATH"),
	}
}

func runGenuine(t testing.TB, bin, cwd string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Dir = env, cwd
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

// extract writes a snapshot into dir with genuine `bupstash restore`.
func extract(t testing.TB, bin string, env []string, id, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runGenuine(t, bin, "", env, "restore", "--into", dir, "id="+id); code != 0 {
		t.Fatalf("bupstash restore: %s", stderr)
	}
}

var _ Source = (*bupstash.IndexReader)(nil)
var _ io.Writer = (*strings.Builder)(nil)
