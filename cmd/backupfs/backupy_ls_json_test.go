package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// backupy ls --json: one object per object, with the meta.json view's
// field names, and names that are not UTF-8 as arrays of byte values.
func TestBackupyLsJSON(t *testing.T) {
	f := newBkFixture(t)
	t.Setenv(envBackupyKeyring, "")
	if err := os.WriteFile(filepath.Join(f.dir, "caf\xe9.txt"), []byte("foreign"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runBk("ls", "--json", "--token", f.token, "--sizes", "--cache-dir", f.cache, f.dir)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	if want := `{"object_key":"README","kind":"foreign","state":"unencrypted","ciphertext_size":12,`; !strings.HasPrefix(lines[0], want) {
		t.Errorf("line 1 %s, want it to start %s", lines[0], want)
	}
	if want := `{"object_key":[99,97,102,233,46,116,120,116],"kind":"foreign",`; !strings.HasPrefix(lines[1], want) ||
		!strings.HasSuffix(lines[1], `"key":null,"file":[99,97,102,233,46,116,120,116]}`) {
		t.Errorf("a name that is not UTF-8: %s", lines[1])
	}
	var kat struct {
		ObjectKey   string            `json:"object_key"`
		Kind        string            `json:"kind"`
		State       string            `json:"state"`
		Size        int64             `json:"ciphertext_size"`
		DecodedSize *int64            `json:"decoded_size"`
		RunID       string            `json:"run_id"`
		Key         map[string]string `json:"key"`
		File        string            `json:"file"`
	}
	if err := json.Unmarshal([]byte(lines[4]), &kat); err != nil {
		t.Fatal(err)
	}
	if kat.ObjectKey != "co_kat/agt_1/job_1/run_run-kat1.enc" || kat.Kind != "encrypted-v1" || kat.State != "verified" || kat.Size != 94 ||
		kat.DecodedSize == nil || *kat.DecodedSize != 45 || kat.RunID != "run-kat1" || kat.Key["matched_by"] != "run" || kat.File != "run_run-kat1.bin" {
		t.Errorf("%+v from %s", kat, lines[4])
	}
	if strings.Contains(out, bkKATKeyB64) {
		t.Fatal("key material in the output")
	}
	// Without keys or --sizes: locked, sizes unknown.
	out, _, _ = runBk("ls", "--json", "--cache-dir", t.TempDir(), f.dir)
	if !strings.Contains(out, `"state":"locked","ciphertext_size":94,`) || !strings.Contains(out, `"decoded_size":null,"run_id":"run-kat1","key":null,"file":"run_run-kat1.enc"}`) {
		t.Errorf("locked:\n%s", out)
	}
}
