package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"
	"lukechampine.com/blake3"
)

const testdata = "../../testdata"

var (
	repo012    = filepath.Join(testdata, "bupstash-0.12.1/repo")
	primary012 = filepath.Join(testdata, "bupstash-0.12.1/keys/primary.key")
)

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, environ map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, func(k string) string { return environ[k] })
	return result{code, out.String(), errb.String()}
}

func TestList(t *testing.T) {
	r := runCmd(t, nil, "list", "--repo", repo012, "--key", primary012)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "fdd75e29487490b4ef3eb1792242fc00  2026-11-23T04:29:51Z  tree") ||
		!strings.Contains(lines[0], "fixture=snapshot-xattrs name=tree.tar") {
		t.Fatalf("list:\n%s", r.stdout)
	}
}

func TestListJSON(t *testing.T) {
	// Repository and key from the environment, as with bupstash.
	env := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": primary012}
	r := runCmd(t, env, "list", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var n int
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rec struct {
			ID        string            `json:"id"`
			Timestamp string            `json:"timestamp"`
			Tags      map[string]string `json:"tags"`
			DataSize  *uint64           `json:"data_size"`
			Kind      string            `json:"kind"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse(time.RFC3339, rec.Timestamp); err != nil || len(rec.ID) != 32 || rec.DataSize == nil ||
			rec.Tags["fixture"] == "" || (rec.Kind != "tree" && rec.Kind != "raw") {
			t.Fatalf("bad record %s", line)
		}
		n++
	}
	if n != 7 {
		t.Fatalf("%d records", n)
	}
}

func TestLs(t *testing.T) {
	r := runCmd(t, nil, "ls", "--repo", repo012, "--key", primary012, "fdd75e29")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"-rw-r--r--   1     0     0          6 2001-02-03 04:05 a.txt\n",
		"crw-r--r--   1     0     0       1, 3 ",
		"lrwxrwxrwx   1     0     0         14 1969-12-31 23:59 dangling -> does/not/exist\n", // size: the target's length, as ls -l
		"-rwsr-xr-x   1     0     0         10 ",
		"drwx------   2     0     0          0 ",
		" caf\xe9\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ls output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "s.txt") {
		t.Error("ls without -R listed a subdirectory's files")
	}
	// Flags after the arguments, a path, recursion.
	r = runCmd(t, nil, "ls", "fdd75e29", "sub", "-R", "--repo", repo012, "--key", primary012)
	if r.code != 0 || !strings.Contains(r.stdout, " nested/deeper/file.txt\n") || !strings.Contains(r.stdout, " s.txt\n") {
		t.Fatalf("ls -R sub: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Paths are cleaned as a shell would.
	for _, p := range []string{"sub//nested", "/sub/nested/", "./sub/./nested", "sub/../sub/nested"} {
		r = runCmd(t, nil, "ls", "--repo", repo012, "--key", primary012, "fdd75e29", p)
		if r.code != 0 || !strings.Contains(r.stdout, " deeper\n") || r.stderr != "" {
			t.Errorf("ls %s: %d %q %q", p, r.code, r.stdout, r.stderr)
		}
	}
	r = runCmd(t, nil, "ls", "--repo", repo012, "--key", primary012, "--json", "fdd75e29", "a.txt")
	var rec map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil || rec["path"] != "a.txt" || rec["xattrs"] == nil {
		t.Fatalf("ls --json a.txt: %s %v", r.stdout, err)
	}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestCat(t *testing.T) {
	for _, tt := range []struct {
		args []string
		sha  string
	}{
		{[]string{"fdd75e29", "big.txt"}, "c75927a789339c0a3b2356a51e58034fff65652da125d215ff6a37992b94a24e"},
		{[]string{"fdd75e29", "/sparse.bin"}, "aa6872113164993086a16d25f22ae6bfcdc09d0a631f95d3cd37f9ed16e0a1d9"},
		{[]string{"fdd75e29"}, "f5117d50b16a1e3163a1c0613b4eb2e08574c4153055c6187c293d6c412b191c"}, // bupstash get's tar
		{[]string{"a9efc039"}, "8f7f167a86b0dd98a6e3c2e92750b1b41c1b42d5b114d0d7d8498993bd8559a2"},
		{[]string{"a9efc039", "s.txt"}, "8f7f167a86b0dd98a6e3c2e92750b1b41c1b42d5b114d0d7d8498993bd8559a2"},
		{[]string{"b5576b67"}, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	} {
		r := runCmd(t, nil, append([]string{"cat", "--repo", repo012, "--key", primary012}, tt.args...)...)
		if r.code != 0 || sha(r.stdout) != tt.sha {
			t.Errorf("cat %v: exit %d, sha256 %s, stderr %q", tt.args, r.code, sha(r.stdout), r.stderr)
		}
	}
}

// Every failure is exactly one line on stderr naming what failed, with a
// non-zero exit status; never a panic trace, never log lines around it.
func TestErrors(t *testing.T) {
	damaged := copyRepo(t, repo012)
	os.Remove(filepath.Join(damaged, "data", "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb"))
	badItem := copyRepo(t, repo012)
	flipByte(t, filepath.Join(badItem, "items", "d5dbf2447bdcf7807b25732d40a02b35"), 100)
	noSchema := copyRepo(t, repo012)
	os.Remove(filepath.Join(noSchema, "meta", "schema_version"))

	keys := filepath.Join(testdata, "bupstash-0.12.1/keys")
	otherKey := filepath.Join(testdata, "bupstash-versions/v0.11.1/primary.key")
	const thisKey, otherKeyID = "b4516a10824916f79b9e909e0f8d42b8", "0c29c326ba7cc2e9d111980e8aa1a403"
	for _, tt := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"no repository", []string{"list", "--key", primary012}, 2, []string{"BUPSTASH_REPOSITORY"}},
		{"no key", []string{"list", "--repo", repo012}, 2, []string{"BUPSTASH_KEY"}},
		{"bad flag", []string{"list", "--nope"}, 2, []string{"nope"}},
		{"missing key file", []string{"list", "--repo", repo012, "--key", "/nonexistent.key"}, 1, []string{"/nonexistent.key"}},
		{"not a repository", []string{"list", "--repo", testdata, "--key", primary012}, exitNoRepository, []string{"not a bupstash repository", "no tx.lock", "bupstash init"}},
		{"no schema version", []string{"list", "--repo", noSchema, "--key", primary012}, exitNoRepository, []string{"not a bupstash repository", "no meta/schema_version", "bupstash init"}},
		{"no such directory", []string{"list", "--repo", "/nonexistent/repo", "--key", primary012}, exitNoRepository, []string{"/nonexistent/repo", "no such file"}},
		{"unreachable remote repository", []string{"list", "--repo", "ssh://backup.invalid/srv/repo", "--key", primary012, "--remote-cache-size", "0"}, 1, []string{"ssh://backup.invalid/srv/repo", "connection to the server lost", "backup.invalid"}},
		{"unknown item", []string{"cat", "--repo", repo012, "--key", primary012, "0123abcd"}, 1, []string{"no such item", "0123abcd"}},
		{"no such path", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "nope.txt"}, 1, []string{"nope.txt", "no such file"}},
		{"directory", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "sub"}, 1, []string{"is a directory"}},
		{"symlink", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "link-to-a"}, 1, []string{"symbolic link", "a.txt"}},
		{"wrong key, list", []string{"list", "--repo", repo012, "--key", otherKey}, exitWrongKey,
			[]string{"no item can be read with this key", "7 items", "made under primary key " + thisKey, "this key belongs to primary key " + otherKeyID}},
		{"wrong key, cat", []string{"cat", "--repo", repo012, "--key", otherKey, "fdd75e29"}, exitWrongKey,
			[]string{"item fdd75e29487490b4ef3eb1792242fc00 was made under primary key " + thisKey, "this key belongs to primary key " + otherKeyID}},
		{"wrong key, ls", []string{"ls", "--repo", repo012, "--key", otherKey, "a9ef"}, exitWrongKey,
			[]string{"item a9efc039bcd20bcdb8d0a8b5f047f7a3 was made under primary key " + thisKey, otherKeyID}},
		{"list key", []string{"ls", "--repo", repo012, "--key", filepath.Join(keys, "list.key"), "fdd75e29"}, exitWrongKey, []string{"item fdd75e29487490b4ef3eb1792242fc00", "list-only"}},
		{"list-contents key, file", []string{"cat", "--repo", repo012, "--key", filepath.Join(keys, "list-contents.key"), "fdd75e29", "a.txt"}, exitWrongKey,
			[]string{"item fdd75e29487490b4ef3eb1792242fc00", "a.txt", "only primary keys"}},
		{"list-contents key, snapshot", []string{"cat", "--repo", repo012, "--key", filepath.Join(keys, "list-contents.key"), "fdd75e29"}, exitWrongKey,
			[]string{"item fdd75e29487490b4ef3eb1792242fc00", "only primary keys"}},
		{"list-contents key, raw item", []string{"cat", "--repo", repo012, "--key", filepath.Join(keys, "list-contents.key"), "d5dbf244"}, exitWrongKey,
			[]string{"item d5dbf2447bdcf7807b25732d40a02b35", "only primary keys"}},
		{"put key", []string{"list", "--repo", repo012, "--key", filepath.Join(keys, "put.key")}, exitWrongKey, []string{"put-only"}},
		{"missing chunk", []string{"cat", "--repo", damaged, "--key", primary012, "fdd75e29", "big.txt"}, exitDamaged,
			[]string{`item fdd75e29487490b4ef3eb1792242fc00: "big.txt": data leaf 0, chunk 53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb`, "missing"}},
		{"missing chunk, tar", []string{"cat", "--repo", damaged, "--key", primary012, "fdd75e29"}, exitDamaged,
			[]string{`item fdd75e29487490b4ef3eb1792242fc00: "a.txt": data leaf 0, chunk 53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb`, "missing"}},
		{"damaged item, list", []string{"list", "--repo", badItem, "--key", primary012}, exitDamaged,
			[]string{"1 of 7 items could not be read: item d5dbf2447bdcf7807b25732d40a02b35: "}},
		{"damaged item, cat", []string{"cat", "--repo", badItem, "--key", primary012, "d5db"}, exitDamaged,
			[]string{"item d5dbf2447bdcf7807b25732d40a02b35: "}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, nil, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if n := strings.Count(r.stderr, "\n"); n != 1 || !strings.HasSuffix(r.stderr, "\n") || !strings.HasPrefix(r.stderr, "backupfs") {
				t.Errorf("stderr is not exactly one line: %q", r.stderr)
			}
			// Each thing is said once: the item id, the path.
			if id := itemIDIn(r.stderr); id != "" && strings.Count(r.stderr, id) != 1 {
				t.Errorf("stderr names item %s more than once: %q", id, r.stderr)
			}
		})
	}
	// The usage text is the one multi-line message, and only on request
	// or when no command is given.
	if r := runCmd(t, nil); r.code != 2 || !strings.Contains(r.stderr, "usage") {
		t.Errorf("no command: %d %q", r.code, r.stderr)
	}
}

// itemIDIn returns the first 32-hex-digit item id in s, if any.
func itemIDIn(s string) string {
	if i := strings.Index(s, "item "); i >= 0 && len(s) >= i+5+32 {
		id := s[i+5 : i+5+32]
		if strings.Trim(id, "0123456789abcdef") == "" {
			return id
		}
	}
	return ""
}

func copyRepo(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func flipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Items made under another primary key are summed up in one notice line;
// the readable ones are listed and the command succeeds.
func TestListSkipsOtherKeysWithOneNotice(t *testing.T) {
	dir := copyRepo(t, repo012)
	for _, id := range []string{"21005b7805101fabe090ee972e7251fe", "2344665cf5b0c7a8cd4eee53844cd8bf"} {
		b, err := os.ReadFile(filepath.Join(testdata, "bupstash-versions/v0.11.1/repo/items", id))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "items", id), b, 0o644)
	}
	r := runCmd(t, nil, "list", "--repo", dir, "--key", primary012)
	want := "backupfs: warning: skipped 2 of 9 items: made under primary key 0c29c326ba7cc2e9d111980e8aa1a403; " +
		"this key belongs to primary key b4516a10824916f79b9e909e0f8d42b8\n"
	if r.code != 0 || r.stderr != want || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr %q, want %q", r.code, r.stdout, r.stderr, want)
	}
	// cat of one of them says whose it is.
	r = runCmd(t, nil, "cat", "--repo", dir, "--key", primary012, "2344")
	if r.code != exitWrongKey || !strings.Contains(r.stderr, "item 2344665cf5b0c7a8cd4eee53844cd8bf was made under primary key 0c29c326ba7cc2e9d111980e8aa1a403") {
		t.Fatalf("cat: %d %q", r.code, r.stderr)
	}
}

// A pending transaction is one plain notice line, not a log record.
func TestHotJournalIsOneNotice(t *testing.T) {
	dir := copyRepo(t, repo012)
	wal := []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 1} // Begin{2}, End
	sum := blake3.Sum256(wal)
	if err := os.WriteFile(filepath.Join(dir, "tx.wal"), append(wal, sum[:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, nil, "list", "--repo", dir, "--key", primary012)
	want := "backupfs: warning: repository has an unfinished transaction; reading it as if it were recovered (repo " + dir + ")\n"
	if r.code != 0 || r.stderr != want || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
}

func TestLineHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(newLineHandler(&b, slog.LevelWarn))
	log.Info("hidden")
	log.Warn("lock refused", "repo", "/r", "err", errors.New("no locks\nhere"))
	log.With("source", "s").WithGroup("g").Error("bad", "n", 3)
	want := "backupfs: warning: lock refused: no locks\\nhere (repo /r)\n" +
		"backupfs: error: bad (source s, g.n 3)\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "256M": 256 << 20, "1G": 1 << 30, "64MiB": 64 << 20, "1.5k": 1536} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1Q"} {
		if _, err := parseByteSize(bad); err == nil {
			t.Errorf("parseByteSize(%q) accepted", bad)
		}
	}
	if humanBytes(16842989+1753) != "16.06MiB" || humanBytes(17) != "17B" {
		t.Errorf("humanBytes: %s %s", humanBytes(16842989+1753), humanBytes(17))
	}
}

// A remote repository in the configuration file is kept as written (and
// then refused as remote), not turned into a path next to the file.
func TestConfigKeepsRepositoryURLs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("[[bupstash]]\nrepo = \"ssh://host/srv/repo\"\nkey = \"k.key\"\n"), 0o600)
	c, err := loadConfig(path, true)
	if err != nil || c.Bupstash[0].Repo != "ssh://host/srv/repo" || c.Bupstash[0].Key != filepath.Join(filepath.Dir(path), "k.key") {
		t.Fatalf("%+v, %v", c, err)
	}
}

// Items of metadata format 1 with format-1 index entries (Bupstash 0.8 and
// older), which no fixture has, through every command.
func TestOldFormats(t *testing.T) {
	f := bupstashtest.Create(t, filepath.Join(t.TempDir(), "repo"), primary012, 5)
	content := bytes.Repeat([]byte("0123456789"), 30000)
	link := "f.bin"
	id := f.AddSnapshot(bupstashtest.Snapshot{
		Item:        bupstashtest.Item{Format: 1, Timestamp: time.Date(2019, 5, 6, 7, 8, 9, 0, time.UTC), Tags: map[string]string{"name": "old.tar"}},
		EntryFormat: 1,
		Entries: []bupstashtest.Entry{
			{Path: ".", Mode: bupstash.ModeDir | 0o755, Nlink: 3},
			{Path: "d", Mode: bupstash.ModeDir | 0o755, Nlink: 2},
			{Path: "l", Mode: bupstash.ModeSymlink | 0o777, Link: &link, Nlink: 1},
			{Path: "d/f.bin", Mode: bupstash.ModeRegular | 0o640, Content: content, Nlink: 1, Mtime: 1557126489},
			{Path: "d/g", Mode: bupstash.ModeRegular | 0o644, Content: []byte("gee\n"), Nlink: 1},
		},
		LeafSize: 65536, IndexLeafSize: 50,
	})
	args := func(a ...string) []string {
		return append([]string{a[0], "--repo", f.Dir, "--key", primary012}, a[1:]...)
	}
	r := runCmd(t, nil, args("list")...)
	if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, id.String()+"  2019-05-06T07:08:09Z  tree") {
		t.Fatalf("list: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, nil, args("ls", "-R", id.String()[:8])...)
	for _, want := range []string{"-rw-r-----   1     0     0     300000 2019-05-06 07:08 d/f.bin\n", " d/g\n", " 5 1970-01-01 00:00 l -> f.bin\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("ls -R lacks %q: %d %q %q", want, r.code, r.stdout, r.stderr)
		}
	}
	r = runCmd(t, nil, args("cat", id.String(), "d/f.bin")...)
	if r.code != 0 || r.stdout != string(content) {
		t.Fatalf("cat d/f.bin: %d, %d bytes, %q", r.code, len(r.stdout), r.stderr)
	}
	r = runCmd(t, nil, args("cat", id.String())...)
	tr := tar.NewReader(strings.NewReader(r.stdout))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if r.code != 0 || strings.Join(names, " ") != ". d l d/f.bin d/g" {
		t.Fatalf("cat (tar): %d %v %q", r.code, names, r.stderr)
	}
}

// Items whose hash trees claim impossible leaf counts: one line of error
// each, never a crash (a count of 2^45 used to abort the process).
func TestForgedLeafCounts(t *testing.T) {
	f := bupstashtest.Create(t, filepath.Join(t.TempDir(), "repo"), primary012, 8)
	l0 := f.DataLeaf([]byte("leaf zero"), bupstash.CompressionNone)
	n1 := f.Node(bupstashtest.NodeEntry{Count: 1, Addr: l0})
	node := func(n uint64) bupstash.Address {
		return f.Node(bupstashtest.NodeEntry{Count: 1, Addr: n1}, bupstashtest.NodeEntry{Count: n, Addr: n1})
	}
	impossible := f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 2, DataChunkCount: 1<<45 + 1, Address: node(1 << 45)}, DataSize: 9})
	liar := f.AddItem(bupstashtest.Item{DataHTree: bupstash.HTreeMeta{Height: 2, DataChunkCount: 1<<33 + 1, Address: node(1 << 33)}, DataSize: 1 << 34})
	args := func(a ...string) []string {
		return append([]string{a[0], "--repo", f.Dir, "--key", primary012}, a[1:]...)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args("list"), "1 of 2 items could not be read: item " + impossible.String() + ": corrupt or tampered data: impossible tree shape (height 2, 35184372088833 chunks)"},
		{args("cat", impossible.String()), "item " + impossible.String() + ": corrupt"},
		{args("cat", liar.String()), "item " + liar.String() + ": data interior node"},
	} {
		r := runCmd(t, nil, tt.args...)
		if r.code != exitDamaged || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q, want one line with %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}
