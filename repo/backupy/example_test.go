package backupy_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/backupfs/backupfs/repo/backupy"
)

// A store of one encrypted object and the decryption token the Backupy
// server issued for its run: the object shows as its decoded dump.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "backupy-example")
	defer os.RemoveAll(dir)
	// One run's object as the agent uploads it: zstd in AES-256-GCM frames.
	blob, _ := hex.DecodeString("00000056a0a1a2a3a4a5a6a7a8a9aaabcead53d041cb6bbe622de2bf6b15ecfe32cd3a7be7c73b4dbc5a4eef0c8b1c72f217678cc2433f517fe861bb7d5ae198247033384cda143d3cc0f61d7db87e1231614d3650de5615361300000000")
	os.MkdirAll(filepath.Join(dir, "objects", "co_kat"), 0o755)
	os.WriteFile(filepath.Join(dir, "objects", "co_kat", "run_run-kat1.enc"), blob, 0o644)
	os.WriteFile(filepath.Join(dir, "run-kat1.jwt"), []byte(exampleToken), 0o600)

	keys, err := backupy.LoadKeys(backupy.KeySources{
		TokenFiles: []string{filepath.Join(dir, "run-kat1.jwt")},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Wipe()
	store, err := backupy.OpenStore(ctx, filepath.Join(dir, "objects"), backupy.Options{
		Keys:     keys,
		CacheDir: filepath.Join(dir, "cache"),
		Views:    backupy.ViewMeta,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	subdirs, _, _ := store.Dir(ctx, "")
	fmt.Println("directories:", subdirs)
	_, blobs, _ := store.Dir(ctx, "co_kat")
	for _, b := range blobs {
		files, err := store.Files(ctx, b)
		if err != nil {
			log.Fatal(err)
		}
		for _, f := range files {
			fmt.Printf("co_kat/%s (%s view of %s, mode %v)\n", f.Name(), f.Kind(), b.Path, f.Mode())
		}
		main, _ := store.Main(ctx, b)
		h, err := main.Open(ctx)
		if err != nil {
			log.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := h.ReadAt(ctx, buf, 0)
		if err != io.EOF {
			log.Fatal(err)
		}
		h.Close()
		fmt.Printf("%q\n", buf[:n])
		fmt.Println("state:", b.State())
	}
	// Output:
	// directories: [co_kat]
	// co_kat/run_run-kat1.bin (main view of co_kat/run_run-kat1.enc, mode -r--------)
	// co_kat/run_run-kat1.meta.json (meta view of co_kat/run_run-kat1.enc, mode -r--------)
	// "Hello, Backupy! This is a small test backup.\n"
	// state: verified
}

var exampleToken = strings.Join([]string{
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
	"eyJhbGciOiJBRVMtMjU2LUdDTSIsImF1ZCI6ImJhY2t1cHktZGVjcnlwdCIsImNvbXBhbnlfaWQiOiJjby1rYXQiLCJkZWsiOiJBQUVDQXdRRkJnY0lDUW9MREEwT0R4QVJFaE1VRlJZWEdCa2FHeHdkSGg4PSIsImV4cCI6NDEwMjQ0NDgwMCwiZm9ybWF0X3ZlcnNpb24iOjEsImlhdCI6MTc2NzIyNTYwMCwiaXNzIjoiYmFja3VweS1zZXJ2ZXIiLCJydW5faWQiOiJydW4ta2F0MSIsInNoYTI1NiI6Ijg3MjE5ODdmNzE2M2FiZWJmNzgyNjY0N2RmODRkZTkxYjI4ZjRhM2UyYmUzNGExYWUxMTU2M2ExNmQyZTY3NDIiLCJzdWIiOiJ1c2VyLTEifQ",
	"MpUV287Q5M5ozcrwwbC-Rn3ezTgEqFbRLsvVz6CUZy4",
}, ".")
