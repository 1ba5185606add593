package query_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
)

// genuineItems are items written for the comparison with genuine
// `bupstash list`: their "v" tags exercise glob corners, their times the
// age operators and the timestamp pseudo-tag in two time zones.
var genuineItems = []struct {
	ago  time.Duration // before the test starts; 0 with at set
	at   string        // fixed RFC 3339 time
	tags map[string]string
}{
	{at: "2001-02-03T04:05:06.789Z", tags: map[string]string{"v": "foo.tar", "host": "server1", "type": "backup"}},
	{at: "2020-06-15T23:30:00Z", tags: map[string]string{"v": "FOO.TAR", "host": "server2", "type": "backup"}},
	{at: "2020-06-16T00:30:00Z", tags: map[string]string{"v": "café", "host": "server1"}},
	{ago: time.Hour, tags: map[string]string{"v": "cafe", "type": "db"}},
	{ago: 3 * 24 * time.Hour, tags: map[string]string{"v": "a/b/c", "type": "db"}},
	{ago: 40 * 24 * time.Hour, tags: map[string]string{"v": "a/b", "host": "server3"}},
	{ago: 400 * 24 * time.Hour, tags: map[string]string{"v": "/abs/path.txt"}},
	{ago: 10 * time.Minute, tags: map[string]string{"v": "b/a", "a-b": "dash", "a_b": "under"}},
	{ago: 2 * time.Hour, tags: map[string]string{"v": "x*y"}},
	{ago: 5 * time.Hour, tags: map[string]string{"v": "x?y", "size": "own size tag", "timestamp": "own ts"}},
	{ago: 7 * time.Hour, tags: map[string]string{"v": "[x]", "id": "own id tag"}},
	{ago: 9 * time.Hour, tags: map[string]string{"v": "{a,b}"}},
	{ago: 11 * time.Hour, tags: map[string]string{"v": `back\slash`}},
	{ago: 13 * time.Hour, tags: map[string]string{"v": "with space"}},
	{ago: 15 * time.Hour, tags: map[string]string{"v": "line\nbreak"}},
	{ago: 17 * time.Hour, tags: map[string]string{"v": "a,b"}},
	{ago: 19 * time.Hour, tags: map[string]string{"v": "ümlaut"}},
	{ago: 21 * time.Hour, tags: map[string]string{"v": "-"}},
	{ago: 23 * time.Hour, tags: map[string]string{"v": "]"}},
	{ago: 25 * time.Hour, tags: map[string]string{"v": "a.b.c", "name": "db.sql"}},
	{ago: 27 * time.Hour, tags: map[string]string{"v": "ab", "name": "my files.tar"}},
	{ago: 29 * time.Hour, tags: map[string]string{"v": "abc"}},
	{ago: 31 * time.Hour, tags: map[string]string{"v": "•"}},
	{ago: 33 * time.Hour, tags: map[string]string{"v": "é"}},
	{ago: 35 * time.Hour, tags: map[string]string{"v": "ÿ"}},
	{ago: 37 * time.Hour, tags: map[string]string{"v": "Ā"}},
	{ago: 39 * time.Hour, tags: map[string]string{"v": "a/x/b"}},
	{ago: 41 * time.Hour, tags: map[string]string{"v": "and"}},
	{ago: 43 * time.Hour, tags: map[string]string{"v": "a"}},
}

