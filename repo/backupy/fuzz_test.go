package backupy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzParseToken: any input either parses into a token with a 32-byte key
// and the required claims, or fails with ErrToken; it never panics and its
// error never quotes the payload's key.
func FuzzParseToken(f *testing.F) {
	f.Add(katJWT)
	f.Add("a.b")
	f.Add("a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1e400}`)) + ".c")
	f.Add("a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":-1,"format_version":1.0}`)) + ".c")
	f.Add(jwt(map[string]any{"run_id": "r", "sub": "s", "company_id": "c", "exp": 1, "dek": katKeyB64, "alg": "AES-256-GCM", "format_version": 1, "aud": []int{1}}))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrToken) {
				t.Fatalf("error %v does not wrap ErrToken", err)
			}
			if strings.Contains(err.Error(), katKeyB64) {
				t.Fatal("error quotes the key")
			}
			return
		}
		if tok.DEK == nil || tok.RunID == "" || tok.Subject == "" || tok.CompanyID == "" {
			t.Fatalf("token without required claims: %+v", tok)
		}
		_ = tok.Warnings(tok.Expiry)
		_ = KeyringLines(tok)
	})
}

// FuzzParseKeyring: any text either parses or fails with an error naming
// a line; entries always hold 32-byte keys.
func FuzzParseKeyring(f *testing.F) {
	f.Add("run:1 hex:" + katKeyHex + "\n")
	f.Add("# c\n* b64:" + katKeyB64 + " # x\npath:a/* b64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n")
	f.Add("sha256:" + kat1SHA + " hex:" + katKeyHex)
	f.Add("token:/nonexistent\n")
	f.Add("path:[ hex:00")
	f.Add("run:1 hex:" + katKeyHex + " sha256:" + kat1SHA + "\npath:a/* b64:" + katKeyB64 + " sha256:x\n")
	f.Fuzz(func(t *testing.T, text string) {
		if strings.Contains(text, "token:") {
			// Token entries read files; keep the fuzzer off the disk.
			return
		}
		kr, err := ParseKeyring(strings.NewReader(text), "fuzz")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz:") {
				t.Fatalf("error %v names no line", err)
			}
			return
		}
		for _, e := range kr.entries {
			if e.dek == nil || len(e.dek.Fingerprint()) != 16 {
				t.Fatal("entry without a key")
			}
		}
		for _, c := range kr.candidates("co/run_1.enc", kat1SHA, "", false) {
			kr.binding(c.entry.dek, "co/run_1.enc", kat1SHA, false)
		}
	})
}

// FuzzSniffPayload: any decrypted bytes can be sniffed, and the FCS walk
// over them terminates without panicking.
func FuzzSniffPayload(f *testing.F) {
	f.Add(unhex(f, "28b52ffd040069010048656c6c6f2c204261636b757079212054686973206973206120736d616c6c2074657374206261636b75702e0a0e437d9e"))
	f.Add(agentZstd(f, sqliteDump(f, 2000), false))
	f.Add(agentZstd(f, pgDump(400), true))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0})
	f.Add([]byte("PGDMP"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := sniffPayload(data)
		if p.ext == "" || p.ext[0] != '.' {
			t.Fatalf("extension %q", p.ext)
		}
		if p.zstd {
			read := func(b []byte, off int64) error {
				if off < 0 || off+int64(len(b)) > int64(len(data)) {
					return io.ErrUnexpectedEOF
				}
				copy(b, data[off:])
				return nil
			}
			singleFrameEnd(read, p, int64(len(data)))
		}
	})
}

// FuzzClassify: any object bytes get a kind; a damaged-but-encrypted
// verdict always comes with an error and an index inside the object.
func FuzzClassify(f *testing.F) {
	f.Add(unhex(f, kat1Blob), "run_1.enc")
	f.Add([]byte{0, 0, 0, 0}, "x")
	f.Add([]byte{0, 0, 1, 0, 1, 2, 3}, "x.ico")
	f.Add(append(unhex(f, kat1Blob), 1), "y")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		kind, x, err := classify(bytes.NewReader(data), int64(len(data)), name)
		switch kind {
		case KindEncrypted:
			if x == nil || x.Size() > int64(len(data)) {
				t.Fatalf("index %+v for %d bytes", x, len(data))
			}
		case KindEmpty, KindPlainZstd, KindForeign:
			if err != nil {
				t.Fatalf("%s with error %v", kind, err)
			}
		default:
			t.Fatalf("kind %q", kind)
		}
	})
}
