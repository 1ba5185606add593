package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"lukechampine.com/blake3"
)

// testTree is a hash tree of height 2 made up in the test: six leaves
// under two bottom nodes under a root.
type testTree struct {
	meta   bupstash.HTreeMeta
	root   []byte // stored: entries ‖ footer
	bottom [2][]byte
	bAddr  [2]bupstash.Address
	leaves [6][]byte
	lAddr  [6]bupstash.Address
}

func nodeOf(counts []uint64, addrs []bupstash.Address) ([]byte, bupstash.Address) {
	var b []byte
	for i := range counts {
		b = binary.LittleEndian.AppendUint64(b, counts[i])
		b = append(b, addrs[i][:]...)
	}
	addr := bupstash.Address(blake3.Sum256(b))
	return append(b, 0), addr
}

func newTestTree() *testTree {
	t := &testTree{}
	for i := range t.leaves {
		t.leaves[i] = bytes.Repeat([]byte{byte('a' + i)}, 100+i)
		t.lAddr[i] = bupstash.Address(blake3.Sum256(t.leaves[i]))
	}
	for j := range 2 {
		t.bottom[j], t.bAddr[j] = nodeOf([]uint64{1, 1, 1}, t.lAddr[3*j:3*j+3])
	}
	var rootAddr bupstash.Address
	t.root, rootAddr = nodeOf([]uint64{3, 3}, t.bAddr[:])
	t.meta = bupstash.HTreeMeta{Height: 2, DataChunkCount: 6, Address: rootAddr}
	return t
}

// expectFail waits for a request's error, within a deadline: a hostile
// server must never make a test hang.
func expectFail(t *testing.T, what string, f func(ctx context.Context) error, want ...error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := f(ctx)
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: hung until the test's deadline (%v)", what, err)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Fatalf("%s: %v, want %v", what, err, w)
		}
	}
	return err
}

func TestHostileOversized(t *testing.T) {
	cases := []struct {
		name string
		size uint32
		kind msg
	}{
		{"4 GiB packet", 0xffffffff, msgMetadataReply},
		{"just over the packet limit", MaxPacket + 1, msgChunk},
		{"metadata over its own limit", 16 << 20, msgMetadataReply},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
				if _, err := s.expect(msgRequestMetadata); err != nil {
					return err
				}
				if err := s.writeRaw(tc.size, s.kinds.wire[tc.kind], make([]byte, 64)); err != nil {
					return err
				}
				return s.hang()
			})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			expectFail(t, tc.name, func(ctx context.Context) error {
				_, err := c.Metadata(ctx, bupstash.Xid{1})
				return err
			}, ErrProtocol)
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
				t.Errorf("allocated %d bytes for a packet it refused", grew)
			}
		})
	}
}

func TestHostileWrongKind(t *testing.T) {
	t.Run("chunk for metadata", func(t *testing.T) {
		c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
			s.expect(msgRequestMetadata)
			s.chunk(bupstash.Address{1}, []byte("x"))
			return s.hang()
		})
		expectFail(t, "metadata", func(ctx context.Context) error {
			_, err := c.Metadata(ctx, bupstash.Xid{1})
			return err
		}, ErrProtocol)
	})
	t.Run("unknown kind", func(t *testing.T) {
		c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
			s.expect(msgRequestMetadata)
			s.writeRaw(0, 200, nil)
			return s.hang()
		})
		err := expectFail(t, "metadata", func(ctx context.Context) error {
			_, err := c.Metadata(ctx, bupstash.Xid{1})
			return err
		}, ErrProtocol)
		if !strings.Contains(err.Error(), "kind 200") {
			t.Errorf("error does not name the kind: %v", err)
		}
	})
	t.Run("oplog for open", func(t *testing.T) {
		c, _ := startFake(t, Protocol13, time.Minute, func(s *fakeServer) error {
			s.expect(msgOpen)
			s.write(msgSyncLogOps, []byte{0})
			return s.hang()
		})
		expectFail(t, "open", c.open, ErrProtocol)
	})
	t.Run("v11 kinds on v13", func(t *testing.T) {
		// 19 is SyncLogOps in protocol 11 but RRequestOpLogSync in 13.
		c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
			s.expect(msgOpLogSync)
			s.write(msgSyncLogOps, []byte{0})
			return s.hang()
		})
		expectFail(t, "oplog", func(ctx context.Context) error {
			_, _, err := c.SyncOpLog(ctx, nil, nil)
			return err
		}, ErrProtocol)
	})
}

