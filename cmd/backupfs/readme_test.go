package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/fusetest"
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

// readmeMarker precedes each block of README.md that runs as written.
const readmeMarker = "<!-- runs as written (readme_test.go) -->"

// runnableBlocks returns the code blocks of a markdown file that follow
// the marker.
func runnableBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	rest := string(b)
	for {
		i := strings.Index(rest, readmeMarker)
		if i < 0 {
			return blocks
		}
		rest = rest[i+len(readmeMarker):]
		open := strings.Index(rest, "```")
		if open < 0 || strings.TrimSpace(rest[:open]) != "" {
			t.Fatalf("%s: the marker is not right before a code block", path)
		}
		body := rest[open:]
		body = body[strings.IndexByte(body, '\n')+1:]
		end := strings.Index(body, "```")
		if end < 0 {
			t.Fatalf("%s: a code block does not end", path)
		}
		blocks = append(blocks, body[:end])
		rest = body[end+3:]
	}
}

// The README's blocks marked as running as written (a mount of the
// samples) do, from the root of the checkout, with the built binary first
// on PATH. Mounts they leave behind are removed.
func TestREADMEMountExample(t *testing.T) {
	fusetest.RequireFUSE(t)
	becomeSubreaper(t)
	root := abs(t, "../..")
	blocks := runnableBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 1 {
		t.Fatalf("no runnable block in README.md")
	}
	// The blocks put $PWD/bin first on PATH, where make build leaves the
	// binary; the test's own binary stands in for it, from a directory of
	// its own (the checkout's bin/ is left alone).
	bin := filepath.Join(t.TempDir(), "bin")
	os.Mkdir(bin, 0o755)
	if err := os.Symlink(backupfsBinary(t), filepath.Join(bin, "backupfs")); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	t.Cleanup(func() {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], tmp) {
				t.Errorf("a README block left %s mounted", f[4])
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
	})
	for i, block := range blocks {
		t.Run(fmt.Sprintf("block%d", i+1), func(t *testing.T) {
			script := strings.ReplaceAll(block, "export PATH=$PWD/bin:$PATH", "export PATH="+bin+":$PATH")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
			cmd.Dir = root
			cmd.Env = append(cleanEnv(), "TMPDIR="+tmp)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("block %d failed: %v\n%s\n---\n%s", i+1, err, block, out)
			}
			if strings.Contains(string(out), "backupfs: ") {
				t.Errorf("block %d printed a warning or error:\n%s", i+1, out)
			}
		})
	}
}
