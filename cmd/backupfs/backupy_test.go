package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/repo/backupy"
)

// Vectors of docs/backupy-format.md §8.
const (
	bkKAT1Blob  = "00000056a0a1a2a3a4a5a6a7a8a9aaabcead53d041cb6bbe622de2bf6b15ecfe32cd3a7be7c73b4dbc5a4eef0c8b1c72f217678cc2433f517fe861bb7d5ae198247033384cda143d3cc0f61d7db87e1231614d3650de5615361300000000"
	bkKAT1Plain = "Hello, Backupy! This is a small test backup.\n"
	bkKATJWT    = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhbGciOiJBRVMtMjU2LUdDTSIsImF1ZCI6ImJhY2t1cHktZGVjcnlwdCIsImNvbXBhbnlfaWQiOiJjby1rYXQiLCJkZWsiOiJBQUVDQXdRRkJnY0lDUW9MREEwT0R4QVJFaE1VRlJZWEdCa2FHeHdkSGg4PSIsImV4cCI6NDEwMjQ0NDgwMCwiZm9ybWF0X3ZlcnNpb24iOjEsImlhdCI6MTc2NzIyNTYwMCwiaXNzIjoiYmFja3VweS1zZXJ2ZXIiLCJydW5faWQiOiJydW4ta2F0MSIsInNoYTI1NiI6Ijg3MjE5ODdmNzE2M2FiZWJmNzgyNjY0N2RmODRkZTkxYjI4ZjRhM2UyYmUzNGExYWUxMTU2M2ExNmQyZTY3NDIiLCJzdWIiOiJ1c2VyLTEifQ.MpUV287Q5M5ozcrwwbC-Rn3ezTgEqFbRLsvVz6CUZy4"
	bkKATKeyB64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

type bkFixture struct {
	dir, cache, token, plainZst string
	plain                       []byte
}

func newBkFixture(t *testing.T) *bkFixture {
	t.Helper()
	f := &bkFixture{dir: t.TempDir(), cache: t.TempDir()}
	obj := filepath.Join(f.dir, "co_kat", "agt_1", "job_1")
	os.MkdirAll(obj, 0o700)
	kat, _ := hex.DecodeString(bkKAT1Blob)
	os.WriteFile(filepath.Join(obj, "run_run-kat1.enc"), kat, 0o600)
	os.WriteFile(filepath.Join(obj, "run_other.enc"), kat, 0o600)
	// An unencrypted job's object: a raw zstd stream.
	f.plain = bytes.Repeat([]byte("-- MariaDB dump 10.19\nINSERT INTO t VALUES (1);\n"), 40000)
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	io.Copy(zw, struct{ io.Reader }{bytes.NewReader(f.plain)})
	zw.Close()
	f.plainZst = filepath.Join(obj, "run_plain.enc")
	os.WriteFile(f.plainZst, z.Bytes(), 0o600)
	os.WriteFile(filepath.Join(f.dir, "README"), []byte("not a backup"), 0o600)
	f.token = filepath.Join(t.TempDir(), "kat.jwt")
	os.WriteFile(f.token, []byte(bkKATJWT+"\n"), 0o600)
	return f
}

// runBk runs "backupfs backupy ARGS…". A failure comes back as an error
// holding what was printed on stderr, marked as a usage error when the
// exit status says so.
func runBk(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"backupy"}, args...), &out, &errb, os.Getenv)
	stdout, stderr = out.String(), errb.String()
	// The error is the last line; log lines may come before it.
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	switch code {
	case exitOK:
	case exitUsage:
		err = fmt.Errorf("%w: %s", errUsage, last)
	default:
		err = fmt.Errorf("exit status %d: %s", code, last)
	}
	return stdout, stderr, err
}

