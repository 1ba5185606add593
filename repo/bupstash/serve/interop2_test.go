package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// tallRepo writes a repository with a raw item whose data tree is high:
// 16-byte leaves, nodes of at most three entries.
func tallRepo(t *testing.T) (dir string, meta bupstash.HTreeMeta, id bupstash.Xid) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "repo")
	r, err := testrepo.Create(dir, &testrepo.Options{MinChunkSize: 16, MaxChunkSize: 16, NodeMinSize: 80, NodeMaxSize: 120})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16*200)
	for i := range data {
		data[i] = byte(i*7 + i/16)
	}
	info, err := r.AddRaw(context.Background(), bytes.NewReader(data), testrepo.ItemMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if info.DataHTree.Height < 3 {
		t.Fatalf("tree of height %d", info.DataHTree.Height)
	}
	return dir, info.DataHTree, info.ID
}

// TestTallTrees reads a tree of height 5 by leaves picked out of order
// of the node boundaries, and all of it in one range that spans every
// bottom node: the range bug of 0.10.x/0.11.0 servers (an underflow when
// a range crosses a bottom node) is fixed from 0.11.1 on.
func TestTallTrees(t *testing.T) {
	for _, v := range []string{"0.11.1", "0.12.1"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			dir, meta, id := tallRepo(t)
			ctx := testContext(t, time.Minute)
			c, err := Dial(ctx, serveCommand(t, v, dir), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cu, err := c.NewCursor(id, meta)
			if err != nil {
				t.Fatal(err)
			}
			nodes := map[bupstash.Address]bool{}
			for _, i := range []uint64{0, 2, 3, 8, 9, 26, 27, 28, 80, 199} {
				cc, err := cu.Leaf(i, nil, func(ch Chunk) {
					sameChunk(t, dir, ch)
					if nodes[ch.Addr] {
						t.Errorf("node %s sent twice in one session", ch.Addr)
					}
					nodes[ch.Addr] = true
				})
				if err != nil {
					t.Fatal(err)
				}
				chs, err := cc.Wait(ctx)
				if err != nil {
					t.Fatalf("leaf %d: %v", i, err)
				}
				sameChunk(t, dir, chs[0])
			}
			cu.End()

			// One range over every leaf, read by the server's own rules.
			if err := c.start(nil, dataRequest(id, true), rangesRequest([]leafRange{{0, meta.DataChunkCount - 1}}), rangesRequest(nil)); err != nil {
				t.Fatal(err)
			}
			walk, _ := newTreeWalk(meta)
			var leaves uint64
			ex := newExchange(func(pr *packetReader) error {
				return walkWhole(pr, walk, nil, func(ch Chunk) error {
					sameChunk(t, dir, ch)
					if ch.Height == 0 {
						leaves++
					}
					return nil
				})
			}, nil)
			c.mu.Lock()
			c.enqueueLocked(ex)
			c.mu.Unlock()
			if err := ex.wait(ctx); err != nil {
				t.Fatal(err)
			}
			if leaves != meta.DataChunkCount {
				t.Fatalf("%d leaves of %d", leaves, meta.DataChunkCount)
			}
			if m, err := c.Metadata(ctx, id); err != nil || m == nil {
				t.Fatalf("connection unusable after the range: %v", err)
			}
		})
	}
}

