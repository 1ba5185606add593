package serve

import (
	"encoding/binary"
	"fmt"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// request is an encoded request. Only the constructors below make them,
// and only for read-only requests: a read-only client never sends a
// packet that changes a repository (put, remove, gc, recover-removed,
// sync push, init), and the server would accept one whatever the open
// mode said.
type request struct {
	msg     msg
	payload []byte
}

// clientMsgs is the allow-list packetWriter enforces.
var clientMsgs = [msgCount]bool{
	msgOpen: true, msgRequestData: true, msgRequestDataRanges: true, msgOpLogSync: true,
	msgRequestIndex: true, msgRequestMetadata: true, msgBeginPull: true, msgPullAddresses: true,
	msgEndPull: true, msgEnd: true,
}

// openModeRead is TOpenRepository's open_mode Read: the server takes no
// repository lock for it.
const openModeRead = 0

func openRequest(p Protocol) request {
	var e bare.Encoder
	e.Uint(openModeRead)
	e.String(p.String())
	return request{msgOpen, e.Buf}
}

// opLogSyncRequest asks for the operation log after the op that starts
// at byte after (nil: from the start), if the log's gc generation is
// still gen (nil: whatever it is).
func opLogSyncRequest(after *uint64, gen *bupstash.Xid) request {
	var e bare.Encoder
	e.Option(after != nil)
	if after != nil {
		e.Uint(*after)
	}
	e.Option(gen != nil)
	if gen != nil {
		e.Fixed(gen[:])
	}
	return request{msgOpLogSync, e.Buf}
}

func metadataRequest(id bupstash.Xid) request {
	return request{msgRequestMetadata, append([]byte(nil), id[:]...)}
}

func indexRequest(id bupstash.Xid) request {
	return request{msgRequestIndex, append([]byte(nil), id[:]...)}
}

func dataRequest(id bupstash.Xid, partial bool) request {
	var e bare.Encoder
	e.Fixed(id[:])
	e.Bool(partial)
	return request{msgRequestData, e.Buf}
}

// leafRange is an inclusive range of leaf indexes.
type leafRange struct{ start, end uint64 }

// rangesRequest asks for leaf ranges in a partial-data session; none
// ends the session.
func rangesRequest(rs []leafRange) request {
	var e bare.Encoder
	e.Uint(uint64(len(rs)))
	for _, r := range rs {
		e.Uint(r.start)
		e.Uint(r.end)
	}
	return request{msgRequestDataRanges, e.Buf}
}

func beginPullRequest() request { return request{msgBeginPull, nil} }
func endPullRequest() request   { return request{msgEndPull, nil} }
func endRequest() request       { return request{msgEnd, nil} }

// pullRequest asks for chunks by address: raw 32-byte addresses, no
// count.
func pullRequest(addrs []bupstash.Address) request {
	b := make([]byte, 0, len(addrs)*addressSize)
	for _, a := range addrs {
		b = append(b, a[:]...)
	}
	return request{msgPullAddresses, b}
}

// maxPullBatch is the most addresses one ItemSyncAddresses may carry
// within maxSend.
const maxPullBatch = maxSend / addressSize

// Response decoders. Each consumes its payload exactly: serde_bare (and
// so Bupstash) ignores trailing bytes, which here are an error.

func decodeOpenReply(p []byte) (unixMillis uint64, err error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("%w: ROpenRepository of %d bytes, want 8", ErrProtocol, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

func decodeOpLogSyncReply(p []byte) (gen bupstash.Xid, err error) {
	if len(p) != xidSize {
		return gen, fmt.Errorf("%w: RRequestOpLogSync of %d bytes, want %d", ErrProtocol, len(p), xidSize)
	}
	copy(gen[:], p)
	return gen, nil
}

// decodeMetadataReply returns the item metadata in an RRequestMetadata,
// or nil when the server has none.
func decodeMetadataReply(p []byte) ([]byte, error) {
	d := bare.NewDecoder(p)
	if !d.Option() {
		if err := d.Finish(); err != nil {
			return nil, fmt.Errorf("%w: RRequestMetadata: %w", ErrProtocol, err)
		}
		return nil, nil
	}
	start := d.Offset()
	skipItemMetadata(d)
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: RRequestMetadata: %w", ErrProtocol, err)
	}
	return p[start:], nil
}

// abortCodeUnavailable is Bupstash's ABORT_CODE_SERVER_UNAVAILABLE.
const abortCodeUnavailable = 0x9cf5c3ce325d27a6

// RemoteError is an Abort packet: an error the server sent in-band.
// bupstash serve never sends one; other servers may.
type RemoteError struct {
	Message string
	Code    *uint64
}

func (e *RemoteError) Error() string {
	return "server aborted: " + quoteLine(e.Message)
}

func (e *RemoteError) Unwrap() error {
	if e.Code != nil && *e.Code == abortCodeUnavailable {
		return ErrUnavailable
	}
	return nil
}

func decodeAbort(p []byte) error {
	d := bare.NewDecoder(p)
	e := &RemoteError{Message: d.String()}
	if d.Option() {
		c := d.U64()
		e.Code = &c
	}
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%w: Abort: %w", ErrProtocol, err)
	}
	return e
}

// expectEmpty checks a packet that has no payload.
func expectEmpty(h header) error {
	if h.size != 0 {
		return fmt.Errorf("%w: %s should be empty", ErrProtocol, h)
	}
	return nil
}
