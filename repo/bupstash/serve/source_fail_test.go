package serve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// snapshotFiles returns the first snapshot of a repository and its
// regular files' entries.
func snapshotFiles(t testing.TB, ctx context.Context, r *bupstash.Repository) (*bupstash.OpenItem, []*bupstash.IndexEntry) {
	t.Helper()
	items, err := r.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if !it.HasIndex() {
			continue
		}
		o := r.OpenItem(it)
		ix, err := o.Index()
		if err != nil {
			t.Fatal(err)
		}
		var files []*bupstash.IndexEntry
		for {
			e, err := ix.Next(ctx)
			if err != nil {
				break
			}
			if e.IsRegular() && e.Size > 0 {
				files = append(files, e)
			}
		}
		return o, files
	}
	t.Fatal("no snapshot")
	return nil, nil
}

func readFile(ctx context.Context, o *bupstash.OpenItem, e *bupstash.IndexEntry) ([]byte, error) {
	f, err := o.File(e)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	_, err = f.NewReader().WriteToContext(ctx, &b)
	return []byte(b.String()), err
}

// A list-only server (--allow-list): items and file trees list, data is
// refused with the server's own line, as bupstash.ErrPermission, and
// after the first refusal without another connection.
func TestSourceAllowListOnly(t *testing.T) {
	for _, v := range testtools.BupstashVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			f := fixtures[2]
			ctx := testContext(t, time.Minute)
			dir := copyRepo(t, f.dir)
			var logs logLines
			r, src := openRemote(t, ctx, serveCommand(t, v, dir, "--allow-list"), loadKey(t, f.key), Options{Dial: DialOptions{Logger: logs.logger()}})
			o, files := snapshotFiles(t, ctx, r)
			if len(files) == 0 {
				t.Fatal("no files listed")
			}
			for i, e := range files[:min(3, len(files))] {
				_, err := readFile(ctx, o, e)
				if !errors.Is(err, bupstash.ErrPermission) || !strings.Contains(err.Error(), "server has disabled get for this client") {
					t.Fatalf("read %q: %v", e.Path, err)
				}
				if i == 0 {
					t.Logf("read: %v", err)
				}
			}
			dials := src.Stats().Dials
			readFile(ctx, o, files[len(files)-1])
			if d := src.Stats().Dials; d != dials {
				t.Fatalf("a refused read dialled again (%d connections, then %d)", dials, d)
			}
		})
	}
}

// The version found is said, with what the server cannot do.
func TestSourceAnnounces(t *testing.T) {
	for v, want := range map[string]string{
		"0.10.3": "bupstash 0.10 server (protocol 11): no fetch by address",
		"0.12.1": "bupstash 0.11 or 0.12 server (protocol 13): chunks fetched by address",
	} {
		ctx := testContext(t, time.Minute)
		var logs logLines
		_, src := openRemote(t, ctx, serveCommand(t, v, copyRepo(t, fixtures[2].dir)), loadKey(t, fixtures[2].key), Options{Dial: DialOptions{Logger: logs.logger()}})
		src.Close()
		if !strings.Contains(logs.String(), want) {
			t.Errorf("%s: log lacks %q:\n%s", v, want, logs.String())
		}
	}
}