// TestPipelining writes many requests before reading any answer, on one
// connection, and gets every answer in order: bupstash serve reads the
// next request only when it has answered the last, and the pipes hold
// the rest.
func TestPipelining(t *testing.T) {
	f := fixtures[2] // v0.10.3, which every server opens
	for _, v := range testtools.BupstashVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			dir := copyRepo(t, f.dir)
			ctx := testContext(t, time.Minute)
			c, err := Dial(ctx, serveCommand(t, v, dir), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			items := liveItems(t, dir)
			var ids []bupstash.Xid
			for id := range items {
				ids = append(ids, id)
			}
			var reqs []request
			var exs []*exchange
			results := make([][]byte, 0, 50)
			for i := range 50 {
				reqs = append(reqs, metadataRequest(ids[i%len(ids)]))
				results = append(results, nil)
				exs = append(exs, newExchange(func(pr *packetReader) (err error) {
					results[i], err = recvMetadata(pr)
					return err
				}, nil))
			}
			// All requests in one write, every answer queued before.
			c.wmu.Lock()
			c.mu.Lock()
			for _, ex := range exs {
				c.enqueueLocked(ex)
			}
			c.mu.Unlock()
			err = c.writeLocked(reqs...)
			c.wmu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			for i, ex := range exs {
				if err := ex.wait(ctx); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(results[i], items[ids[i%len(ids)]]) {
					t.Fatalf("answer %d is not item %s's", i, ids[i%len(ids)])
				}
			}
		})
	}
}

// TestAllowListOnly: a server run with --allow-list lists, gives
// metadata and indexes, and refuses data, saying so in one line.
func TestAllowListOnly(t *testing.T) {
	f := fixtures[2]
	for _, v := range testtools.BupstashVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			dir := copyRepo(t, f.dir)
			ctx := testContext(t, time.Minute)
			cmd := serveCommand(t, v, dir, "--allow-list")
			c, err := Dial(ctx, cmd, DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var log ItemLog
			if _, err := log.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			var snapshot LogItem
			for _, it := range log.Live() {
				if _, ix := treesOf(t, it.Meta); ix != nil {
					snapshot = it
				}
			}
			data, index := treesOf(t, snapshot.Meta)
			checkIndex(t, c, dir, snapshot.ID, *index)

			cu, _ := c.NewCursor(snapshot.ID, data)
			cc, err := cu.Leaf(0, nil, nil)
			if err == nil {
				_, err = cc.Wait(ctx)
			}
			if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "bupstash serve: server has disabled get for this client") {
				t.Fatalf("data from a list-only server: %v", err)
			}
			t.Logf("data: %v", err)
			if v == "0.10.3" {
				return
			}
			c, err = Dial(ctx, cmd, DialOptions{Protocol: Protocol13})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.BeginPull(ctx)
			if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "server has disabled get (and therefore sync pull) for this client") {
				t.Fatalf("pull from a list-only server: %v", err)
			}
			t.Logf("pull: %v", err)
		})
	}
}

