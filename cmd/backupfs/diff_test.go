package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// backupfs diff prints, byte for byte, what genuine bupstash diff prints
// for the same two sides, and exits as diff(1) does. Items are named by
// id= for bupstash and every way backupfs takes them; live directories
// are a snapshot restored by genuine bupstash, then changed.
func TestDiffMatchesBupstash(t *testing.T) {
	g := newGenuine(t)
	const (
		xattrs = "fdd75e29487490b4ef3eb1792242fc00"
		sub    = "4d0adcd0cbd80b68cb20bcfa49edc161"
		multi  = "48a22dd86a5d60520ab4a0f6f1c07bef"
	)
	if _, stderr, code := g.bupstash("restore", "--into", mkdir(t, filepath.Join(g.dir, "live")), "id="+xattrs); code != 0 {
		t.Fatal(stderr)
	}
	t.Chdir(g.dir) // for ./live, on both sides

	// check runs both; ours may name the sides differently.
	lines := 0
	check := func(genuineArgs, ourArgs []string) {
		t.Helper()
		want, stderr, code := g.bupstash(append([]string{"diff"}, genuineArgs...)...)
		got := g.backupfs(append([]string{"diff"}, ourArgs...)...)
		if code != 0 {
			t.Fatalf("bupstash diff %q: %s", genuineArgs, stderr)
		}
		wantCode := 0
		if want != "" {
			wantCode = 1
		}
		if got.stdout != want || got.code != wantCode || got.stderr != "" {
			t.Errorf("backupfs diff %q: exit %d (want %d), stderr %q\n%s--- bupstash diff %q:\n%s", ourArgs, got.code, wantCode, got.stderr, got.stdout, genuineArgs, want)
		}
		lines += strings.Count(want, "\n")
	}
	same := func(args ...string) { check(args, args) }

	for _, opts := range [][]string{nil, {"--relaxed"}, {"--ignore", "times,inode"}, {"-i", "file-content,perms"}, {"--format", "jsonl1"}, {"--utc-timestamps"}} {
		o := func(a ...string) []string { return append(append([]string{}, opts...), a...) }
		same(o("id="+xattrs, "::", "id="+sub)...)
		check(o("id="+xattrs, "::", "id="+multi), o("fdd75e29", "::", "fixture=multi-path"))
		check(o("id="+sub, "::", "id="+xattrs), o("name=sub.tar", "and", "newer-than", "100years", "::", "id=fdd7*"))
		same(o("id="+xattrs, "::", "./live")...)
	}
	// --json is jsonl1.
	check([]string{"--format", "jsonl1", "id=" + sub, "::", "id=" + multi}, []string{"--json", "4d0a", "::", "48a2"})
	same("--left-pick", "sub", "id="+xattrs, "::", "id="+sub)
	same("--relaxed", "--right-pick", "sub", "id="+sub, "::", "./live")

	// Identical trees: nothing printed, exit 0.
	same("id="+xattrs, "::", "id="+xattrs)
	same("--relaxed", "--xattrs", "id="+xattrs, "::", "./live")
	same("./live/sub", "::", filepath.Join(g.dir, "live", "sub"))

	// Production changed since the backup.
	if err := os.WriteFile(filepath.Join(g.dir, "live", "a.txt"), []byte("hello, changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(g.dir, "live", "after-big.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "live", "caf\xe9-new"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	same("--relaxed", "id="+xattrs, "::", "./live")
	check([]string{"--relaxed", "--format", "jsonl1", "./live", "::", "id=" + xattrs}, []string{"--relaxed", "--json", "./live", "::", "fdd7"})
	if lines < 150 {
		t.Errorf("only %d lines of differences in all", lines)
	}
}

// Trouble is exit status 2 (or the status of its kind), one line, and no
// output: diff(1)'s 1 means only "they differ".
func TestDiffTrouble(t *testing.T) {
	env := map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": primary012}
	keys := filepath.Join(testdata, "bupstash-0.12.1/keys")
	for _, tt := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"fdd75e29"}, env, exitUsage, "separated by '::'"},
		{[]string{"fdd75e29", "::", "4d0a", "::", "48a2"}, env, exitUsage, "separated by '::'"},
		{[]string{"fdd75e29", "::"}, env, exitUsage, "separated by '::'"},
		{[]string{"--ignore", "bogus", "fdd75e29", "::", "4d0a"}, env, exitUsage, "'bogus' is not a valid ignore value"},
		{[]string{"--format", "xml", "fdd75e29", "::", "4d0a"}, env, exitUsage, "--format"},
		{[]string{"name=[", "::", "4d0a"}, env, exitUsage, "syntax error"},
		{[]string{"name=tree.tar", "::", "4d0a"}, env, exitUsage, "matches several items"},
		{[]string{"name=nope", "::", "4d0a"}, env, exitUsage, "no item matches"},
		{[]string{"4", "::", "fdd7"}, env, exitUsage, "ambiguous"},
		{[]string{"d5db", "::", "fdd7"}, env, exitUsage, "item d5dbf2447bdcf7807b25732d40a02b35 is a raw item"},
		{[]string{"fdd7", "::", "./does/not/exist"}, env, exitUsage, "does/not/exist"},
		{[]string{"--left-pick", "nope", "fdd7", "::", "4d0a"}, env, exitUsage, "nope"},
		{[]string{"fdd7", "::", "4d0a"}, map[string]string{"BUPSTASH_REPOSITORY": "/nonexistent/repo", "BUPSTASH_KEY": primary012}, exitNoRepository, "/nonexistent/repo"},
		{[]string{"fdd7", "::", "4d0a"}, map[string]string{"BUPSTASH_REPOSITORY": repo012, "BUPSTASH_KEY": filepath.Join(keys, "list.key")}, exitWrongKey, "list-only"},
	} {
		r := runCmd(t, tt.env, append([]string{"diff"}, tt.args...)...)
		if r.code != tt.code || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("diff %q: exit %d (want %d), stdout %q, stderr %q (want %q)", tt.args, r.code, tt.code, r.stdout, r.stderr, tt.want)
		}
		if tt.code != exitUsage && strings.Contains(r.stderr, "--help") {
			t.Errorf("diff %q: %q points at --help for trouble that is not the command line's", tt.args, r.stderr)
		}
	}
	// Two live trees need no repository at all.
	dir := t.TempDir()
	mkdir(t, filepath.Join(dir, "a"))
	mkdir(t, filepath.Join(dir, "b"))
	os.WriteFile(filepath.Join(dir, "a", "f"), []byte("x"), 0o644)
	r := runCmd(t, nil, "diff", "--relaxed", filepath.Join(dir, "a"), "::", filepath.Join(dir, "b"))
	if r.code != 1 || !strings.HasPrefix(r.stdout, "- -rw-r--r-- 1B ") || !strings.HasSuffix(r.stdout, " f\n") {
		t.Errorf("live trees: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
