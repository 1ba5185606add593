package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Remote repositories on the command line: the same output as the local
// repository, byte for byte, through the genuine servers.

// serveCopy copies a repository for a genuine server to open (it may
// write to what it opens) and returns the BUPSTASH_REPOSITORY_COMMAND
// that serves the copy.
func serveCopy(t *testing.T, version, repo string, flags ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", repo, dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return strings.Join(append(append([]string{testtools.Bupstash(t, version), "serve"}, flags...), dir), " ")
}

// commandsFor lists the commands whose output is compared: list, and for
// every item ls -R, cat of the whole item, and cat of up to 20 files.
func commandsFor(t *testing.T, repo, key string) [][]string {
	t.Helper()
	ctx := context.Background()
	k, err := bupstashtest.LoadKey(key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(ctx, repo, k, bupstash.Options{Cache: cache.New(32 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	items, err := r.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cmds := [][]string{{"list"}, {"list", "--json"}}
	for _, it := range items {
		id := it.ID.String()
		cmds = append(cmds, []string{"cat", id})
		if !it.HasIndex() {
			continue
		}
		cmds = append(cmds, []string{"ls", "-R", id})
		ix, err := r.OpenItem(it).Index()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for n < 20 {
			e, err := ix.Next(ctx)
			if err != nil {
				break
			}
			if e.IsRegular() {
				cmds = append(cmds, []string{"cat", id, string(e.Path)})
				n++
			}
		}
	}
	return cmds
}

// list, ls and cat print the same bytes for a repository read through
// BUPSTASH_REPOSITORY_COMMAND as for the directory, with every server.
func TestRemoteCommandsMatchLocal(t *testing.T) {
	for _, tc := range []struct{ version, repo, key string }{
		{"0.10.3", "bupstash-versions/v0.10.3/repo", "bupstash-versions/v0.10.3/primary.key"},
		{"0.11.1", "bupstash-versions/v0.11.1/repo", "bupstash-versions/v0.11.1/primary.key"},
		{"0.12.1", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"},
		{"0.12.1", "bupstash-0.10.3/small-0.10.3", "bupstash-0.10.3/maxbupst-testkey.key"},
	} {
		t.Run(tc.version+"/"+filepath.Base(filepath.Dir(tc.repo)), func(t *testing.T) {
			repo, key := abs(t, filepath.Join(testdata, tc.repo)), abs(t, filepath.Join(testdata, tc.key))
			remote := map[string]string{
				"BUPSTASH_REPOSITORY_COMMAND": serveCopy(t, tc.version, repo),
				"BUPSTASH_KEY":                key,
				"XDG_CACHE_HOME":              t.TempDir(),
			}
			compared := 0
			for _, args := range commandsFor(t, repo, key) {
				want := runCmd(t, nil, append(args, "--repo", repo, "--key", key)...)
				got := runCmd(t, remote, args...)
				// A 0.12 server upgrades an old repository the first
				// time it opens it, and says so: a warning of its own.
				got.stderr = withoutUpgradeWarnings(got.stderr)
				if got.code != want.code || got.stdout != want.stdout || got.stderr != want.stderr {
					t.Fatalf("%s: remote exit %d, %d bytes out, stderr %q; local exit %d, %d bytes out, stderr %q",
						strings.Join(args, " "), got.code, len(got.stdout), got.stderr, want.code, len(want.stdout), want.stderr)
				}
				compared++
			}
			if compared < 5 {
				t.Fatalf("only %d commands compared", compared)
			}
		})
	}
}

func withoutUpgradeWarnings(s string) string {
	var kept []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "the server is upgrading the repository") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

// Sub-keys through a server print what they print locally: list with a
// list-only key; list and ls with a list-contents key, and cat refused
// the same way.
func TestRemoteSubKeysMatchLocal(t *testing.T) {
	repo := abs(t, repo012)
	command := serveCopy(t, "0.12.1", repo)
	for key, cmds := range map[string][][]string{
		"list.key":          {{"list"}},
		"list-contents.key": {{"list"}, {"ls", "-R", "fdd75e29"}, {"cat", "fdd75e29", "a.txt"}},
	} {
		k := abs(t, filepath.Join(testdata, "bupstash-0.12.1/keys", key))
		for _, args := range cmds {
			want := runCmd(t, nil, append(args, "--repo", repo, "--key", k)...)
			got := runCmd(t, map[string]string{"BUPSTASH_REPOSITORY_COMMAND": command, "BUPSTASH_KEY": k}, args...)
			if got != want {
				t.Errorf("%s %s: remote %+v, local %+v", key, strings.Join(args, " "), got, want)
			}
		}
	}
}

var fetchedRE = regexp.MustCompile(`remote repository closed \(.*chunks_fetched (\d+)`)

// fetched returns the chunks a remote command fetched, from its verbose
// log.
func fetched(t *testing.T, stderr string) int {
	t.Helper()
	m := fetchedRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no closing line in:\n%s", stderr)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A second cat of the same item fetches nothing: the first left every
// chunk it fetched, index included, in the disk cache. With the cache
// off, it fetches again.
func TestRemoteSecondCatFetchesNothing(t *testing.T) {
	env := map[string]string{
		"BUPSTASH_REPOSITORY_COMMAND": serveCopy(t, "0.12.1", abs(t, repo012)),
		"BUPSTASH_KEY":                abs(t, primary012),
		"XDG_CACHE_HOME":              t.TempDir(),
	}
	first := runCmd(t, env, "cat", "--verbose", "fdd75e29")
	second := runCmd(t, env, "cat", "--verbose", "fdd75e29")
	if first.code != 0 || second.code != 0 || first.stdout != second.stdout {
		t.Fatalf("cat: %d %d\n%s", first.code, second.code, second.stderr)
	}
	if n := fetched(t, first.stderr); n == 0 {
		t.Fatal("the first cat fetched nothing")
	}
	if n := fetched(t, second.stderr); n != 0 {
		t.Fatalf("the second cat fetched %d chunks", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(env["XDG_CACHE_HOME"], "backupfs", "remote")); len(ents) == 0 {
		t.Fatal("no cache in $XDG_CACHE_HOME/backupfs/remote")
	}
	off := runCmd(t, env, "cat", "--verbose", "--remote-cache-size", "0", "fdd75e29")
	if n := fetched(t, off.stderr); n == 0 {
		t.Fatal("with the cache off, nothing was fetched")
	}
}

// Where the repository comes from: --repo, else BUPSTASH_REPOSITORY,
// else BUPSTASH_REPOSITORY_COMMAND (BUPSTASH_REPOSITORY wins, as in
// Bupstash).
func TestRemoteRepositoryPrecedence(t *testing.T) {
	repo, key := abs(t, repo012), abs(t, primary012)
	broken := "false"
	want := runCmd(t, nil, "list", "--repo", repo, "--key", key)
	for name, env := range map[string]map[string]string{
		"repository wins over command": {"BUPSTASH_REPOSITORY": repo, "BUPSTASH_REPOSITORY_COMMAND": broken, "BUPSTASH_KEY": key},
		"command alone":                {"BUPSTASH_REPOSITORY_COMMAND": serveCopy(t, "0.12.1", repo), "BUPSTASH_KEY": key},
	} {
		if got := runCmd(t, env, "list"); got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	got := runCmd(t, map[string]string{"BUPSTASH_REPOSITORY_COMMAND": broken, "BUPSTASH_KEY": key}, "list", "--repo", repo)
	if got != want {
		t.Errorf("--repo over the command: %+v", got)
	}
	got = runCmd(t, map[string]string{"BUPSTASH_REPOSITORY_COMMAND": broken, "BUPSTASH_KEY": key}, "list")
	if got.code != exitFatal || !strings.Contains(got.stderr, "backupfs list: false: connection to the server lost") {
		t.Errorf("a command that fails: %+v", got)
	}
	got = runCmd(t, map[string]string{"BUPSTASH_REPOSITORY_COMMAND": `"unclosed`, "BUPSTASH_KEY": key}, "list")
	if got.code == 0 || !strings.Contains(got.stderr, "BUPSTASH_REPOSITORY_COMMAND") {
		t.Errorf("a command that does not parse: %+v", got)
	}
	got = runCmd(t, map[string]string{"BUPSTASH_REPOSITORY_COMMAND": serveCopy(t, "0.12.1", t.TempDir()), "BUPSTASH_KEY": key}, "list")
	if got.code != exitNoRepository || !strings.Contains(got.stderr, "is not an intialized repository") {
		t.Errorf("a server with no repository: %+v", got)
	}
}

// The configuration file: repo = "ssh://…" is kept as written,
// repository_command is a source, the remote settings apply unless a
// flag is given.
func TestRemoteConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	os.WriteFile(path, []byte(`
ssh_options = ["Port=2222"]
remote_refresh = "1m"
remote_idle_close = "10s"
remote_connections = 3
remote_cache_dir = "cache"
remote_cache_size = "1G"
remote_no_pull = true

[[bupstash]]
name = "far"
repo = "ssh://ann@backup.example/srv/repo"
key = "k.key"

[[bupstash]]
repository_command = "ssh -p 2222 backup.example bupstash serve /srv/other"
key = "k.key"
`), 0o600)
	mf := &mountFlags{config: path, changed: func(name string) bool { return name == "remote-connections" }}
	mf.remote = remoteFlags{connections: 5, cacheSize: defaultRemoteCacheSize, refresh: 1, idleClose: 1}
	e := &env{getenv: func(string) string { return "" }}
	plan, err := resolveMount(e, mf, filepath.Join(dir, "mnt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.bupstash) != 2 || plan.bupstash[0].loc.String() != "ssh://ann@backup.example/srv/repo" || plan.bupstash[0].name != "far" ||
		plan.bupstash[1].loc.Path != "ssh -p 2222 backup.example bupstash serve /srv/other" || plan.bupstash[1].name != "repo" {
		t.Fatalf("sources: %+v", plan.bupstash)
	}
	r := plan.remote
	if strings.Join(r.SSHOptions, ",") != "Port=2222" || r.Refresh.String() != "1m0s" || r.IdleClose.String() != "10s" ||
		r.Connections != 5 || r.CacheDir != filepath.Join(dir, "cache") || r.CacheSize != 1<<30 || !r.NoPull || r.CacheOptional {
		t.Fatalf("remote settings: %+v", r)
	}
	os.WriteFile(path, []byte("[[bupstash]]\nrepo = \"/x\"\nrepository_command = \"y\"\n"), 0o600)
	if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), "both repo and repository_command") {
		t.Fatalf("both: %v", err)
	}
}
