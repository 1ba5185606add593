package backupy

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTokenKAT(t *testing.T) {
	tok, err := ParseToken(katJWT + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RunID != "run-kat1" || tok.CompanyID != "co-kat" || tok.Subject != "user-1" || tok.SHA256 != kat1SHA ||
		tok.Expiry.Unix() != 4102444800 || tok.IssuedAt.Unix() != 1767225600 {
		t.Fatalf("claims %+v", tok)
	}
	want, _ := newDEK(unhex(t, katKeyHex))
	if tok.DEK.Fingerprint() != want.Fingerprint() {
		t.Fatal("wrong key")
	}
	if w := tok.Warnings(time.Now()); len(w) != 0 {
		t.Fatalf("warnings %v", w)
	}
	// Printing a token or its key shows only the fingerprint.
	printed := fmt.Sprintf("%v %+v %#v %s %x %v %+v %#v", tok.DEK, tok.DEK, tok.DEK, tok.DEK, tok.DEK, *tok.DEK, tok, tok)
	assertNoLeak(t, printed, unhex(t, katKeyHex))
	if strings.Contains(printed, "[0 1 2 3") {
		t.Fatalf("key printed in decimal: %s", printed)
	}
}

func TestParseTokenErrors(t *testing.T) {
	key := unhex(t, katKeyHex)
	base := func() map[string]any {
		return map[string]any{
			"iss": "backupy-server", "aud": "backupy-decrypt", "sub": "u", "run_id": "r", "company_id": "c",
			"exp": 4102444800, "dek": base64.StdEncoding.EncodeToString(key), "alg": "aes-256-gcm", "format_version": 1,
		}
	}
	with := func(k string, v any) string {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return jwt(c)
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"two segments", "a.b", "want 3 segments, got 2"},
		{"four segments", "a.b.c.d", "want 3 segments, got 4"},
		{"payload not base64url", "a.!!!.c", "decode payload"},
		{"payload not JSON", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c", "not a JSON object"},
		{"payload null", "a." + base64.RawURLEncoding.EncodeToString([]byte("null")) + ".c", "not a JSON object"},
		{"missing run_id", with("run_id", nil), "missing claim: run_id"},
		{"empty sub", with("sub", ""), "sub (not a non-empty string)"},
		{"numeric company", with("company_id", 5), "company_id (not a non-empty string)"},
		{"missing exp", with("exp", nil), "missing claim: exp"},
		{"string exp", with("exp", "soon"), "exp (not a number)"},
		{"missing dek", with("dek", nil), "missing claim: dek"},
		{"dek not base64", with("dek", "###"), "dek not valid base64"},
		{"dek unpadded", with("dek", base64.RawStdEncoding.EncodeToString(key)), "dek not valid base64"},
		{"dek 16 bytes", with("dek", base64.StdEncoding.EncodeToString(key[:16])), "dek length = 16, want 32"},
		{"missing alg", with("alg", nil), "missing claim: alg"},
		{"wrong alg", with("alg", "ChaCha20"), `unsupported algorithm: "ChaCha20"`},
		{"format version 2", with("format_version", 2), "unsupported format version: 2"},
		{"missing format version", with("format_version", nil), "missing claim: format_version"},
		{"bad sha256", with("sha256", "xyz"), "sha256 claim is not 64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.token)
			if !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			assertNoLeak(t, err.Error(), key)
		})
	}
	// Accepted with warnings: expiry, issuer, audience (even an array).
	now := time.Unix(4102444800+1, 0)
	c := base()
	c["iss"], c["aud"] = "someone", []string{"backupy-decrypt"}
	tok, err := ParseToken(jwt(c))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(tok.Warnings(now), "; ")
	for _, want := range []string{"token expired", `wrong issuer: got "someone"`, "wrong audience"} {
		if !strings.Contains(w, want) {
			t.Fatalf("warnings %q lack %q", w, want)
		}
	}
	if c := base(); true {
		c["sha256"] = strings.ToUpper(kat1SHA)
		if tok, err := ParseToken(jwt(c)); err != nil || tok.SHA256 != kat1SHA {
			t.Fatalf("upper-case sha256: %v", err)
		}
	}
}

