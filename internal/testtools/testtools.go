// Package testtools finds the genuine programs that interoperability
// tests run against: Bupstash binaries of several releases, sshd, and the
// S3 server. A user's clone may lack them; then the tests that need them
// skip, saying what is missing and how to provide it. CI sets
// BACKUPFS_REQUIRE_TOOLS=1, under which a missing tool fails the test
// instead, so that a broken CI machine cannot pass by skipping.
//
// The environment:
//
//	BACKUPFS_BUPSTASH_TOOLS   directory holding bupstash-0.10.3, bupstash-0.11.1, bupstash-0.12.1
//	BACKUPFS_VERSITYGW        the versitygw binary (default: versitygw on PATH)
//	BACKUPFS_REQUIRE_TOOLS    1: a missing tool is a failure, not a skip
package testtools

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BupstashVersions are the releases whose binaries the tests use, oldest
// first: 0.10.3 speaks serve protocol "11", the others "13".
var BupstashVersions = []string{"0.10.3", "0.11.1", "0.12.1"}

// Required reports whether missing tools must fail tests (in CI).
func Required() bool { return os.Getenv("BACKUPFS_REQUIRE_TOOLS") == "1" }

// missing skips or fails t, saying why.
func missing(t testing.TB, what, how string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s is missing (BACKUPFS_REQUIRE_TOOLS=1): %s", what, how)
	}
	t.Skipf("skipped: %s is missing: %s", what, how)
}

// Bupstash returns the path of the genuine bupstash binary of version
// (one of BupstashVersions), or skips (fails in CI) when there is none.
// The binaries need libsodium23 and libzstd1.
func Bupstash(t testing.TB, version string) string {
	t.Helper()
	dir := os.Getenv("BACKUPFS_BUPSTASH_TOOLS")
	if dir == "" {
		missing(t, "bupstash "+version, "set BACKUPFS_BUPSTASH_TOOLS to a directory holding bupstash-"+version)
		return ""
	}
	bin := filepath.Join(dir, "bupstash-"+version)
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		missing(t, "bupstash "+version, bin+" is not an executable file")
		return ""
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		missing(t, "a working bupstash "+version, bin+" does not run ("+err.Error()+": "+string(out)+"); install libsodium23 and libzstd1")
		return ""
	}
	return bin
}

// Program returns the path of a program that must be installed (sshd,
// ssh, rsync, …), or skips (fails in CI) when it is not. Programs in
// /usr/sbin are found even when it is not on PATH.
func Program(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	missing(t, name, "install the "+pkg+" package")
	return ""
}

// Versitygw returns the path of the Versity S3 gateway, or skips (fails
// in CI) when there is none.
func Versitygw(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BACKUPFS_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			missing(t, "versitygw", "BACKUPFS_VERSITYGW names "+p+", which does not exist")
		}
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(string(trimNewline(gopath)), "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	missing(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	return ""
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