func TestBackupyLs(t *testing.T) {
	f := newBkFixture(t)
	t.Setenv(envBackupyKeyring, "")
	out, stderr, err := runBk("ls", "--cache-dir", f.cache, f.dir)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	want := [][]string{
		{"PATH", "KIND", "SIZE", "DECODED", "STATE", "KEY", "FILE"},
		{"README", "foreign", "12", "?", "unencrypted", "-", "README"},
		{"co_kat/agt_1/job_1/run_other.enc", "encrypted-v1", "94", "?", "locked", "locked", "run_other.enc"},
		{"co_kat/agt_1/job_1/run_plain.enc", "plain-zstd", "", "?", "unencrypted", "-", "run_plain.sql"},
		{"co_kat/agt_1/job_1/run_run-kat1.enc", "encrypted-v1", "94", "?", "locked", "locked", "run_run-kat1.enc"},
	}
	checkTable(t, out, want)

	// With the token (flags after the operand work too) and --sizes.
	out, stderr, err = runBk("ls", f.dir, "--token", f.token, "--sizes", "--cache-dir", f.cache)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	want[2] = []string{"co_kat/agt_1/job_1/run_other.enc", "encrypted-v1", "94", "45", "verified", "by-trial", "run_other.bin"}
	want[3][3] = strconv.Itoa(len(f.plain))
	want[4] = []string{"co_kat/agt_1/job_1/run_run-kat1.enc", "encrypted-v1", "94", "45", "verified", "by-run", "run_run-kat1.bin"}
	checkTable(t, out, want)
	if strings.Contains(out+stderr, bkKATKeyB64) {
		t.Fatal("key material in the output")
	}
}

func checkTable(t *testing.T, out string, want [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", out)
	}
	for i, w := range want {
		got := strings.Fields(lines[i])
		for j := range w {
			if w[j] != "" && (j >= len(got) || got[j] != w[j]) {
				t.Fatalf("line %d = %q, want %q\n%s", i, got, w, out)
			}
		}
	}
}

func TestBackupyCat(t *testing.T) {
	f := newBkFixture(t)
	kat := filepath.Join(f.dir, "co_kat", "agt_1", "job_1", "run_run-kat1.enc")
	out, stderr, err := runBk("cat", "--token", f.token, "--cache-dir", f.cache, kat)
	if err != nil || out != bkKAT1Plain {
		t.Fatalf("cat = %q, %v: %s", out, err, stderr)
	}
	out, _, err = runBk("cat", "--zst", "--token", f.token, "--cache-dir", f.cache, kat)
	if err != nil || len(out) != 58 || !strings.HasPrefix(out, "\x28\xb5\x2f\xfd") {
		t.Fatalf("cat --zst = %x, %v", out, err)
	}
	// Unencrypted: what zstd -d gives, no key needed.
	out, _, err = runBk("cat", "--cache-dir", f.cache, f.plainZst)
	if err != nil || out != string(f.plain) {
		t.Fatalf("cat of an unencrypted object: %d bytes, %v", len(out), err)
	}
	// Keys from a keyring written by import-token.
	lines, _, err := runBk("import-token", f.token)
	if err != nil || !strings.Contains(lines, "run:run-kat1 b64:"+bkKATKeyB64) {
		t.Fatalf("import-token = %q, %v", lines, err)
	}
	ring := filepath.Join(t.TempDir(), "ring")
	os.WriteFile(ring, []byte(lines), 0o600)
	out, _, err = runBk("cat", "--keyring", ring, "--cache-dir", f.cache, filepath.Join(f.dir, "co_kat", "agt_1", "job_1", "run_other.enc"))
	if err != nil || out != bkKAT1Plain {
		t.Fatalf("cat with keyring = %q, %v", out, err)
	}
	// The keyring can also come from the environment.
	t.Setenv(envBackupyKeyring, ring)
	out, _, err = runBk("cat", "--cache-dir", f.cache, kat)
	if err != nil || out != bkKAT1Plain {
		t.Fatalf("cat with $%s = %q, %v", envBackupyKeyring, out, err)
	}
}

func TestBackupyImportTokenLiteral(t *testing.T) {
	out, _, err := runBk("import-token", bkKATJWT)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := backupy.ParseKeyring(strings.NewReader(out), "imported")
	if err != nil || kr.Len() != 2 {
		t.Fatalf("imported keyring: %v\n%s", err, out)
	}
}

