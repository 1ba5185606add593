package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		"lrwxrwxrwx   1     0     0          0 1969-12-31 23:59 dangling -> does/not/exist\n",
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

// Every failure is one line on stderr naming what failed, with a non-zero
// exit status; never a panic trace.
func TestErrors(t *testing.T) {
	damaged := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(damaged, os.DirFS(repo012)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(damaged, "data", "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb"))

	keys := filepath.Join(testdata, "bupstash-0.12.1/keys")
	for _, tt := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no command", nil, 2, []string{"usage"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"no repository", []string{"list", "--key", primary012}, 2, []string{"BUPSTASH_REPOSITORY"}},
		{"no key", []string{"list", "--repo", repo012}, 2, []string{"BUPSTASH_KEY"}},
		{"bad flag", []string{"list", "--nope"}, 2, []string{"nope"}},
		{"missing key file", []string{"list", "--repo", repo012, "--key", "/nonexistent.key"}, 1, []string{"/nonexistent.key"}},
		{"not a repository", []string{"list", "--repo", testdata, "--key", primary012}, 1, []string{"not a bupstash repository"}},
		{"unknown item", []string{"cat", "--repo", repo012, "--key", primary012, "0123abcd"}, 1, []string{"no such item", "0123abcd"}},
		{"no such path", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "nope.txt"}, 1, []string{"nope.txt", "no such file"}},
		{"directory", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "sub"}, 1, []string{"is a directory"}},
		{"symlink", []string{"cat", "--repo", repo012, "--key", primary012, "fdd75e29", "link-to-a"}, 1, []string{"symbolic link", "a.txt"}},
		{"wrong key", []string{"cat", "--repo", repo012, "--key", filepath.Join(testdata, "bupstash-versions/v0.11.1/primary.key"), "fdd75e29"}, 1, []string{"no such item", "another primary key"}},
		{"list key", []string{"ls", "--repo", repo012, "--key", filepath.Join(keys, "list.key"), "fdd75e29"}, 1, []string{"list-only"}},
		{"list-contents key", []string{"cat", "--repo", repo012, "--key", filepath.Join(keys, "list-contents.key"), "fdd75e29", "a.txt"}, 1, []string{"only primary keys"}},
		{"put key", []string{"list", "--repo", repo012, "--key", filepath.Join(keys, "put.key")}, 1, []string{"put-only"}},
		{"missing chunk", []string{"cat", "--repo", damaged, "--key", primary012, "fdd75e29", "big.txt"}, 1,
			[]string{"big.txt", "item fdd75e29487490b4ef3eb1792242fc00", "53fa94e309e7b76cf0086d88141f82ea94a6927d4c639b218f71ddd90f2581fb", "missing"}},
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
			if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stderr has a trace: %s", r.stderr)
			}
			if tt.code == 1 && strings.Count(strings.TrimSpace(lastLines(r.stderr)), "\n") > 0 {
				t.Errorf("error is more than one line: %q", r.stderr)
			}
		})
	}
}

// lastLines drops warning log lines (they start with "time="), which
// precede the one error line.
func lastLines(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if !strings.HasPrefix(l, "time=") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
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