func TestHostileTrailingBytes(t *testing.T) {
	gen := make([]byte, 16)
	cases := []struct {
		name   string
		script func(s *fakeServer) error
		call   func(ctx context.Context, c *Conn) error
	}{
		{"oplog reply", func(s *fakeServer) error {
			s.expect(msgOpLogSync)
			return s.write(msgOpLogSyncReply, append(gen, 0))
		}, func(ctx context.Context, c *Conn) error { _, _, err := c.SyncOpLog(ctx, nil, nil); return err }},
		{"oplog ops", func(s *fakeServer) error {
			s.expect(msgOpLogSync)
			s.write(msgOpLogSyncReply, gen)
			return s.write(msgSyncLogOps, []byte{1, 2, 0xff}) // RecoverRemoved, then junk
		}, func(ctx context.Context, c *Conn) error { _, _, err := c.SyncOpLog(ctx, nil, nil); return err }},
		{"no metadata", func(s *fakeServer) error {
			s.expect(msgRequestMetadata)
			return s.write(msgMetadataReply, []byte{0, 0})
		}, func(ctx context.Context, c *Conn) error { _, err := c.Metadata(ctx, bupstash.Xid{}); return err }},
		{"metadata", func(s *fakeServer) error {
			s.expect(msgRequestMetadata)
			meta := append([]byte{1, 2}, make([]byte, 16+8+1+1+32+1+1)...)
			return s.write(msgMetadataReply, append(meta, 7))
		}, func(ctx context.Context, c *Conn) error { _, err := c.Metadata(ctx, bupstash.Xid{}); return err }},
		{"pull reply", func(s *fakeServer) error {
			s.expect(msgBeginPull)
			return s.write(msgBeginPullReply, []byte{0})
		}, func(ctx context.Context, c *Conn) error { return c.BeginPull(ctx) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
				if err := tc.script(s); err != nil {
					return err
				}
				return s.hang()
			})
			expectFail(t, tc.name, func(ctx context.Context) error { return tc.call(ctx, c) }, ErrProtocol)
		})
	}
}

func TestHostileChunks(t *testing.T) {
	tr := newTestTree()
	pull := func(s *fakeServer) error {
		if _, err := s.expect(msgBeginPull); err != nil {
			return err
		}
		if err := s.write(msgBeginPullReply, nil); err != nil {
			return err
		}
		_, err := s.expect(msgPullAddresses)
		return err
	}
	t.Run("reordered", func(t *testing.T) {
		c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
			pull(s)
			s.chunk(tr.lAddr[1], tr.leaves[1])
			s.chunk(tr.lAddr[0], tr.leaves[0])
			return s.hang()
		})
		expectFail(t, "pull", func(ctx context.Context) error {
			if err := c.BeginPull(ctx); err != nil {
				return err
			}
			cc, err := c.Pull(tr.lAddr[:2], nil)
			if err != nil {
				return err
			}
			_, err = cc.Wait(ctx)
			return err
		}, ErrProtocol)
	})
	t.Run("shorter than an address", func(t *testing.T) {
		c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
			pull(s)
			s.write(msgChunk, make([]byte, 31))
			return s.hang()
		})
		expectFail(t, "pull", func(ctx context.Context) error {
			if err := c.BeginPull(ctx); err != nil {
				return err
			}
			cc, err := c.Pull(tr.lAddr[:1], nil)
			if err != nil {
				return err
			}
			_, err = cc.Wait(ctx)
			return err
		}, ErrProtocol)
	})

	// A partial-data session where the server's nodes or leaves are not
	// the ones the walk needs.
	badNode := append([]byte(nil), tr.root...)
	badNode[0] ^= 1
	badCounts, badCountsAddr := nodeOf([]uint64{2, 4}, tr.bAddr[:])
	compressed := append(tr.root[:len(tr.root)-1:len(tr.root)-1], 1)
	partial := []struct {
		name  string
		meta  bupstash.HTreeMeta
		serve func(s *fakeServer) error
		want  error
	}{
		{"node not matching its address", tr.meta, func(s *fakeServer) error {
			return s.chunk(tr.meta.Address, badNode)
		}, bupstash.ErrCorrupt},
		{"node with wrong counts", bupstash.HTreeMeta{Height: 2, DataChunkCount: 6, Address: badCountsAddr}, func(s *fakeServer) error {
			s.chunk(badCountsAddr, badCounts)
			return s.chunk(tr.bAddr[0], tr.bottom[0]) // 3 leaves, where the root says 2
		}, bupstash.ErrCorrupt},
		{"compressed node", tr.meta, func(s *fakeServer) error {
			return s.chunk(tr.meta.Address, compressed)
		}, bupstash.ErrCorrupt},
		{"leaf instead of node", tr.meta, func(s *fakeServer) error {
			return s.chunk(tr.lAddr[0], tr.leaves[0])
		}, ErrProtocol},
		{"wrong leaf", tr.meta, func(s *fakeServer) error {
			s.chunk(tr.meta.Address, tr.root)
			s.chunk(tr.bAddr[0], tr.bottom[0])
			return s.chunk(tr.lAddr[1], tr.leaves[1])
		}, ErrProtocol},
		{"node again", tr.meta, func(s *fakeServer) error {
			s.chunk(tr.meta.Address, tr.root)
			return s.chunk(tr.meta.Address, tr.root)
		}, ErrProtocol},
	}
	for _, tc := range partial {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
				s.expect(msgRequestData)
				s.expect(msgRequestDataRanges)
				if err := tc.serve(s); err != nil {
					return err
				}
				return s.hang()
			})
			expectFail(t, tc.name, func(ctx context.Context) error {
				cu, err := c.NewCursor(bupstash.Xid{1}, tc.meta)
				if err != nil {
					return err
				}
				cc, err := cu.Leaf(0, nil, nil)
				if err != nil {
					return err
				}
				_, err = cc.Wait(ctx)
				return err
			}, tc.want)
		})
	}
}

