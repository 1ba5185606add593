package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeBlocks returns the ```sh blocks of README.md between the lines
// starting with from and to.
func readmeBlocks(t *testing.T, from, to string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+from)
	j := strings.Index(s[i+1:], "\n"+to)
	if i < 0 || j < 0 {
		t.Fatalf("README.md has no section from %q to %q", from, to)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(s[i:i+1+j], -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// The command-line examples of the README run against testdata/ as
// written, from a checkout, each command with the exit status its comment
// gives (0 unless it says "exit 1").
func TestREADMECommandLineExamples(t *testing.T) {
	bin := backupfsBinary(t)
	var blocks []string
	blocks = append(blocks, readmeBlocks(t, "## Without FUSE", "`backupfs help CMD`")...)
	blocks = append(blocks, readmeBlocks(t, "### Queries", "### JSON")...)
	if len(blocks) != 3 {
		t.Fatalf("%d example blocks", len(blocks))
	}
	// One shell runs them all in order, as a reader would (the exports of
	// the first block carry over); each command says its status on fd 3.
	var script strings.Builder
	script.WriteString("set -o pipefail\n")
	var lines []string
	var want []int
	for _, block := range blocks {
		for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
			cmd, comment, _ := strings.Cut(line, " # ")
			code := 0
			if strings.Contains(comment, "exit 1") {
				code = 1
			}
			lines, want = append(lines, line), append(want, code)
			fmt.Fprintf(&script, "%s\necho $? >&3\n", cmd)
		}
	}
	sh := exec.Command("bash", "-c", script.String())
	sh.Dir = filepath.Join(testdata, "..")
	sh.Env = append(cleanEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "TMPDIR="+t.TempDir())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.ExtraFiles = []*os.File{w}
	var out bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &out
	err = sh.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var statuses bytes.Buffer
	statuses.ReadFrom(r)
	sh.Wait()
	got := strings.Fields(statuses.String())
	if len(got) != len(want) {
		t.Fatalf("%d statuses for %d commands:\n%s", len(got), len(want), out.String())
	}
	n := 0
	for i, g := range got {
		if g != fmt.Sprint(want[i]) {
			t.Errorf("README: %q exited %s, want %d", lines[i], g, want[i])
		}
		n++
	}
	if t.Failed() || strings.Contains(out.String(), "backupfs: warning") {
		t.Errorf("output:\n%s", out.String())
	}
	if n < 20 {
		t.Errorf("only %d example commands ran", n)
	}
}