// Every failure is one error, with usage errors marked as such, and no
// key material in any message.
func TestBackupyErrors(t *testing.T) {
	f := newBkFixture(t)
	t.Setenv(envBackupyKeyring, "")
	kat := filepath.Join(f.dir, "co_kat", "agt_1", "job_1", "run_run-kat1.enc")
	badTok := filepath.Join(t.TempDir(), "bad.jwt")
	os.WriteFile(badTok, []byte("a.b"), 0o600)
	corrupt := filepath.Join(t.TempDir(), "run_x.enc")
	raw, _ := hex.DecodeString(bkKAT1Blob)
	raw[40] ^= 1
	os.WriteFile(corrupt, raw, 0o600)
	otherTok := filepath.Join(t.TempDir(), "other.jwt")
	os.WriteFile(otherTok, []byte(bkToken(t, bytes.Repeat([]byte{7}, 32), "run-9", "")), 0o600)
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no subcommand", nil, true, "subcommand"},
		{"unknown subcommand", []string{"mount"}, true, `unknown subcommand "mount"`},
		{"ls without dir", []string{"ls"}, true, "ls wants one store"},
		{"bad flag", []string{"cat", "--nope", kat}, true, "nope"},
		{"missing dir", []string{"ls", "--cache-dir", f.cache, "/nonexistent/dir"}, false, "no such file"},
		{"locked", []string{"cat", "--cache-dir", f.cache, kat}, false, "no key for this encrypted object (give --token or --keyring)"},
		{"foreign", []string{"cat", "--cache-dir", f.cache, filepath.Join(f.dir, "README")}, false, "not a Backupy object"},
		{"bad token", []string{"cat", "--token", badTok, "--cache-dir", f.cache, kat}, false, "want 3 segments"},
		{"corrupt", []string{"cat", "--token", f.token, "--cache-dir", f.cache, corrupt}, false, "run_x.enc: corrupt: frame 0 at ciphertext offset 0: frame failed authentication"},
		{"wrong token", []string{"cat", "--token", otherTok, "--cache-dir", f.cache, kat}, false, "frame 0 at ciphertext offset 0: frame failed authentication (wrong key or corrupt data)"},
		{"import nothing", []string{"import-token"}, true, "at least one token"},
		{"import garbage", []string{"import-token", "x.y.z"}, false, "invalid decryption token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runBk(tc.args...)
			if err == nil || errors.Is(err, errUsage) != tc.usage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (usage %v), want %q; stderr %q", err, errors.Is(err, errUsage), tc.want, stderr)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), bkKATKeyB64) || strings.Contains(stderr, "goroutine") {
				t.Fatalf("bad error %q / %q", err, stderr)
			}
		})
	}
	if out, _, err := runBk("ls", "-h"); err != nil || !strings.Contains(out, "backupfs backupy ls") {
		t.Fatalf("-h = %v, %q", err, out)
	}
}

// bkToken makes a decryption token shaped like the server's.
func bkToken(t *testing.T, dek []byte, runID, sha string) string {
	t.Helper()
	claims := map[string]any{
		"iss": "backupy-server", "aud": "backupy-decrypt", "exp": 4102444800, "sub": "user-1",
		"run_id": runID, "company_id": "co-1", "alg": "AES-256-GCM", "format_version": 1,
		"dek": base64.StdEncoding.EncodeToString(dek),
	}
	if sha != "" {
		claims["sha256"] = sha
	}
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(body) + ".c2ln"
}

// A state learnt with a key (verified) is not shown for an object that is
// locked now: ls never prints "verified" next to "locked".
func TestBackupyLsLockedIsNotVerified(t *testing.T) {
	f := newBkFixture(t)
	t.Setenv(envBackupyKeyring, "")
	if _, stderr, err := runBk("ls", "--token", f.token, "--sizes", "--cache-dir", f.cache, f.dir); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	out, stderr, err := runBk("ls", "--cache-dir", f.cache, f.dir)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	checkTable(t, out, [][]string{
		{"PATH", "KIND", "SIZE", "DECODED", "STATE", "KEY", "FILE"},
		{"README", "foreign", "12", "?", "unencrypted", "-", "README"},
		{"co_kat/agt_1/job_1/run_other.enc", "encrypted-v1", "94", "?", "locked", "locked", "run_other.enc"},
		{"co_kat/agt_1/job_1/run_plain.enc", "plain-zstd", "", "", "unencrypted", "-", "run_plain.sql"},
		{"co_kat/agt_1/job_1/run_run-kat1.enc", "encrypted-v1", "94", "?", "locked", "locked", "run_run-kat1.enc"},
	})
}