// TestPartialWalk serves a tree of height 2 the way Bupstash's server
// does and checks the client asks, and expects, exactly that.
func TestPartialWalk(t *testing.T) {
	tr := newTestTree()
	c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
		if _, err := s.expect(msgRequestData); err != nil {
			return err
		}
		// Leaf 1: root, bottom 0, leaf 1. Leaf 4: bottom 1, leaf 4.
		// Leaf 5: just the leaf.
		steps := []func() error{
			func() error {
				s.chunk(tr.meta.Address, tr.root)
				s.chunk(tr.bAddr[0], tr.bottom[0])
				return s.chunk(tr.lAddr[1], tr.leaves[1])
			},
			func() error { s.chunk(tr.bAddr[1], tr.bottom[1]); return s.chunk(tr.lAddr[4], tr.leaves[4]) },
			func() error { return s.chunk(tr.lAddr[5], tr.leaves[5]) },
		}
		wantRanges := [][]byte{{1, 1, 1}, {1, 4, 4}, {1, 5, 5}}
		for i, step := range steps {
			p, err := s.expect(msgRequestDataRanges)
			if err != nil {
				return err
			}
			if !bytes.Equal(p, wantRanges[i]) {
				return errors.New("unexpected ranges")
			}
			if err := step(); err != nil {
				return err
			}
		}
		if p, err := s.expect(msgRequestDataRanges); err != nil || len(p) != 1 || p[0] != 0 {
			return errors.New("no end of session")
		}
		return s.hang()
	})
	ctx := testContext(t, 10*time.Second)
	cu, err := c.NewCursor(bupstash.Xid{1}, tr.meta)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []bupstash.Address
	var calls []*ChunkCall
	for _, i := range []uint64{1, 4, 5} {
		cc, err := cu.Leaf(i, nil, func(ch Chunk) { nodes = append(nodes, ch.Addr) })
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, cc)
	}
	for k, i := range []int{1, 4, 5} {
		chs, err := calls[k].Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if chs[0].Addr != tr.lAddr[i] || !bytes.Equal(chs[0].Data, tr.leaves[i]) {
			t.Fatalf("leaf %d: wrong chunk", i)
		}
	}
	if len(nodes) != 3 || nodes[0] != tr.meta.Address || nodes[1] != tr.bAddr[0] || nodes[2] != tr.bAddr[1] {
		t.Fatalf("nodes %v", nodes)
	}
	if err := cu.End(); err != nil {
		t.Fatal(err)
	}
}