func TestParseKeyring(t *testing.T) {
	key := unhex(t, katKeyHex)
	dek, _ := newDEK(key)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "kat.jwt"), []byte(katJWT+"\n"), 0o600)
	good := strings.Join([]string{
		"# comment line",
		"",
		"run:run-1     hex:" + katKeyHex,
		"run:run-2\tb64:" + katKeyB64 + "   # trailing comment",
		"sha256:" + strings.ToUpper(kat1SHA) + " b64:" + base64.RawStdEncoding.EncodeToString(key),
		"path:co_1/*/job_9/*  b64:" + base64.URLEncoding.EncodeToString(key),
		"path:/exact/key.enc  b64:" + base64.RawURLEncoding.EncodeToString(key) + " sha256:" + strings.ToUpper(kat1SHA),
		"*  hex:" + strings.ToUpper(katKeyHex),
		"token:kat.jwt",
	}, "\n")
	kr, err := ParseKeyring(strings.NewReader(good), filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if kr.Len() != 7 {
		t.Fatalf("%d entries", kr.Len())
	}
	for _, e := range kr.entries {
		if e.dek.Fingerprint() != dek.Fingerprint() {
			t.Fatalf("entry %s decoded to another key", e.source)
		}
	}
	if e := kr.entries[2]; e.kind != selSHA || e.sha != kat1SHA {
		t.Fatalf("sha entry %+v", e)
	}
	if e := kr.entries[4]; e.kind != selPath || e.value != "exact/key.enc" || e.sha != kat1SHA {
		t.Fatalf("path entry %+v", e)
	}
	if e := kr.entries[6]; e.kind != selRun || e.value != "run-kat1" || e.sha != kat1SHA || !strings.Contains(e.source, "keys:9") {
		t.Fatalf("token entry %+v", e)
	}

	for _, tc := range []struct{ name, line, want string }{
		{"unknown selector", "job:1 hex:" + katKeyHex, "unknown selector"},
		{"no material", "run:1", "want <selector>"},
		{"extra field", "run:1 hex:" + katKeyHex + " extra", "sha256:<64 hex digits>"},
		{"short hash field", "run:1 hex:" + katKeyHex + " sha256:abc", "sha256:<64 hex digits>"},
		{"hash field on sha256:", "sha256:" + kat1SHA + " hex:" + katKeyHex + " sha256:" + kat1SHA, "want <selector>"},
		{"hash field on *", "* hex:" + katKeyHex + " sha256:" + kat1SHA, "want <selector>"},
		{"four fields", "run:1 hex:" + katKeyHex + " sha256:" + kat1SHA + " x", "want <selector>"},
		{"empty run", "run: hex:" + katKeyHex, "empty run id"},
		{"bad sha", "sha256:abc hex:" + katKeyHex, "64 hex digits"},
		{"bad glob", "path:[ hex:" + katKeyHex, "syntax error in pattern"},
		{"empty path", "path: hex:" + katKeyHex, "empty path"},
		{"short hex", "run:1 hex:" + katKeyHex[:62], "key material"},
		{"bad hex", "run:1 hex:" + katKeyHex[:62] + "zz", "key material"},
		{"short b64", "run:1 b64:" + base64.StdEncoding.EncodeToString(key[:31]), "key material"},
		{"no scheme", "run:1 " + katKeyHex, "key material"},
		{"token with material", "token:x.jwt hex:" + katKeyHex, "takes no key material"},
		{"missing token file", "token:nope.jwt", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyring(strings.NewReader("# first\n"+tc.line+"\n"), filepath.Join(dir, "keys"))
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "keys:2") {
				t.Fatalf("error %v, want %q at line 2", err, tc.want)
			}
			assertNoLeak(t, err.Error(), key)
			// Not even a fragment of the material.
			if strings.Contains(err.Error(), katKeyHex[:20]) {
				t.Fatalf("error quotes key material: %v", err)
			}
		})
	}
}

func TestKeyringLinesRoundTrip(t *testing.T) {
	tok := mustToken(t, katJWT)
	lines := KeyringLines(tok)
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "# run run-kat1") ||
		!strings.HasPrefix(lines[1], "run:run-kat1 b64:") || !strings.HasSuffix(lines[1], " sha256:"+kat1SHA) ||
		!strings.HasPrefix(lines[2], "sha256:"+kat1SHA) {
		t.Fatalf("lines %q", lines)
	}
	kr, err := ParseKeyring(strings.NewReader(strings.Join(lines, "\n")), "imported")
	if err != nil {
		t.Fatal(err)
	}
	if sha, run := kr.binding(tok.DEK, "x/run_run-kat1.enc", "", false); sha != kat1SHA || run != "run-kat1" {
		t.Fatalf("binding to the run's object: %s %s", sha, run)
	}
	// Another object is bound only once its own hash says it is the one.
	if sha, run := kr.binding(tok.DEK, "x/other.enc", "", false); sha != "" || run != "" {
		t.Fatalf("binding to another object: %s %s", sha, run)
	}
	if sha, _ := kr.binding(tok.DEK, "x/other.enc", kat1SHA, false); sha != kat1SHA {
		t.Fatalf("binding by the known hash: %s", sha)
	}
	// Without a hash, the token is just a run: entry.
	tok2 := *tok
	tok2.SHA256 = ""
	if l := KeyringLines(&tok2); len(l) != 2 || strings.Contains(l[1], "sha256") {
		t.Fatalf("lines without a hash %q", l)
	}
	// The imported keyring unlocks and verifies KAT-1.
	ts := newTestStore(t, kr, map[string][]byte{"x/run_run-kat1.enc": unhex(t, kat1Blob)})
	got, err := readAll(context.Background(), ts.file("x/run_run-kat1.enc", FileMain), 64)
	if err != nil || string(got) != kat1Plain || ts.blob("x/run_run-kat1.enc").State() != "verified" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	expired := jwt(map[string]any{
		"iss": "backupy-server", "aud": "backupy-decrypt", "sub": "u", "run_id": "old", "company_id": "c",
		"exp": 1000, "dek": base64.StdEncoding.EncodeToString(k1), "alg": "AES-256-GCM", "format_version": 1,
	})
	tokFile := write("expired.jwt", expired+"\r\n", 0o600)
	tokDir := filepath.Join(dir, "tokens")
	os.Mkdir(tokDir, 0o700)
	os.WriteFile(filepath.Join(tokDir, "a.token"), []byte(tokenFor(k2, "dir-run", "")), 0o600)
	os.WriteFile(filepath.Join(tokDir, "ignored.txt"), []byte("not a token"), 0o600)
	ring := write("ring", "run:from-ring hex:"+hex.EncodeToString(k3)+"\n", 0o644)

	logs := &logBuffer{}
	kr, err := LoadKeys(KeySources{
		TokenFiles:   []string{tokFile, "-"},
		TokenDirs:    []string{tokDir},
		Stdin:        strings.NewReader(tokenFor(k2, "stdin-run", "") + "\n"),
		KeyringFiles: []string{ring},
	}, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	if kr.Len() != 4 {
		t.Fatalf("%d keys", kr.Len())
	}
	out := logs.String()
	for _, want := range []string{"token expired", "mode 0600"} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q: %s", want, out)
		}
	}
	assertNoLeak(t, out, k1, k2, k3)

	if _, err := LoadKeys(KeySources{TokenFiles: []string{tokFile}, StrictToken: true}, nil); !errors.Is(err, ErrToken) {
		t.Fatalf("strict expiry: %v", err)
	}
	if _, err := LoadKeys(KeySources{TokenFiles: []string{"-", "-"}, Stdin: strings.NewReader(expired)}, nil); err == nil {
		t.Fatal("stdin used twice")
	}
	if _, err := LoadKeys(KeySources{TokenFiles: []string{filepath.Join(dir, "none")}}, nil); err == nil {
		t.Fatal("missing token file accepted")
	}
}