// bupstashClient runs the genuine client of version on a repository.
func bupstashClient(t *testing.T, version, dir, key string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testtools.Bupstash(t, version), args...)
	cmd.Env = append(serverEnv(t), "BUPSTASH_REPOSITORY="+dir, "BUPSTASH_KEY="+key,
		"BUPSTASH_QUERY_CACHE="+filepath.Join(t.TempDir(), "qcache"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bupstash %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOpLogFollowsChanges: the item list follows rm, recover-removed,
// put and gc made by the genuine client, incrementally while the
// generation stays, from the start when gc cycles it.
func TestOpLogFollowsChanges(t *testing.T) {
	for _, tc := range []struct{ version, fixture, key string }{
		{"0.10.3", "testdata/bupstash-versions/v0.10.3", "primary.key"},
		{"0.11.1", "testdata/bupstash-versions/v0.11.1", "primary.key"},
		{"0.12.1", "testdata/bupstash-0.12.1", "keys/primary.key"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			t.Parallel()
			dir := copyRepo(t, tc.fixture+"/repo")
			key := filepath.Join(moduleRoot(t), tc.fixture, tc.key)
			ctx := testContext(t, time.Minute)
			c, err := Dial(ctx, serveCommand(t, tc.version, dir), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var log ItemLog
			if _, err := log.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			sameAsDir := func(step string) {
				t.Helper()
				want := liveItems(t, dir)
				got := map[bupstash.Xid][]byte{}
				for _, it := range log.Live() {
					got[it.ID] = it.Meta
				}
				if fmt.Sprint(sortedIDs(got)) != fmt.Sprint(sortedIDs(want)) {
					t.Fatalf("after %s: %v, want %v", step, sortedIDs(got), sortedIDs(want))
				}
			}
			sync := func(step string, wantChanged, wantFull bool) {
				t.Helper()
				before := log.Len()
				gen := log.Generation()
				changed, err := log.Sync(ctx, c)
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				if changed != wantChanged {
					t.Fatalf("%s: changed %v", step, changed)
				}
				if full := log.Generation() != gen; full != wantFull {
					t.Fatalf("%s: new generation %v", step, full)
				}
				if !wantFull && wantChanged && log.Len() <= before {
					t.Fatalf("%s: %d ops after %d", step, log.Len(), before)
				}
				sameAsDir(step)
			}
			sameAsDir("first sync")
			var victim string
			for id := range liveItems(t, dir) {
				victim = id.String()
				break
			}
			bupstashClient(t, tc.version, dir, key, "rm", "id="+victim)
			sync("rm", true, false)
			bupstashClient(t, tc.version, dir, key, "recover-removed")
			sync("recover-removed", true, false)
			sync("nothing", false, false)
			file := filepath.Join(t.TempDir(), "new.txt")
			os.WriteFile(file, []byte("new item\n"), 0o644)
			bupstashClient(t, tc.version, dir, key, "put", "--no-send-log", file)
			sync("put", true, false)
			bupstashClient(t, tc.version, dir, key, "rm", "id="+victim)
			sync("rm again", true, false)
			bupstashClient(t, tc.version, dir, key, "gc")
			sync("gc", true, true)
			sync("nothing after gc", false, false)
			// After gc the log holds only live items' AddItems.
			var rebuilt ItemLog
			if _, err := rebuilt.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			if rebuilt.Token() != log.Token() {
				t.Fatalf("incremental state %s, fresh %s", log.Token(), rebuilt.Token())
			}
			oplog, _ := os.ReadFile(filepath.Join(dir, "repo.oplog"))
			if !strings.HasSuffix(log.Token(), fmt.Sprintf(":%d", len(oplog))) {
				t.Fatalf("log end %s, repo.oplog has %d bytes", log.Token(), len(oplog))
			}
		})
	}
}

// TestProbe: the version comes from the server's refusal; a server that
// says nothing is tried with "11" once; an unknown version and other
// failures are reported in the server's words.
func TestProbe(t *testing.T) {
	dir := copyRepo(t, fixtures[2].dir)
	bin := testtools.Bupstash(t, "0.10.3")
	ctx := testContext(t, time.Minute)
	sh := func(script string) Command {
		return Command{Argv: []string{"sh", "-c", script}, Env: serverEnv(t), Name: "sh"}
	}
	c, err := Dial(ctx, sh(fmt.Sprintf("exec %s serve %s 2>/dev/null", bin, dir)), DialOptions{})
	if err != nil {
		t.Fatalf("silent 0.10.3: %v", err)
	}
	if c.Protocol() != Protocol11 {
		t.Fatalf("silent 0.10.3: protocol %v", c.Protocol())
	}
	c.Close()

	_, err = Dial(ctx, sh(`cat >/dev/null & echo "bupstash serve: client and server protocol versions are incompatible, got 13, wanted 8" >&2; exit 1`), DialOptions{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "0.9") {
		t.Fatalf("wanted 8: %v", err)
	}
	_, err = Dial(ctx, sh(`echo "ssh: Could not resolve hostname nowhere: Name or service not known" >&2; exit 255`), DialOptions{})
	if !errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), "Could not resolve hostname nowhere") {
		t.Fatalf("ssh failure: %v", err)
	}
	if strings.Count(err.Error(), "Could not resolve") != 1 {
		t.Errorf("error repeats itself: %v", err)
	}
	_, err = Dial(ctx, Command{Argv: []string{"/nonexistent/ssh"}, Name: "x"}, DialOptions{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ssh") {
		t.Fatalf("missing program: %v", err)
	}
	_, err = Dial(ctx, sh(`exit 3`), DialOptions{})
	if !errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("silent failure: %v", err)
	}
}