func TestHostileTruncated(t *testing.T) {
	c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgBeginPull)
		s.write(msgBeginPullReply, nil)
		s.expect(msgPullAddresses)
		var a bupstash.Address
		s.writeRaw(1000, s.kinds.wire[msgChunk], append(a[:], 1, 2, 3))
		return s.exit("bupstash serve: Input/output error (os error 5)")
	})
	err := expectFail(t, "pull", func(ctx context.Context) error {
		if err := c.BeginPull(ctx); err != nil {
			return err
		}
		cc, err := c.Pull([]bupstash.Address{{}}, nil)
		if err != nil {
			return err
		}
		_, err = cc.Wait(ctx)
		return err
	}, ErrDisconnected)
	if !strings.Contains(err.Error(), "bupstash serve: Input/output error") {
		t.Errorf("error does not give the server's line: %v", err)
	}
}

func TestHostileStall(t *testing.T) {
	const stall = 200 * time.Millisecond
	cases := []struct {
		name string
		send func(s *fakeServer) error
	}{
		{"nothing", func(s *fakeServer) error { return nil }},
		{"a header", func(s *fakeServer) error { return s.writeRaw(40, s.kinds.wire[msgMetadataReply], nil) }},
		{"part of the payload", func(s *fakeServer) error {
			return s.writeRaw(40, s.kinds.wire[msgMetadataReply], []byte{1, 2})
		}},
		{"a byte at a time, slower than the timeout", func(s *fakeServer) error {
			s.writeRaw(40, s.kinds.wire[msgMetadataReply], []byte{1})
			time.Sleep(stall / 2)
			s.outW.Write([]byte{2})
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := openFake(t, stall, func(s *fakeServer) error {
				s.expect(msgRequestMetadata)
				if err := tc.send(s); err != nil {
					return err
				}
				return s.hang()
			})
			start := time.Now()
			expectFail(t, tc.name, func(ctx context.Context) error {
				_, err := c.Metadata(ctx, bupstash.Xid{1})
				return err
			}, ErrStalled, ErrDisconnected)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to notice a stall of %v", d, stall)
			}
		})
	}
	t.Run("idle is not stalled", func(t *testing.T) {
		c, _ := openFake(t, stall, func(s *fakeServer) error {
			s.expect(msgRequestMetadata)
			s.write(msgMetadataReply, []byte{0})
			return s.hang()
		})
		time.Sleep(3 * stall)
		ctx := testContext(t, 10*time.Second)
		if m, err := c.Metadata(ctx, bupstash.Xid{1}); err != nil || m != nil {
			t.Fatalf("metadata after idling: %v, %v", m, err)
		}
	})
}

func TestAbort(t *testing.T) {
	abort := func(message string, code *uint64) []byte {
		p := append([]byte{byte(len(message))}, message...)
		if code == nil {
			return append(p, 0)
		}
		return binary.LittleEndian.AppendUint64(append(p, 1), *code)
	}
	unavailable := uint64(abortCodeUnavailable)
	other := uint64(7)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"unavailable", abort("busy", &unavailable), ErrUnavailable},
		{"other", abort("no such thing", &other), nil},
		{"no code", abort("no such thing", nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
				s.expect(msgRequestMetadata)
				s.write(msgAbort, tc.payload)
				return s.hang()
			})
			err := expectFail(t, "metadata", func(ctx context.Context) error {
				_, err := c.Metadata(ctx, bupstash.Xid{1})
				return err
			})
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("%v is not a RemoteError", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if tc.want == nil && errors.Is(err, ErrUnavailable) {
				t.Fatalf("%v taken as unavailable", err)
			}
			if c.Err() == nil {
				t.Fatal("connection still open after an abort")
			}
		})
	}
}

func TestServerRefuses(t *testing.T) {
	c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgBeginPull)
		return s.exit("bupstash serve: server has disabled get (and therefore sync pull) for this client")
	})
	err := expectFail(t, "pull", c.BeginPull, ErrPermission)
	if !strings.Contains(err.Error(), "server has disabled get") {
		t.Errorf("error does not give the server's line: %v", err)
	}
}

