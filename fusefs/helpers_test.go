package fusefs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/repo/bupstash"
)

const testdata = "../testdata"

// fixture is a genuine Bupstash repository with what Bupstash printed for
// it.
type fixture struct {
	name     string // source directory in the mount
	repo     string
	key      string
	expected string // directory of list.jsonl and list-contents-*.jsonl
	byTag    bool   // list-contents files named by the fixture tag
}

var fixtures = []fixture{
	{name: "maxbupst", repo: "bupstash-0.10.3/small-0.10.3", key: "bupstash-0.10.3/maxbupst-testkey.key"},
	{name: "simplegetput", repo: "bupstash-0.10.3/simplegetput-0.10.3", key: "bupstash-0.10.3/simplegetput-0.10.3/bupstash-test-primary.key"},
	{name: "v0.10.3", repo: "bupstash-versions/v0.10.3/repo", key: "bupstash-versions/v0.10.3/primary.key", expected: "bupstash-versions/v0.10.3/expected", byTag: true},
	{name: "v0.11.0", repo: "bupstash-versions/v0.11.0/repo", key: "bupstash-versions/v0.11.0/primary.key", expected: "bupstash-versions/v0.11.0/expected", byTag: true},
	{name: "v0.11.1", repo: "bupstash-versions/v0.11.1/repo", key: "bupstash-versions/v0.11.1/primary.key", expected: "bupstash-versions/v0.11.1/expected", byTag: true},
	{name: "v0.12.1", repo: "bupstash-0.12.1/repo", key: "bupstash-0.12.1/keys/primary.key", expected: "bupstash-0.12.1/expected"},
}

// logBuffer collects the filesystem's log lines for assertions.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type source struct {
	name, repo, key string
}

type mounted struct {
	dir  string
	log  *logBuffer
	fs   *fusefs.FS
	repo map[string]*bupstash.Repository
}

// mountSources mounts the given repositories, each as a source.
func mountSources(t *testing.T, opts fusefs.Options, sources ...source) *mounted {
	t.Helper()
	return mountSourcesWith(t, opts, fusefs.MountOptions{}, nil, sources...)
}

// mountSourcesWith is mountSources with mount options, and a setup
// function that may add more to the filesystem first.
func mountSourcesWith(t *testing.T, opts fusefs.Options, mo fusefs.MountOptions, setup func(*fusefs.FS) error, sources ...source) *mounted {
	t.Helper()
	m := &mounted{log: &logBuffer{}, repo: map[string]*bupstash.Repository{}}
	opts.Logger = slog.New(slog.NewTextHandler(m.log, nil))
	m.fs = fusefs.New(opts)
	if setup != nil {
		if err := setup(m.fs); err != nil {
			t.Fatal(err)
		}
	}
	chunks := cache.New(64 << 20)
	for _, s := range sources {
		keyPath := s.key
		if !filepath.IsAbs(keyPath) {
			keyPath = filepath.Join(testdata, keyPath)
		}
		k, err := bupstashtest.LoadKey(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		dir := s.repo
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(testdata, dir)
		}
		r, err := bupstash.Open(context.Background(), dir, k, bupstash.Options{Cache: chunks, Logger: opts.Logger})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.fs.AddBupstash(s.name, r); err != nil {
			t.Fatal(err)
		}
		m.repo[s.name] = r
	}
	m.dir = fusetest.Mount(t, m.fs, mo)
	return m
}

// mountGenerated writes tree as the one snapshot of a new repository,
// with leaves cut as opts says, and mounts it as the source "gen". It
// returns the mount and the snapshot's directory in it.
func mountGenerated(t *testing.T, opts *testrepo.Options, tree *testrepo.Tree) (*mounted, string) {
	t.Helper()
	src, id := writeGenerated(t, opts, tree)
	m := mountSources(t, fsOptions(), src)
	return m, m.path(src.name, "ids", id)
}

// writeGenerated writes tree as the one snapshot of a new repository,
// with leaves cut as opts says, and returns the repository as the source
// "gen" and the snapshot's id.
func writeGenerated(t *testing.T, opts *testrepo.Options, tree *testrepo.Tree) (source, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := testrepo.Create(filepath.Join(dir, "repo"), opts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.AddSnapshot(context.Background(), tree.Source(), testrepo.ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteKey(filepath.Join(dir, "key")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return source{"gen", filepath.Join(dir, "repo"), filepath.Join(dir, "key")}, info.ID.String()
}

// mountFixtures mounts every fixture repository, with its primary key.
func mountFixtures(t *testing.T, opts fusefs.Options) *mounted {
	var srcs []source
	for _, f := range fixtures {
		srcs = append(srcs, source{f.name, f.repo, f.key})
	}
	return mountSources(t, opts, srcs...)
}

func (m *mounted) path(parts ...string) string {
	return filepath.Join(append([]string{m.dir}, parts...)...)
}

func readJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		d := json.NewDecoder(strings.NewReader(sc.Text()))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func fsOptions() fusefs.Options { return fusefs.Options{} }

func newTestLogger(w *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
