package serve

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// packetStream frames payloads as a server would.
func packetStream(kind uint8, payloads ...[]byte) []byte {
	var b []byte
	for _, p := range payloads {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, kind)
		b = append(b, p...)
	}
	return b
}

// FuzzResponses feeds arbitrary bytes as a server's answers to every
// read the client makes: open, oplog sync, metadata, a whole index tree,
// a partial-data walk and a pull. None may panic or accept trailing
// bytes; each must end in an answer or an error.
func FuzzResponses(f *testing.F) {
	gen := make([]byte, 16)
	oplog, _ := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "bupstash-0.12.1", "repo", "repo.oplog"))
	f.Add(append(packetStream(19, gen), packetStream(20, append([]byte{1}, oplog[:343]...), []byte{0})...))
	f.Add(packetStream(1, make([]byte, 8)))
	f.Add(packetStream(26, []byte{0}))
	f.Add(packetStream(21, []byte("\x04busy\x01\xa6\x27\x5d\x32\xce\xc3\xf5\x9c")))
	tr := newTestTree()
	var walk []byte
	walk = append(walk, packetStream(8, append(tr.meta.Address[:], tr.root...))...)
	walk = append(walk, packetStream(8, append(tr.bAddr[0][:], tr.bottom[0]...))...)
	for i := range 3 {
		walk = append(walk, packetStream(8, append(tr.lAddr[i][:], tr.leaves[i]...))...)
	}
	f.Add(walk)
	f.Fuzz(func(t *testing.T, data []byte) {
		reader := func() *packetReader {
			return &packetReader{r: bufio.NewReader(bytes.NewReader(data)), kinds: kinds13, max: 1 << 20}
		}
		if p, err := reader().expectPayload(msgOpenReply, 8); err == nil {
			decodeOpenReply(p)
		}
		if _, ops, err := recvOpLog(reader()); err == nil {
			var l ItemLog
			for _, op := range ops {
				l.apply(op)
			}
			l.Live()
		}
		if m, err := recvMetadata(reader()); err == nil && m != nil {
			if len(m) >= len(data) {
				t.Fatal("metadata longer than the stream")
			}
		}
		w, _ := newTreeWalk(tr.meta)
		var leaves uint64
		if err := walkWhole(reader(), w, nil, func(ch Chunk) error {
			if ch.Height == 0 {
				leaves++
			}
			return nil
		}); err == nil && leaves != tr.meta.DataChunkCount {
			t.Fatalf("whole walk ended after %d leaves of %d", leaves, tr.meta.DataChunkCount)
		}
		cu := &Cursor{meta: tr.meta}
		cu.walk, _ = newTreeWalk(tr.meta)
		pr := reader()
		for _, i := range []uint64{1, 2, 4} {
			ch, err := cu.walkTo(pr, i, nil, nil)
			if err != nil {
				break
			}
			if ch.Leaf != i || ch.Addr != tr.lAddr[i] {
				t.Fatalf("walk to %d gave leaf %d at %s", i, ch.Leaf, ch.Addr)
			}
		}
		pr = reader()
		for _, a := range []bupstash.Address{tr.lAddr[0], tr.lAddr[1]} {
			if b, err := pr.chunk(a, nil); err != nil || b == nil && false {
				break
			}
		}
	})
}

// FuzzLogOp decodes arbitrary bytes as operations of the log.
func FuzzLogOp(f *testing.F) {
	oplog, _ := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "bupstash-0.12.1", "repo", "repo.oplog"))
	f.Add(oplog)
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2})
	f.Add([]byte{3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l ItemLog
		var off uint64
		for len(b) > 0 {
			op, n, err := DecodeLogOp(b)
			if err != nil {
				break
			}
			if n <= 0 || n > len(b) {
				t.Fatalf("length %d of %d bytes", n, len(b))
			}
			if op.Kind == OpAddItem && (len(op.Meta) == 0 || len(op.Meta) > n) {
				t.Fatalf("metadata of %d bytes in an op of %d", len(op.Meta), n)
			}
			l.apply(rawOp{op, uint64(n)})
			off += uint64(n)
			if l.end != off {
				t.Fatalf("log end %d, want %d", l.end, off)
			}
			b = b[n:]
		}
		l.Live()
		// The same bytes as one SyncLogOps packet.
		decodeSyncLogOps(b)
	})
}
