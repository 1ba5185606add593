package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/internal/testtools"
)

// genuine runs genuine bupstash 0.12.1 on a copy of the 0.12.1 fixture,
// and backupfs on the same copy, with the same key and time zone.
type genuine struct {
	t              *testing.T
	bin, dir, repo string
	key, tz        string
}

func newGenuine(t *testing.T) *genuine {
	t.Helper()
	bin := testtools.Bupstash(t, "0.12.1")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.CopyFS(repo, os.DirFS(repo012)); err != nil {
		t.Fatal(err)
	}
	// A zone far from UTC, so that local and UTC timestamps differ.
	return &genuine{t: t, bin: bin, dir: dir, repo: repo, key: abs(t, primary012), tz: "Asia/Kolkata"}
}

// bupstash runs genuine bupstash ARGS in g.dir, with nothing from the
// test's environment but PATH.
func (g *genuine) bupstash(args ...string) (stdout, stderr string, code int) {
	g.t.Helper()
	cmd := exec.Command(g.bin, args...)
	cmd.Dir = g.dir
	cmd.Env = []string{"BUPSTASH_REPOSITORY=" + g.repo, "BUPSTASH_KEY=" + g.key,
		"BUPSTASH_QUERY_CACHE=" + filepath.Join(g.dir, "qcache"), "HOME=" + g.dir,
		"TZ=" + g.tz, "PATH=" + os.Getenv("PATH")}
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		g.t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

// backupfs runs backupfs ARGS in process, on the same repository, key and
// time zone.
func (g *genuine) backupfs(args ...string) result {
	g.t.Helper()
	return runCmd(g.t, map[string]string{"BUPSTASH_REPOSITORY": g.repo, "BUPSTASH_KEY": g.key, "TZ": g.tz}, args...)
}

var (
	genuineListID = regexp.MustCompile(`(?m)^id="([0-9a-f]{32})"`)
	ourListID     = regexp.MustCompile(`(?m)^([0-9a-f]{32})  `)
)

func listedIDs(re *regexp.Regexp, out string) []string {
	var ids []string
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// backupfs list QUERY selects what genuine bupstash list QUERY selects, in
// the same order, local time and UTC alike; and refuses what it refuses.
func TestListQueryMatchesBupstash(t *testing.T) {
	g := newGenuine(t)
	selected := 0 // items bupstash listed, in all
	for _, q := range [][]string{
		nil,
		{"name=tree.tar"},
		{"name=*.tar", "and", "fixture=snapshot-*"},
		{"~name=*"},
		{"fixture=stdin", "or", "fixture=empty-stdin", "and", "~size=0B"}, // and binds looser than or
		{"[", "fixture=stdin", "or", "name=s.txt", "]", "and", "~", "[", "size=17B", "]"},
		{"timestamp=2026/11/23*"},
		{"timestamp=2026/11/23 09:59:51"}, // Kolkata; no match in UTC
		{"timestamp=2026/11/23 04:29:51"}, // UTC; no match in Kolkata
		{"size=*MiB"}, {"size==17B"}, {"size=1?B", "or", "size=0B"},
		{"id=fdd7*"}, {"id=d5dbf2447bdcf7807b25732d40a02b35"}, {"id==D5DBF2447BDCF7807B25732D40A02B35"}, {"id=d5db"},
		{"older-than", "1d"}, {"newer-than", "1d"}, {"older-than", "100years"},
		{"name={sub,private}.tar"}, {"fixture=*-*", "and", "~fixture=*-stdin"},
		{"name=tree.tar", "and"}, {"name=["}, {"nosuchtag"}, {"older-than", "soon"},
	} {
		for _, utc := range []bool{false, true} {
			args := append([]string{"list"}, q...)
			if utc {
				args = append([]string{"list", "--utc-timestamps"}, q...)
			}
			want, stderr, code := g.bupstash(args...)
			got := g.backupfs(args...)
			if code != 0 {
				if got.code != exitUsage || strings.Count(got.stderr, "\n") != 1 || !strings.Contains(got.stderr, "query") {
					t.Errorf("%q: bupstash refuses it (%s), backupfs: exit %d %q", args, strings.TrimSpace(stderr), got.code, got.stderr)
				}
				continue
			}
			if got.code != 0 || got.stderr != "" {
				t.Errorf("%q: exit %d %q", args, got.code, got.stderr)
				continue
			}
			w, o := listedIDs(genuineListID, want), listedIDs(ourListID, got.stdout)
			if !slices.Equal(w, o) {
				t.Errorf("%q: backupfs lists %v, bupstash %v", args, o, w)
			}
			selected += len(w)
		}
	}
	if selected < 50 {
		t.Errorf("bupstash listed only %d items in all: are its lines still recognised?", selected)
	}
	// --query-encrypted: only the tags id and decryption-key-id are seen.
	for _, q := range [][]string{{"decryption-key-id=b4516a10*"}, {"id=4*"}, {"name=tree.tar"}, {"decryption-key-id=0c29*"}} {
		args := append([]string{"list", "--query-encrypted"}, q...)
		want, stderr, code := g.bupstash(args...)
		got := g.backupfs(args...)
		if code != 0 || got.code != 0 {
			t.Fatalf("%q: bupstash %d %s, backupfs %d %s", args, code, stderr, got.code, got.stderr)
		}
		if w, o := listedIDs(genuineListID, want), listedIDs(ourListID, got.stdout); !slices.Equal(w, o) {
			t.Errorf("%q: backupfs lists %v, bupstash %v", args, o, w)
		}
	}
}

// list --json names what bupstash list --format=jsonl1 names the same way,
// with the same values; tags are the item's own (bupstash adds the
// pseudo-tags there).
func TestListJSONFieldsAreBupstashs(t *testing.T) {
	g := newGenuine(t)
	want, stderr, code := g.bupstash("list", "--format=jsonl1")
	if code != 0 {
		t.Fatal(stderr)
	}
	got := g.backupfs("list", "--json")
	if got.code != 0 {
		t.Fatal(got.stderr)
	}
	wl, gl := strings.Split(strings.TrimSpace(want), "\n"), strings.Split(strings.TrimSpace(got.stdout), "\n")
	if len(wl) != len(gl) || len(gl) != 7 {
		t.Fatalf("%d lines, bupstash %d", len(gl), len(wl))
	}
	shared := 0
	for i := range wl {
		var w, o map[string]json.RawMessage
		if err := json.Unmarshal([]byte(wl[i]), &w); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(gl[i]), &o); err != nil {
			t.Fatal(err)
		}
		for k, ov := range o {
			wv, ok := w[k]
			switch {
			case k == "tags":
				var wt, ot map[string]string
				json.Unmarshal(wv, &wt)
				json.Unmarshal(ov, &ot)
				for _, pseudo := range []string{"id", "size", "timestamp"} {
					delete(wt, pseudo)
				}
				if len(ot) == 0 || !maps2Equal(wt, ot) {
					t.Errorf("item %d: tags %v, bupstash's own %v", i, ot, wt)
				}
			case k == "timestamp" || k == "kind":
				// backupfs's own.
			case !ok:
				t.Errorf("item %d: field %q is not bupstash's", i, k)
			case string(compact(t, wv)) != string(compact(t, ov)):
				t.Errorf("item %d: %s = %s, bupstash %s", i, k, ov, wv)
			default:
				shared++
			}
		}
		for _, k := range []string{"data_hash_key_part", "index_hash_key_part"} {
			if _, ok := o[k]; ok {
				t.Errorf("key material %s in the output", k)
			}
		}
	}
	if shared != 4*8+3*7 { // index_tree only for the 4 snapshots
		t.Errorf("only %d shared field values", shared)
	}
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func compact(t *testing.T, m json.RawMessage) []byte {
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return b
}

// ls --json is bupstash list-contents --format=jsonl1, byte for byte
// (names that are not UTF-8 as byte arrays), but for the root entry ".",
// which ls never lists.
func TestLsJSONIsListContents(t *testing.T) {
	g := newGenuine(t)
	for _, id := range []string{"fdd75e29487490b4ef3eb1792242fc00", "4d0adcd0cbd80b68cb20bcfa49edc161", "7f3491e57862cd4bef370cafbb47b1c4", "48a22dd86a5d60520ab4a0f6f1c07bef"} {
		want, stderr, code := g.bupstash("list-contents", "--format=jsonl1", "id="+id)
		if code != 0 {
			t.Fatal(stderr)
		}
		want = want[strings.IndexByte(want, '\n')+1:]
		got := g.backupfs("ls", "-R", "--json", id)
		if got.code != 0 || got.stdout != want {
			t.Errorf("ls -R --json %s (exit %d %s):\n%s\nbupstash:\n%s", id, got.code, got.stderr, got.stdout, want)
		}
	}
	got := g.backupfs("ls", "--json", "fdd75e29", "caf\xe9")
	if !strings.HasPrefix(got.stdout, `{"mode":33188,"size":12,"path":[99,97,102,233],`) {
		t.Errorf("a name that is not UTF-8: %q", got.stdout)
	}
}

// ls counts links inside the snapshot, as the mount does: hard1 was
// saved with 2 links, but item 48a22dd8 holds only one of its names. Its
// --json keeps bupstash's meaning, the saved count.
func TestLsLinksInsideSnapshot(t *testing.T) {
	env := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": primary012}
	r := runCmd(t, env, "ls", "48a22dd8")
	if r.code != 0 || !regexp.MustCompile(`(?m)^-rw-r--r--   1 .* hard1$`).MatchString(r.stdout) {
		t.Fatalf("ls 48a22dd8: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, env, "ls", "--json", "48a22dd8", "hard1")
	if !strings.Contains(r.stdout, `"nlink":2,`) {
		t.Fatalf("ls --json: %q", r.stdout)
	}
	// In fdd75e29 both names are there.
	r = runCmd(t, env, "ls", "fdd75e29")
	if !regexp.MustCompile(`(?m)^-rw-r--r--   2 .* hard2$`).MatchString(r.stdout) {
		t.Fatalf("ls fdd75e29: %q", r.stdout)
	}
}

// ls and cat name their item by id, prefix, id=, or any query that
// matches exactly one item; anything else is one line, with the status
// of the exit-status table: 2 for a query that does not parse, 1 for no
// item or several.
func TestItemByQuery(t *testing.T) {
	env := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": primary012}
	for _, args := range [][]string{
		{"fdd75e29", "a.txt"},
		{"FDD75E29", "a.txt"},
		{"id=fdd75e29487490b4ef3eb1792242fc00", "a.txt"},
		{"id==fdd75e29487490b4ef3eb1792242fc00", "a.txt"},
		{"id=fdd7*", "a.txt"},
		{"fixture=snapshot-xattrs", "a.txt"},
		{"name=tree.tar", "and", "fixture=snapshot-*", "a.txt"},
		{"name=tree.tar", "and", "~", "fixture=multi-path", "/a.txt"},
		{"[", "name=tree.tar", "]", "and", "size=*MiB", "a.txt"},
	} {
		r := runCmd(t, env, append([]string{"cat"}, args...)...)
		if r.code != 0 || r.stdout != "hello\n" {
			t.Errorf("cat %q: exit %d %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
	// A query of several words with no PATH, for ls and a raw item's cat.
	if r := runCmd(t, env, "ls", "fixture=snapshot-none", "and", "name=sub.tar"); r.code != 0 || !strings.HasSuffix(r.stdout, " s.txt\n") {
		t.Errorf("ls by query: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, env, "cat", "fixture=stdin", "or", "fixture=nothing"); r.code != 0 || r.stdout != "hello from stdin\n" {
		t.Errorf("cat by query: %d %q %q", r.code, r.stdout, r.stderr)
	}
	for _, tt := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"cat", "4", "a.txt"}, exitFatal, []string{"ambiguous", "4d0adcd0cbd80b68cb20bcfa49edc161", "48a22dd86a5d60520ab4a0f6f1c07bef"}},
		{[]string{"ls", "name=tree.tar"}, exitFatal, []string{`query "name=tree.tar" matches several items`, "fdd75e29487490b4ef3eb1792242fc00", "48a22dd86a5d60520ab4a0f6f1c07bef"}},
		{[]string{"cat", "name=*", "a.txt"}, exitFatal, []string{"matches several items", " and 3 more"}},
		{[]string{"cat", "name=nope", "a.txt"}, exitFatal, []string{`no item matches query "name=nope"`}},
		{[]string{"cat", "id=fdd75e29", "a.txt"}, exitFatal, []string{`no item matches query "id=fdd75e29"`, "as fdd75e29, or as the glob id=fdd75e29*"}},
		{[]string{"cat", "id=0123456789abcdef0123456789abcdef"}, exitFatal, []string{"no such item"}},
		{[]string{"cat", "name=[", "a.txt"}, exitUsage, []string{"syntax error", "glob"}},
		{[]string{"cat", "name=tree.tar", "and", "a.txt"}, exitUsage, []string{"syntax error"}},
		{[]string{"cat", "fdd75e29", "a.txt", "b.txt"}, exitUsage, []string{"want ITEM [PATH]"}},
		{[]string{"cat", "name=sub.tar", "a.txt", "b.txt"}, exitUsage, []string{"syntax error"}},
	} {
		r := runCmd(t, env, tt.args...)
		if r.code != tt.code || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, want %d; stderr %q", tt.args, r.code, tt.code, r.stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%q: stderr %q lacks %q", tt.args, r.stderr, w)
			}
		}
	}
	// Another key's items: a query sees none of them, and says why.
	other := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": filepath.Join(testdata, "bupstash-versions/v0.11.1/primary.key")}
	if r := runCmd(t, other, "cat", "name=tree.tar"); r.code != exitWrongKey || !strings.Contains(r.stderr, "made under primary key b4516a10824916f79b9e909e0f8d42b8") {
		t.Errorf("another key: %d %q", r.code, r.stderr)
	}
}

// An item that cannot be read may be the one a query wants: when nothing
// readable matches, that is the answer (exit 3); when one does, a warning.
func TestQueryWithDamagedItems(t *testing.T) {
	dir := copyRepo(t, repo012)
	flipByte(t, filepath.Join(dir, "items", "d5dbf2447bdcf7807b25732d40a02b35"), 100)
	env := map[string]string{"BUPSTASH_REPOSITORY": dir, "BUPSTASH_KEY": primary012}
	r := runCmd(t, env, "cat", "fixture=stdin")
	if r.code != exitDamaged || !strings.Contains(r.stderr, `no item matches query "fixture=stdin" among the readable items`) ||
		!strings.Contains(r.stderr, "d5dbf2447bdcf7807b25732d40a02b35") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("%d %q", r.code, r.stderr)
	}
	r = runCmd(t, env, "cat", "fixture=file-lz4")
	if r.code != 0 || r.stdout != "sub file\n" || !strings.Contains(r.stderr, "warning: 1 of 7 items could not be read") {
		t.Errorf("%d %q %q", r.code, r.stdout, r.stderr)
	}
	// list QUERY lists what it can, then says what it could not read.
	r = runCmd(t, env, "list", "name=*")
	if r.code != exitDamaged || strings.Count(r.stdout, "\n") != 5 {
		t.Errorf("list: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// list --query-encrypted also lists the items of other keys, by id and
// key id, which a query can select by those alone.
func TestListQueryEncryptedShowsOtherKeys(t *testing.T) {
	dir := copyRepo(t, repo012)
	for _, id := range []string{"21005b7805101fabe090ee972e7251fe", "2344665cf5b0c7a8cd4eee53844cd8bf"} {
		b, err := os.ReadFile(filepath.Join(testdata, "bupstash-versions/v0.11.1/repo/items", id))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "items", id), b, 0o644)
	}
	env := map[string]string{"BUPSTASH_REPOSITORY": dir, "BUPSTASH_KEY": primary012}
	r := runCmd(t, env, "list", "--query-encrypted", "decryption-key-id=0c29c326*")
	want := "2344665cf5b0c7a8cd4eee53844cd8bf  -                     -             -  decryption-key-id=0c29c326ba7cc2e9d111980e8aa1a403\n"
	if r.code != 0 || !strings.Contains(r.stdout, want) || strings.Count(r.stdout, "\n") != 2 || r.stderr != "" {
		t.Fatalf("%d\n%s%q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, env, "list", "--query-encrypted", "--json", "id=2344*")
	if r.stdout != `{"id":"2344665cf5b0c7a8cd4eee53844cd8bf","decryption_key_id":"0c29c326ba7cc2e9d111980e8aa1a403"}`+"\n" {
		t.Fatalf("%q", r.stdout)
	}
}
