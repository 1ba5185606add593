package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCPUProfileFromEnvironment(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	env := map[string]string{"BACKUPFS_CPUPROFILE": prof}
	r := runCmd(t, env, "cat", "--repo", repo012, "--key", primary012, "fdd75e29", "a.txt")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	st, err := os.Stat(prof)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no CPU profile written: %v", err)
	}
}

func TestPprofServer(t *testing.T) {
	var logged bytes.Buffer
	stop, err := startProfiling("127.0.0.1:0", "", slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, addr, ok := strings.Cut(strings.TrimSpace(logged.String()), "addr=")
	if !ok {
		t.Fatalf("the pprof address was not logged: %q", logged.String())
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("status %d: %.200s", resp.StatusCode, b)
	}
}
