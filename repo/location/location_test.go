package location

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/backupy/s3store"
	"github.com/backupfs/backupfs/repo/bupstash"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in     string
		scheme Scheme
		path   string
		name   string
	}{
		{"/srv/repo", Local, "/srv/repo", "repo"},
		{"/srv/repo/", Local, "/srv/repo/", "repo"},
		{"repo", Local, "repo", "repo"},
		{"./odd:name", Local, "./odd:name", "odd:name"},
		{"dir/a://b", Local, "dir/a://b", "b"}, // not a scheme: a path with "://" in it
		{"file:///srv/repo", Local, "/srv/repo", "repo"},
		{"file://localhost/srv/repo", Local, "/srv/repo", "repo"},
		{"ssh://backup.example/srv/repo", SSH, "/srv/repo", "repo"},
		{"ssh://ann@backup.example:2222/srv/repo", SSH, "/srv/repo", "repo"},
		{"ssh://backup.example", SSH, "", "backup.example"},
		{"s3://backups", S3, "", "backups"},
		{"s3://backups/", S3, "", "backups"},
		{"s3://backups/co_acme/agt_1/", S3, "co_acme/agt_1", "agt_1"},
	} {
		l, err := Parse(tt.in)
		if err != nil || l.Scheme != tt.scheme || l.Path != tt.path || l.String() != tt.in || l.Name() != tt.name {
			t.Errorf("Parse(%q) = %+v (name %q), %v; want %s %q %q", tt.in, l, l.Name(), err, tt.scheme, tt.path, tt.name)
		}
	}
	for in, want := range map[string]error{
		"":                        ErrEmpty,
		"gopher://host/x":         ErrUnknownScheme,
		"ssh:///srv/repo":         ErrBadURL,
		"file://elsewhere/x":      ErrBadURL,
		"ssh://host:notaport/srv": nil, // some url.Parse error
		"s3:///prefix":            ErrBadURL,
		"s3://bucket/a//b":        ErrBadURL,
		"s3://bucket/a/../b":      ErrBadURL,
		"s3://user@bucket/a":      ErrBadURL,
		"s3://bucket:9000/a":      ErrBadURL,
	} {
		_, err := Parse(in)
		if err == nil || (want != nil && !errors.Is(err, want)) {
			t.Errorf("Parse(%q) = %v, want %v", in, err, want)
		}
	}
}

func TestIsURL(t *testing.T) {
	for s, want := range map[string]bool{
		"ssh://h/p": true, "s3://bucket/prefix": true, "git+ssh://h/p": true, "file:///x": true,
		"/abs": false, "rel/dir": false, "://x": false, "1ssh://h": false, "a/b://c": false, "C:/x": false,
	} {
		if IsURL(s) != want {
			t.Errorf("IsURL(%q) = %v", s, !want)
		}
	}
}

// The opening functions reach the readers for local paths and refuse the
// rest with one clear error.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	key, err := bupstashtest.LoadKey("../../testdata/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := Parse("../../testdata/bupstash-0.12.1/repo")
	if _, err := OpenBupstash(ctx, loc, key, bupstash.Options{}); err != nil {
		t.Fatal(err)
	}
	loc, _ = Parse("/nonexistent/repo")
	if _, err := OpenBupstash(ctx, loc, key, bupstash.Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing repository: %v", err)
	}
	loc, _ = Parse("ssh://-oProxyCommand=evil/srv/repo")
	if _, err := OpenBupstash(ctx, loc, key, bupstash.Options{}); !errors.Is(err, ErrBadURL) {
		t.Fatalf("ssh to a host that is an option: %v", err)
	}
	loc, _ = Parse("ssh://backup.example/srv/repo")
	if _, err := OpenBupstash(ctx, loc, nil, bupstash.Options{}); !errors.Is(err, bupstash.ErrNoKey) {
		t.Fatalf("ssh without a key: %v", err)
	}
	if _, err := FromCommand("  "); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty command: %v", err)
	}
	if _, err := OpenBackupy(ctx, loc, backupy.Options{}, s3store.Options{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("backupy over ssh: %v", err)
	}
	if _, _, err := OpenBackupyObject(ctx, loc, backupy.Options{}, s3store.Options{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("backupy object over ssh: %v", err)
	}
	store := t.TempDir()
	loc, _ = Parse(store)
	s, err := OpenBackupy(ctx, loc, backupy.Options{CacheDir: filepath.Join(t.TempDir(), "cache")}, s3store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// A local location made absolute names the same directory from anywhere;
// it is shown by that path, a URL as written.
func TestAbsAndDisplay(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	l, _ := Parse("repo")
	a, err := l.Abs()
	if err != nil || a.Path != filepath.Join(dir, "repo") || a.Display() != filepath.Join(dir, "repo") || a.String() != "repo" || a.Name() != "repo" {
		t.Fatalf("%+v %v", a, err)
	}
	u, _ := Parse("ssh://ann@backup.example/srv/repo")
	if a, err := u.Abs(); err != nil || a.Display() != "ssh://ann@backup.example/srv/repo" || a.Path != "/srv/repo" {
		t.Fatalf("%+v %v", a, err)
	}
}

// A repository behind a command (BUPSTASH_REPOSITORY_COMMAND) running
// the genuine server lists what the directory does, and keeps fetched
// chunks in the disk cache when given one.
func TestOpenCommand(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	ctx := context.Background()
	key, err := bupstashtest.LoadKey("../../testdata/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", "../../testdata/bupstash-0.12.1/repo", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	loc, err := FromCommand(bin + " serve " + dir)
	if err != nil || loc.Scheme != Command || !loc.IsRemote() || loc.Name() != "repo" {
		t.Fatalf("FromCommand: %+v %v", loc, err)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	r, err := OpenBupstashWith(ctx, loc, key, bupstash.Options{}, Remote{CacheDir: cacheDir, CacheSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	items, err := r.Items(ctx)
	if err != nil || len(items) != 7 {
		t.Fatalf("%d items, %v", len(items), err)
	}
	f, err := r.OpenItem(items[len(items)-1]).Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.NewReader().WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(cacheDir); len(ents) == 0 {
		t.Fatal("nothing in the disk cache")
	}
	loc, _ = FromCommand(bin + " serve " + t.TempDir())
	if _, err := OpenBupstash(ctx, loc, key, bupstash.Options{}); !errors.Is(err, bupstash.ErrNotRepository) {
		t.Fatalf("a server with no repository there: %v", err)
	}
}
