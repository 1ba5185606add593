package serve

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Protocol is the version string a server speaks, as a number: 11 for
// Bupstash 0.10.x, 13 for 0.11.0 to 0.12.1 ("12" was never released).
type Protocol int

const (
	Protocol11 Protocol = 11
	Protocol13 Protocol = 13
)

func (p Protocol) String() string { return fmt.Sprint(int(p)) }

// Describe says which Bupstash releases speak p and what that means for
// reading.
func (p Protocol) Describe() string {
	switch p {
	case Protocol11:
		return "bupstash 0.10.x (protocol 11): chunks only as parts of tree walks"
	case Protocol13:
		return "bupstash 0.11 or later (protocol 13)"
	}
	return "protocol " + p.String()
}

// msg names a packet independently of the protocol version: the two
// versions number most packets differently.
type msg uint8

const (
	msgNone msg = iota
	msgOpen
	msgOpenReply
	msgChunk
	msgRequestData
	msgRequestDataRanges
	msgOpLogSync
	msgOpLogSyncReply
	msgSyncLogOps
	msgAbort
	msgRequestIndex
	msgRequestMetadata
	msgMetadataReply
	msgBeginPull
	msgBeginPullReply
	msgPullAddresses
	msgEndPull
	msgEndPullReply
	msgEnd
	msgCount
)

var msgNames = [msgCount]string{
	msgNone:              "unknown",
	msgOpen:              "TOpenRepository",
	msgOpenReply:         "ROpenRepository",
	msgChunk:             "Chunk",
	msgRequestData:       "RequestData",
	msgRequestDataRanges: "RequestDataRanges",
	msgOpLogSync:         "TRequestOpLogSync",
	msgOpLogSyncReply:    "RRequestOpLogSync",
	msgSyncLogOps:        "SyncLogOps",
	msgAbort:             "Abort",
	msgRequestIndex:      "RequestIndex",
	msgRequestMetadata:   "TRequestMetadata",
	msgMetadataReply:     "RRequestMetadata",
	msgBeginPull:         "TBeginItemSyncPull",
	msgBeginPullReply:    "RBeginItemSyncPull",
	msgPullAddresses:     "ItemSyncAddresses",
	msgEndPull:           "TEndItemSyncPull",
	msgEndPullReply:      "REndItemSyncPull",
	msgEnd:               "EndOfTransmission",
}

func (m msg) String() string {
	if m < msgCount {
		return msgNames[m]
	}
	return "unknown"
}

// kindTable maps messages to wire kinds for one protocol version
// (Bupstash's protocol.rs, PACKET_KIND_*), and back.
type kindTable struct {
	wire [msgCount]uint8
	back [256]msg
}

func newKindTable(pairs map[msg]uint8) *kindTable {
	t := &kindTable{}
	for m, k := range pairs {
		t.wire[m] = k
		t.back[k] = m
	}
	return t
}

var (
	kinds11 = newKindTable(map[msg]uint8{
		msgOpen: 0, msgOpenReply: 1, msgChunk: 8, msgRequestData: 13, msgRequestDataRanges: 14,
		msgOpLogSync: 17, msgOpLogSyncReply: 18, msgSyncLogOps: 19, msgAbort: 23,
		msgRequestIndex: 26, msgRequestMetadata: 28, msgMetadataReply: 29, msgEnd: 255,
	})
	kinds13 = newKindTable(map[msg]uint8{
		msgOpen: 0, msgOpenReply: 1, msgChunk: 8, msgRequestData: 13, msgRequestDataRanges: 14,
		msgOpLogSync: 18, msgOpLogSyncReply: 19, msgSyncLogOps: 20, msgAbort: 21,
		msgRequestIndex: 24, msgRequestMetadata: 25, msgMetadataReply: 26,
		msgBeginPull: 32, msgBeginPullReply: 33, msgPullAddresses: 35,
		msgEndPull: 41, msgEndPullReply: 42, msgEnd: 255,
	})
)

func kindsOf(p Protocol) *kindTable {
	if p == Protocol11 {
		return kinds11
	}
	return kinds13
}

// Packet size limits.
const (
	// MaxPacket bounds a packet received: a chunk of 32 MiB (Bupstash
	// 0.12's own packet limit; its chunks are at most 20 MiB) and its
	// address. Nothing is allocated for a larger one: the connection is
	// ended.
	MaxPacket = 32<<20 + addressSize
	// maxSend bounds a packet sent: Bupstash 0.10 and 0.11 servers refuse
	// packets over 16 MiB.
	maxSend = 16 << 20
	// maxAbort bounds an Abort packet: a message and a code.
	maxAbort = 64 << 10
	// maxMetadataReply bounds RRequestMetadata: an item's metadata, at
	// most 1 MiB here (Bupstash writes under 34 KiB).
	maxMetadataReply = maxItemMetadata + 1

	headerSize  = 5
	addressSize = 32
	xidSize     = 16
)

// header is a packet's header: the payload's length and its message.
type header struct {
	size uint32
	kind uint8
	msg  msg
}

func (h header) String() string { return fmt.Sprintf("%s (kind %d, %d bytes)", h.msg, h.kind, h.size) }

// packetReader reads packets from the server's stdout.
type packetReader struct {
	r     *bufio.Reader
	kinds *kindTable
	max   uint32
}

// next reads a packet header and refuses a payload over the limit
// before anything is read or allocated for it.
func (pr *packetReader) next() (header, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(pr.r, b[:]); err != nil {
		return header{}, err
	}
	h := header{size: binary.LittleEndian.Uint32(b[:4]), kind: b[4]}
	h.msg = pr.kinds.back[h.kind]
	if h.msg == msgNone {
		return h, fmt.Errorf("%w: unknown packet kind %d", ErrProtocol, h.kind)
	}
	if h.size > pr.max {
		return h, fmt.Errorf("%w: %s is over the %d-byte limit", ErrProtocol, h, pr.max)
	}
	return h, nil
}

// payload reads the payload of h, which must be at most limit bytes.
func (pr *packetReader) payload(h header, limit int) ([]byte, error) {
	if int64(h.size) > int64(limit) {
		return nil, fmt.Errorf("%w: %s is over the %d-byte limit for it", ErrProtocol, h, limit)
	}
	b := make([]byte, h.size)
	if _, err := io.ReadFull(pr.r, b); err != nil {
		return nil, truncated(err)
	}
	return b, nil
}

// truncated turns the end of the stream inside a packet into an
// unexpected EOF.
func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// packetWriter writes packets to the server's stdin. It has no way to
// write anything but the read-only requests messages.go encodes.
type packetWriter struct {
	w     *bufio.Writer
	kinds *kindTable
}

// write writes one request; flushing is the caller's.
func (pw *packetWriter) write(r request) error {
	if len(r.payload) > maxSend {
		return fmt.Errorf("%s of %d bytes is over the %d-byte limit servers accept", r.msg, len(r.payload), maxSend)
	}
	k := pw.kinds.wire[r.msg]
	if !clientMsgs[r.msg] || (k == 0 && r.msg != msgOpen) {
		// Unreachable: requests come only from the encoders.
		return fmt.Errorf("%s is not a request this client sends on this protocol", r.msg)
	}
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(r.payload)))
	h[4] = k
	if _, err := pw.w.Write(h[:]); err != nil {
		return err
	}
	_, err := pw.w.Write(r.payload)
	return err
}
