package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the binaries the tests built (backupfsBinary,
// plainBinary) once every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, bin := range []string{binary, plainBin} {
		if bin != "" {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	os.Exit(code)
}