// TestAbandonedRequest: a caller that gives up does not put the stream
// out of step: its answer is read and dropped.
func TestAbandonedRequest(t *testing.T) {
	release := make(chan struct{})
	c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgRequestMetadata)
		<-release
		s.write(msgMetadataReply, []byte{0})
		s.expect(msgRequestMetadata)
		return s.write(msgMetadataReply, []byte{0})
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := c.Metadata(ctx, bupstash.Xid{1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned: %v", err)
	}
	close(release)
	if m, err := c.Metadata(testContext(t, 10*time.Second), bupstash.Xid{2}); err != nil || m != nil {
		t.Fatalf("after abandoning: %v, %v", m, err)
	}
}

// TestPipelinedFailure: when the server dies, every request in flight
// fails, and none hangs.
func TestPipelinedFailure(t *testing.T) {
	tr := newTestTree()
	c, _ := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgBeginPull)
		s.write(msgBeginPullReply, nil)
		for range 3 {
			s.expect(msgPullAddresses)
		}
		s.chunk(tr.lAddr[0], tr.leaves[0])
		return s.exit("bupstash serve: No such file or directory (os error 2)")
	})
	ctx := testContext(t, 10*time.Second)
	if err := c.BeginPull(ctx); err != nil {
		t.Fatal(err)
	}
	var calls []*ChunkCall
	for i := range 3 {
		cc, err := c.Pull(tr.lAddr[i:i+1], nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, cc)
	}
	if chs, err := calls[0].Wait(ctx); err != nil || !bytes.Equal(chs[0].Data, tr.leaves[0]) {
		t.Fatalf("first: %v", err)
	}
	for _, cc := range calls[1:] {
		if _, err := cc.Wait(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("later: %v", err)
		}
	}
	if _, err := c.Pull(tr.lAddr[:1], nil); err == nil {
		t.Fatal("pull on a dead connection")
	}
}

// TestOnlyReadRequests: every packet the client sends is a read-only
// request, and the writer refuses anything else.
func TestOnlyReadRequests(t *testing.T) {
	tr := newTestTree()
	c, s := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgOpLogSync)
		s.write(msgOpLogSyncReply, make([]byte, 16))
		s.write(msgSyncLogOps, []byte{0})
		s.expect(msgRequestMetadata)
		s.write(msgMetadataReply, []byte{0})
		s.expect(msgBeginPull)
		s.write(msgBeginPullReply, nil)
		s.expect(msgPullAddresses)
		s.chunk(tr.lAddr[0], tr.leaves[0])
		s.expect(msgEndPull)
		s.write(msgEndPullReply, nil)
		s.expect(msgEnd)
		return nil
	})
	ctx := testContext(t, 10*time.Second)
	var log ItemLog
	if _, err := log.Sync(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Metadata(ctx, bupstash.Xid{})
	c.BeginPull(ctx)
	cc, _ := c.Pull(tr.lAddr[:1], nil)
	cc.Wait(ctx)
	c.EndPull(ctx)
	c.Close()
	<-s.done
	allowed := map[uint8]bool{}
	for m, ok := range clientMsgs {
		if ok {
			allowed[kinds13.wire[m]] = true
		}
	}
	// The kinds Bupstash's write requests use, in protocol 13.
	for _, k := range []uint8{2, 4, 6, 9, 11, 15, 22, 27, 29, 36, 40, 43, 100} {
		if allowed[k] {
			t.Fatalf("kind %d is a write request", k)
		}
	}
	if len(s.sent) != 7 {
		t.Errorf("sent %v", s.sent)
	}
	for _, k := range s.sent {
		if !allowed[k] {
			t.Errorf("client sent kind %d", k)
		}
	}
	var buf bytes.Buffer
	pw := packetWriter{w: bufioWriter(&buf), kinds: kinds13}
	for _, m := range []msg{msgChunk, msgOpenReply, msgAbort, msgNone} {
		if err := pw.write(request{m, nil}); err == nil {
			t.Errorf("writer sent %s", m)
		}
	}
	pw11 := packetWriter{w: bufioWriter(&buf), kinds: kinds11}
	if err := pw11.write(beginPullRequest()); err == nil {
		t.Error("writer sent a pull request on protocol 11")
	}
}

// TestJunkAtClose: a server that keeps talking after the last answer
// does not stop Close.
func TestJunkAtClose(t *testing.T) {
	c, s := openFake(t, time.Minute, func(s *fakeServer) error {
		s.expect(msgEnd)
		s.outW.Write(bytes.Repeat([]byte{1}, 1000))
		return s.hang()
	})
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
	<-s.done
}
