package serve

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// TestInterop reads every fixture through every genuine server that can
// open it: the item list from the replayed log, metadata, whole index
// trees, data leaves through a partial-data cursor and, on protocol 13,
// through a pull session; every byte against the repository's files.
func TestInterop(t *testing.T) {
	for _, f := range fixtures {
		for _, v := range f.versions {
			t.Run(f.name+"/"+v, func(t *testing.T) {
				t.Parallel()
				dir := copyRepo(t, f.dir)
				ctx := testContext(t, time.Minute)
				c, err := Dial(ctx, serveCommand(t, v, dir), DialOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				wantProto := Protocol13
				if v == "0.10.3" {
					wantProto = Protocol11
				}
				if c.Protocol() != wantProto {
					t.Fatalf("protocol %v, want %v", c.Protocol(), wantProto)
				}
				if skew := time.Since(c.ServerTime()); skew > time.Minute || skew < -time.Minute {
					t.Errorf("server time %v", c.ServerTime())
				}

				var log ItemLog
				if _, err := log.Sync(ctx, c); err != nil {
					t.Fatal(err)
				}
				want := liveItems(t, dir)
				got := map[bupstash.Xid][]byte{}
				for _, it := range log.Live() {
					got[it.ID] = it.Meta
				}
				if fmt.Sprint(sortedIDs(got)) != fmt.Sprint(sortedIDs(want)) {
					t.Fatalf("live items %v, want %v", sortedIDs(got), sortedIDs(want))
				}
				for id, meta := range want {
					if !bytes.Equal(got[id], meta) {
						t.Errorf("item %s: oplog metadata differs from the item file", id)
					}
				}
				// Nothing new: an incremental sync changes nothing.
				tok := log.Token()
				if changed, err := log.Sync(ctx, c); err != nil || changed || log.Token() != tok {
					t.Fatalf("second sync: changed %v, %v; token %s → %s", changed, err, tok, log.Token())
				}

				for id, meta := range want {
					m, err := c.Metadata(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(m, meta) {
						t.Errorf("metadata of %s differs from the item file", id)
					}
				}
				for id, meta := range removedItems(t, dir) {
					m, err := c.Metadata(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(m, meta) {
						t.Errorf("metadata of removed %s: got %d bytes, want the .removed file", id, len(m))
					}
				}

				for id, meta := range want {
					data, index := treesOf(t, meta)
					if index != nil {
						checkIndex(t, c, dir, id, *index)
					}
					checkCursor(t, c, dir, id, data)
				}
				if c.Protocol() == Protocol13 {
					checkPull(t, c, dir, want)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				if err := c.Err(); !errors.Is(err, ErrClosed) {
					t.Errorf("after Close: %v", err)
				}
			})
		}
	}
}

func checkIndex(t *testing.T, c *Conn, dir string, id bupstash.Xid, meta bupstash.HTreeMeta) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	var leaves uint64
	call, err := c.Index(id, meta, nil, func(ch Chunk) error {
		sameChunk(t, dir, ch)
		if ch.Height == 0 {
			if ch.Leaf != leaves {
				return fmt.Errorf("leaf %d numbered %d", leaves, ch.Leaf)
			}
			leaves++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Wait(ctx); err != nil {
		t.Fatalf("index of %s: %v", id, err)
	}
	if leaves != meta.DataChunkCount {
		t.Fatalf("index of %s: %d leaves, want %d", id, leaves, meta.DataChunkCount)
	}
}

// checkCursor reads every leaf of a data tree through one cursor, all
// requests written before the first answer is read.
func checkCursor(t *testing.T, c *Conn, dir string, id bupstash.Xid, meta bupstash.HTreeMeta) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	cu, err := c.NewCursor(id, meta)
	if err != nil {
		t.Fatal(err)
	}
	var nodes int
	var calls []*ChunkCall
	for i := uint64(0); i < meta.DataChunkCount; i++ {
		cc, err := cu.Leaf(i, nil, func(ch Chunk) {
			sameChunk(t, dir, ch)
			nodes++
		})
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, cc)
	}
	for i, cc := range calls {
		chs, err := cc.Wait(ctx)
		if err != nil {
			t.Fatalf("item %s leaf %d: %v", id, i, err)
		}
		if len(chs) != 1 || chs[0].Leaf != uint64(i) {
			t.Fatalf("leaf %d: got %v", i, chs)
		}
		sameChunk(t, dir, chs[0])
	}
	if meta.Height > 0 && nodes == 0 {
		t.Errorf("no interior nodes seen for a tree of height %d", meta.Height)
	}
	if _, err := cu.Leaf(0, nil, nil); !errors.Is(err, ErrBehindCursor) {
		t.Errorf("leaf behind the cursor: %v", err)
	}
	if err := cu.End(); err != nil {
		t.Fatal(err)
	}
}

// checkPull fetches every chunk of every live item by address, in
// batches pipelined on one connection.
func checkPull(t *testing.T, c *Conn, dir string, items map[bupstash.Xid][]byte) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	var addrs []bupstash.Address
	for _, meta := range items {
		data, index := treesOf(t, meta)
		addrs = append(addrs, data.Address)
		if index != nil {
			addrs = append(addrs, index.Address)
		}
	}
	if err := c.BeginPull(ctx); err != nil {
		t.Fatal(err)
	}
	var calls []*ChunkCall
	for i := 0; i < len(addrs); i += 2 {
		cc, err := c.Pull(addrs[i:min(i+2, len(addrs))], nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, cc)
	}
	n := 0
	for _, cc := range calls {
		chs, err := cc.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chs {
			sameChunk(t, dir, ch)
			n++
		}
	}
	if n != len(addrs) {
		t.Fatalf("%d chunks for %d addresses", n, len(addrs))
	}
	if err := c.EndPull(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Protocol().Describe(), "0.11") {
		t.Errorf("describe: %s", c.Protocol().Describe())
	}
}