// TestMatchingOrder checks docs/backupy-format.md §6.4: path, run id,
// known sha256, then trial decryption, each confirmed by frame 0.
func TestMatchingOrder(t *testing.T) {
	ctx := context.Background()
	right, wrong := newKey(t), newKey(t)
	blob := agentEncrypt(t, agentZstd(t, pgDump(3000), true), right)
	line := func(sel string, k []byte) string { return sel + " hex:" + hex.EncodeToString(k) + "\n" }
	for _, tc := range []struct {
		name, ring, object, how string
		warn                    bool
	}{
		{"path beats run", line("run:42", wrong) + line("path:co/*/run_42.enc", right), "co/a/run_42.enc", "path", false},
		{"run", line("*", wrong) + line("run:42", right), "co/a/run_42.enc", "run", false},
		{"run as directory", line("run:42", right), "co/42/object", "run", false},
		{"wrong path key falls through", line("path:co/a/*", wrong) + line("run:42", right), "co/a/run_42.enc", "run", true},
		{"floating key by trial", line("run:7", wrong) + line("*", right), "co/a/run_42.enc", "trial", false},
		{"other run's key by trial", line("run:7", right), "co/a/run_42.enc", "trial", false},
		{"sha256 selector before trial", line("*", wrong) + line("sha256:"+shaHex(blob), right), "co/a/obj", "sha256", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := ParseKeyring(strings.NewReader(tc.ring), "ring")
			if err != nil {
				t.Fatal(err)
			}
			ts := newTestStore(t, kr, map[string][]byte{tc.object: blob})
			if tc.how == "sha256" {
				// The hash becomes known through a full pass (an earlier
				// mount); a new mount then selects by it.
				if _, err := ts.file(tc.object, FileMain).Size(ctx); err != nil {
					t.Fatal(err)
				}
				ts.reopen()
			}
			b := ts.blob(tc.object)
			if _, err := ts.Files(ctx, b); err != nil {
				t.Fatal(err)
			}
			k := b.currentKey()
			if k == nil || k.how != tc.how {
				t.Fatalf("matched %+v, want by %s", k, tc.how)
			}
			if got := strings.Contains(ts.log.String(), "does not open it"); got != tc.warn {
				t.Fatalf("wrong-key warning %v: %s", got, ts.log.String())
			}
			assertNoLeak(t, ts.log.String(), right, wrong)
		})
	}
}

// Wipe zeroes the key bytes of every entry, shared ones included.
func TestKeyringWipe(t *testing.T) {
	kr, err := ParseKeyring(strings.NewReader("run:1 hex:"+katKeyHex+"\n* b64:"+katKeyB64+"\n"), "ring")
	if err != nil {
		t.Fatal(err)
	}
	merged := NewKeyring()
	merged.Merge(kr)
	deks := []*DEK{kr.entries[0].dek, kr.entries[1].dek}
	merged.Wipe()
	for _, d := range deks {
		if d.b != [32]byte{} {
			t.Fatal("key bytes left after Wipe")
		}
	}
	if merged.Len() != 0 {
		t.Fatal("entries left after Wipe")
	}
	kr.Wipe() // again, through the other keyring: harmless
	var nilRing *Keyring
	nilRing.Wipe()
}