// killServers ends the bupstash serve processes serving dir.
func killServers(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, pid := range processesMentioning(dir) {
		b, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if !strings.Contains(string(b), "serve") || strings.HasPrefix(string(b), "sh\x00") {
			continue
		}
		var p int
		fmt.Sscan(pid, &p)
		if syscall.Kill(p, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// A server killed between reads: the next read goes to a new connection
// and succeeds. A server that cannot be reached: the read fails with the
// server's line, as bupstash.ErrUnavailable, and once it is back, a
// later read reconnects.
func TestSourceServerKilled(t *testing.T) {
	for _, pull := range []bool{true, false} {
		t.Run(fmt.Sprint("pull=", pull), func(t *testing.T) {
			f := fixtures[0] // several files, 1 MB
			ctx := testContext(t, 2*time.Minute)
			dir := copyRepo(t, f.dir)
			down := filepath.Join(t.TempDir(), "down")
			bin := testtools.Bupstash(t, "0.12.1")
			script := fmt.Sprintf(`if [ -e %s ]; then echo "bupstash serve: down for maintenance" >&2; exit 1; fi; exec %s serve %s`, down, bin, dir)
			cmd := Command{Argv: []string{"sh", "-c", script}, Env: serverEnv(t), Name: "test-server"}
			key := loadKey(t, f.key)
			_, src := openRemote(t, ctx, cmd, key, Options{NoPull: !pull, Connections: 1})
			local := openLocal(t, ctx, filepath.Join(moduleRoot(t), f.dir), key)
			lo, files := snapshotFiles(t, ctx, local)
			read := func(i int) error {
				// A fresh repository each time, so that nothing is
				// decoded yet and the read must reach the server.
				r, err := bupstash.New(src, key, bupstash.Options{Cache: cache.New(16 << 20)})
				if err != nil {
					t.Fatal(err)
				}
				o, _ := snapshotFiles(t, ctx, r)
				got, err := readFile(ctx, o, files[i])
				if err != nil {
					return err
				}
				want, _ := readFile(ctx, lo, files[i])
				if string(got) != string(want) {
					t.Fatalf("file %q differs", files[i].Path)
				}
				return nil
			}
			if err := read(0); err != nil {
				t.Fatal(err)
			}
			if killServers(t, dir) == 0 {
				t.Fatal("no server to kill")
			}
			if err := read(1); err != nil {
				t.Fatalf("read after the server was killed: %v", err)
			}
			if st := src.Stats(); st.Retries == 0 {
				t.Fatalf("no read was retried: %+v", st)
			}

			os.WriteFile(down, nil, 0o600)
			killServers(t, dir)
			err := read(2)
			if !errors.Is(err, bupstash.ErrUnavailable) || !strings.Contains(err.Error(), "down for maintenance") {
				t.Fatalf("read while the server is down: %v", err)
			}
			t.Logf("while down: %v", err)
			os.Remove(down)
			deadline := time.Now().Add(20 * time.Second)
			for {
				err := read(3)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no reconnection: %v", err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// Idle connections are closed, which lets the genuine bupstash gc run
// (a pull session's lock would keep it waiting); the list then loses
// the removed item, and its chunks are reported missing.
func TestSourceIdleCloseLetsGCRun(t *testing.T) {
	const v = "0.12.1"
	f := fixtures[5]
	ctx := testContext(t, 2*time.Minute)
	dir := copyRepo(t, f.dir)
	keyPath := filepath.Join(moduleRoot(t), f.key)
	r, src := openRemote(t, ctx, serveCommand(t, v, dir), loadKey(t, f.key),
		Options{IdleClose: 300 * time.Millisecond, Refresh: 50 * time.Millisecond})
	o, files := snapshotFiles(t, ctx, r)
	if _, err := readFile(ctx, o, files[0]); err != nil {
		t.Fatal(err)
	}
	// The pull session is open now, holding the lock; gc waits for the
	// idle close.
	bupstashClient(t, v, dir, keyPath, "rm", "id="+o.Item().ID.String())
	gcCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	gc := exec.CommandContext(gcCtx, testtools.Bupstash(t, v), "gc")
	gc.Env = append(serverEnv(t), "BUPSTASH_REPOSITORY="+dir, "BUPSTASH_KEY="+keyPath)
	start := time.Now()
	if out, err := gc.CombinedOutput(); err != nil {
		t.Fatalf("gc: %v: %s", err, out)
	}
	t.Logf("gc ran after %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(100 * time.Millisecond)
	items, err := r.Items(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.ID == o.Item().ID {
			t.Fatal("removed item still listed after gc")
		}
	}
	// Through a fresh view, so that nothing decoded before gc is used.
	fresh, err := bupstash.New(src, loadKey(t, f.key), bupstash.Options{Cache: cache.New(16 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = readFile(ctx, fresh.OpenItem(o.Item()), files[len(files)-1])
	if !errors.Is(err, bupstash.ErrChunkMissing) {
		t.Fatalf("read of a collected item: %v", err)
	}
	t.Logf("collected: %v", err)
}

// Close ends every server process, busy or idle, promptly.
func TestSourceCloseEndsServers(t *testing.T) {
	f := fixtures[0]
	ctx := testContext(t, time.Minute)
	dir := copyRepo(t, f.dir)
	r, src := openRemote(t, ctx, serveCommand(t, "0.12.1", dir), loadKey(t, f.key), Options{NoPull: true})
	o, files := snapshotFiles(t, ctx, r)
	readFile(ctx, o, files[0])
	// A read in flight when Close comes.
	done := make(chan error, 1)
	go func() {
		_, err := readFile(ctx, o, files[len(files)-1])
		done <- err
	}()
	if len(processesMentioning(dir)) == 0 {
		t.Fatal("no server running")
	}
	start := time.Now()
	src.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v", d)
	}
	waitGone(t, dir)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a read outlived Close")
	}
	if _, err := src.ReadChunk(ctx, bupstash.ChunkRef{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after Close: %v", err)
	}
}

// Warm: a spare connection is dialled alongside the control one, and the
// first data read uses it rather than dialling; unused, it is closed
// after IdleClose like any idle connection.
func TestSourceWarm(t *testing.T) {
	f := fixtures[5]
	ctx := testContext(t, time.Minute)
	dir := copyRepo(t, f.dir)
	r, src := openRemote(t, ctx, serveCommand(t, "0.12.1", dir), loadKey(t, f.key), Options{Warm: true})
	deadline := time.Now().Add(20 * time.Second)
	for src.Stats().Dials < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no spare connection dialled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	o, files := snapshotFiles(t, ctx, r)
	if _, err := readFile(ctx, o, files[0]); err != nil {
		t.Fatal(err)
	}
	if d := src.Stats().Dials; d != 2 {
		t.Fatalf("%d connections dialled, want the control one and the spare", d)
	}

	dir2 := copyRepo(t, f.dir)
	_, idle := openRemote(t, ctx, serveCommand(t, "0.12.1", dir2), loadKey(t, f.key), Options{Warm: true, IdleClose: 200 * time.Millisecond})
	for idle.Stats().Dials < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	// The control connection is idle too: nothing is left.
	waitGone(t, dir2)
}