// genuineQueries are the queries compared with genuine `bupstash list`;
// each is a list of command-line arguments.
var genuineQueries = [][]string{
	// Plain matching, globs, literals.
	{"v=foo.tar"}, {"v=*.tar"}, {"v=*.TAR"}, {"v==*.tar"}, {"v==x*y"}, {"v=x*y"}, {"v==x?y"}, {"v=x?y"},
	{"v==[x]"}, {"v=[x]"}, {"v=={a,b}"}, {"v==a,b"}, {`v==back\slash`}, {`v==back\\slash`}, {"v=[[]x[]]"}, {"v=*"}, {"v="}, {"nosuchtag=*"}, {"~nosuchtag=*"},
	{"v=?"}, {"v=??"}, {"v=caf?"}, {"v=caf??"}, {"v=caf[é]"}, {"v=caf[é][é]"}, {"v=[é][é]"}, {"v=?[é]"},
	{"v=[a-z]"}, {"v=[!a-z]"}, {"v=[^a-z]"}, {"v=[a-c][a-c]"}, {"v=[]]"}, {"v=[-]"}, {"v=[a-]"}, {"v=[!]]"},
	{"v=[é-ÿ]"}, {"v=[a-é]"}, {"v=[ÿ-Ā]"}, {"v=[!é]"}, {"v=[!é][!é]"},
	{"v={a,b}"}, {"v={a,b}*"}, {"v=[{]a,b[}]"}, {"v=a,b"}, {"v={ab,abc,}"}, {"v={,}"}, {"v={x*,c*}"},
	{"v=a/*"}, {"v=a/**"}, {"v=**/b"}, {"v=**/c"}, {"v=a/**/b"}, {"v=a/**/c"}, {"v=**"}, {"v=**b"}, {"v=a**"},
	{"v=*/*"}, {"v=/**"}, {"v=**/**"}, {"v={a/**,b/**}"}, {"v={**/b,x}"},
	{`v=back\\slash`}, {`v=back\slash`}, {`v=\*`}, {`v=x\*y`}, {`v=x\?y`}, {`v=\a\b`}, {`v=\[x\]`},
	{"v=with space"}, {"v=with", "space"}, {"v=line*"}, {"v=line?break"}, {"v=*\n*"},
	{"v=-"}, {"v=]"}, {"v=•"}, {"v==•"}, {"v=ümlaut"}, {"v=?mlaut"}, {"v=??mlaut"}, {"v=and"},
	{"v=a.b.c"}, {"v=*.c"}, {"v=*.b.*"},
	{"name=my files.tar"}, {"name=my*"}, {"name=*"}, {"~name=*"}, {"name==db.sql"},
	{"a-b=dash"}, {"a_b=under"}, {"a-b=*", "and", "a_b=*"},
	// Pseudo-tags: they replace own tags of the same name.
	{"size=own*"}, {"timestamp=own*"}, {"id=own*"}, {"size=*B"}, {"size=?B"}, {"size=*KiB"},
	{"timestamp=2001/*"}, {"timestamp=2020/06/15*"}, {"timestamp=2020/06/16*"}, {"timestamp=2020/06/16 0[05]:*"},
	{"timestamp=2001/02/03 04:05:06"}, {"timestamp==2001/02/03 04:05:06"},
	// Operators and precedence: `and` binds loosest.
	{"host=server1", "or", "host=server2"}, {"type=backup", "and", "host=server1"},
	{"host=server1", "or", "host=server2", "and", "type=backup"},
	{"type=backup", "and", "host=server1", "or", "host=server3"},
	{"[", "type=backup", "and", "host=server1", "]", "or", "host=server3"},
	{"[type=backup", "and", "host=server1", "]", "or", "host=server3"},
	{"~host=server1"}, {"~", "host=server1"}, {"~", "[", "host=server1", "or", "type=db", "]"},
	{"~", "~", "host=server1"}, {"~~host=server1"}, {"~host=*", "and", "~type=*"},
	{"host=*", "and", "~", "host=server1", "or", "host=server2"},
	{"type=db", "or", "type=backup", "or", "host=server3", "and", "~", "v=a*"},
	// Ages.
	{"older-than", "1h"}, {"newer-than", "1h"}, {"older-than", "30min"}, {"newer-than", "4h"},
	{"older-than", "2d"}, {"newer-than", "2d"}, {"older-than", "1 month"}, {"newer-than", "1month"},
	{"older-than", "1y"}, {"newer-than", "1y", "and", "older-than", "1d"}, {"older-than", "10years"},
	{"older-than", "1h 30m"}, {"older-than", "1h30m"}, {"newer-than", "90min"}, {"newer-than", "5400s"},
	{"older-than", "1w"}, {"newer-than", "2weeks"}, {"older-than", "20y"}, {"older-than", "1000y"},
	{"newer-than", "1 2h"}, {"older-than", "  3h  "}, {"newer-than", "36000000ms"},
	{"older-than", "1M"}, {"older-than", "1m"}, {"newer-than", "100000000000000000s"},
	{"~", "older-than", "1d"}, {"[", "older-than", "1d", "]"}, {"older-than=x"},
	// Syntax errors.
	{"v"}, {"v=x", "and"}, {"v=x", "or"}, {"and"}, {"[", "v=x"}, {"v=x", "]"}, {"v=x", "v=y"},
	{"v=[x"}, {"v={a"}, {"v=a}"}, {"v={{a}}"}, {"v=[z-a]"}, {`v=x\`}, {"older-than"}, {"older-than", "x"},
	{"older-than", "1"}, {"older-than", "1x"}, {"older-than", "h"}, {"older-than", "1.5h"},
	{"older-than", "99999999999999999999s"}, {"(v=x)"}, {"v=x", "not", "v=y"}, {"not", "v=x"},
	{"v==a{b"}, {`v==a\`}, {"=x"}, {"v!=x"}, {"vé=x"}, {"v=x", ""}, {""}, {"", "v=x"},
	// Ids.
	{"id=*"}, {"id=0*"}, {"id=[0-7]*"},
}

func TestMatchesGenuineBupstash(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	ctx := context.Background()
	dir := t.TempDir()
	start := time.Now()
	tr, err := testrepo.Create(filepath.Join(dir, "repo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, gi := range genuineItems {
		meta := testrepo.ItemMeta{Tags: gi.tags, NoDefaultTags: true}
		if gi.at != "" {
			meta.Timestamp, err = time.Parse(time.RFC3339Nano, gi.at)
			if err != nil {
				t.Fatal(err)
			}
		} else {
			meta.Timestamp = start.Add(-gi.ago)
		}
		if _, err := tr.AddRaw(ctx, strings.NewReader(fmt.Sprint("item ", i)), meta); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(dir, "primary.key")
	if err := tr.WriteKey(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	key, err := bupstashtest.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(ctx, filepath.Join(dir, "repo"), key, bupstash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != len(genuineItems) {
		t.Fatalf("listed %d items, wrote %d", len(l.Items), len(genuineItems))
	}

	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	g := genuine{t: t, bin: bin, repo: filepath.Join(dir, "repo"), key: keyFile, cache: filepath.Join(dir, "qcache")}
	for _, mode := range []struct {
		name string
		tz   string
		utc  bool
		loc  *time.Location
	}{
		{"local Asia/Kolkata", "Asia/Kolkata", false, kolkata},
		{"utc-timestamps", "Asia/Kolkata", true, time.UTC},
	} {
		t.Run(mode.name, func(t *testing.T) {
			g.t = t
			for _, args := range genuineQueries {
				now := time.Now()
				want, wantErr := g.list(mode.tz, mode.utc, false, args)
				q, err := query.Parse(args...)
				if (err != nil) != (wantErr != "") {
					t.Errorf("query %q: Parse error %v, bupstash %q", args, err, wantErr)
					continue
				}
				if err != nil {
					continue
				}
				var got []string
				for _, it := range l.Items {
					qi := &query.Item{ID: it.ID, Timestamp: it.Timestamp, Size: it.DataSize + it.IndexSize, Tags: it.Tags}
					if q.Match(qi, query.Env{Now: now, Location: mode.loc}) {
						got = append(got, it.ID.String())
					}
				}
				slices.Sort(got)
				if testing.Verbose() {
					t.Logf("%q: %d", args, len(got))
				}
				if !slices.Equal(got, want) {
					t.Errorf("query %q: selected %d items, bupstash %d:\n got  %s\n want %s", args, len(got), len(want), describe(l.Items, got), describe(l.Items, want))
				}
			}
		})
	}

	// With --query-encrypted every item is matched as one that cannot be
	// decrypted: only id and decryption-key-id, no ages.
	t.Run("query-encrypted", func(t *testing.T) {
		g.t = t
		keyID := key.PrimaryKeyID().String()
		for _, args := range [][]string{
			{"id=*"}, {"id=" + l.Items[3].ID.String()}, {"decryption-key-id=" + keyID}, {"decryption-key-id=0*"},
			{"v=*"}, {"~v=*"}, {"older-than", "1s"}, {"newer-than", "100y"}, {"~", "older-than", "1s"},
			{"id=[0-7]*", "or", "decryption-key-id=x"},
		} {
			want, wantErr := g.list("UTC", false, true, args)
			if wantErr != "" {
				t.Fatalf("query %q: %s", args, wantErr)
			}
			q, err := query.Parse(args...)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range l.Items {
				if q.MatchForeign(it.ID, key.PrimaryKeyID()) {
					got = append(got, it.ID.String())
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("query %q: got %v, bupstash %v", args, got, want)
			}
		}
	})
}

func describe(items []*bupstash.Item, ids []string) string {
	var parts []string
	for _, it := range items {
		if slices.Contains(ids, it.ID.String()) {
			parts = append(parts, fmt.Sprintf("%q", it.Tags["v"]))
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// genuine runs the genuine bupstash on a repository.
type genuine struct {
	t                *testing.T
	bin              string
	repo, key, cache string
}

// list runs `bupstash list --format jsonl1` and returns the selected ids,
// sorted, or the error bupstash printed.
func (g *genuine) list(tz string, utc, encrypted bool, args []string) ([]string, string) {
	g.t.Helper()
	cmdArgs := []string{"list", "--format", "jsonl1"}
	if utc {
		cmdArgs = append(cmdArgs, "--utc-timestamps")
	}
	if encrypted {
		cmdArgs = append(cmdArgs, "--query-encrypted")
	}
	cmd := exec.Command(g.bin, append(cmdArgs, args...)...)
	cmd.Env = []string{
		"BUPSTASH_REPOSITORY=" + g.repo, "BUPSTASH_KEY=" + g.key, "BUPSTASH_QUERY_CACHE=" + g.cache,
		"TZ=" + tz, "HOME=" + filepath.Dir(g.cache), "PATH=" + os.Getenv("PATH"),
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if stderr.Len() == 0 {
			g.t.Fatalf("bupstash list %q: %v", args, err)
		}
		return nil, strings.TrimSpace(stderr.String())
	}
	var ids []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var rec struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			g.t.Fatalf("bupstash list %q: %v in %q", args, err, sc.Text())
		}
		ids = append(ids, rec.ID)
	}
	slices.Sort(ids)
	return ids, ""
}

// The same comparison on the genuine 0.12.1 fixture (a copy: bupstash
// may write to what it opens), where items have real sizes.
func TestMatchesGenuineBupstashFixture(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	ctx := context.Background()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if out, err := exec.Command("cp", "-a", "../../../testdata/bupstash-0.12.1/repo", repo).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	keyFile, err := filepath.Abs("../../../testdata/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		t.Fatal(err)
	}
	key, err := bupstashtest.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(ctx, repo, key, bupstash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g := genuine{t: t, bin: bin, repo: repo, key: keyFile, cache: filepath.Join(dir, "qcache")}
	for _, args := range [][]string{
		{"size=16.06MiB"}, {"size=343B"}, {"size=*KiB", "or", "size=*MiB"}, {"size=1??B"}, {"name=tree.tar"},
		{"fixture=snapshot-*"}, {"name=*.tar", "and", "~fixture=multi-path"}, {"id=fdd75e29*"}, {"~name=*"},
		{"timestamp=2026/11/23*"}, {"newer-than", "100y", "and", "fixture=*stdin"}, {"older-than", "1s"},
	} {
		want, wantErr := g.list("UTC", false, false, args)
		if wantErr != "" {
			t.Fatalf("query %q: %s", args, wantErr)
		}
		q, err := query.Parse(args...)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, it := range l.Items {
			qi := &query.Item{ID: it.ID, Timestamp: it.Timestamp, Size: it.DataSize + it.IndexSize, Tags: it.Tags}
			if q.Match(qi, query.Env{Now: time.Now(), Location: time.UTC}) {
				got = append(got, it.ID.String())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("query %q: got %v, bupstash %v", args, got, want)
		}
	}
}
