package mountpoint

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A directory with files is refused (the mount would hide them) unless
// allowed; the refusal names a file. A mountpoint inside a source is
// refused for that reason first, whatever it holds.
func TestPrepareRefusesANonEmptyDirectory(t *testing.T) {
	empty := t.TempDir()
	if got, err := Prepare(empty, nil, false); err != nil || got != empty {
		t.Fatalf("empty directory: %q %v", got, err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, ".hidden"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Prepare(full, nil, false)
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), ".hidden") || !strings.Contains(err.Error(), "--allow-non-empty") {
		t.Fatalf("non-empty directory: %v", err)
	}
	if _, err := Prepare(full, nil, true); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	inside := filepath.Join(full, "sub")
	if err := os.Mkdir(inside, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(inside, "f"), nil, 0o600)
	if _, err := Prepare(inside, []string{full}, false); err == nil || !strings.Contains(err.Error(), "inside the source") {
		t.Fatalf("inside a source: %v", err)
	}
}
