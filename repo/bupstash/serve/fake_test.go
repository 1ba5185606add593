package serve

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// fakeServer is a scripted server over pipes: the test double of the
// hostile-server tests. Its script reads the client's packets and writes
// whatever the test wants, well-formed or not.
type fakeServer struct {
	t     testing.TB
	kinds *kindTable

	inR  *io.PipeReader // what the client writes
	inW  *io.PipeWriter
	outR *io.PipeReader // what the client reads
	outW *io.PipeWriter
	r    *bufio.Reader

	mu     sync.Mutex
	stderr string
	killed bool
	sent   []uint8 // kinds the client sent
	done   chan struct{}
}

// startFake runs script as the server of a new connection speaking p.
func startFake(t testing.TB, p Protocol, stall time.Duration, script func(s *fakeServer) error) (*Conn, *fakeServer) {
	t.Helper()
	s := &fakeServer{t: t, kinds: kindsOf(p), done: make(chan struct{})}
	s.inR, s.inW = io.Pipe()
	s.outR, s.outW = io.Pipe()
	s.r = bufio.NewReader(s.inR)
	go func() {
		defer close(s.done)
		err := script(s)
		if err != nil {
			s.outW.CloseWithError(err)
		} else {
			s.outW.Close()
		}
		s.inR.Close()
	}()
	c := newConn(s, p, connConfig{name: "fake", stall: stall})
	t.Cleanup(func() {
		c.fail(errors.New("test over"))
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("fake server script did not end")
		}
	})
	return c, s
}

// transport, as seen by the connection.
func (s *fakeServer) in() io.WriteCloser { return s.inW }
func (s *fakeServer) out() io.ReadCloser { return s.outR }
func (s *fakeServer) kill() {
	s.mu.Lock()
	s.killed = true
	s.mu.Unlock()
	s.inR.CloseWithError(errors.New("killed"))
	s.outW.CloseWithError(errors.New("killed"))
}
func (s *fakeServer) awaitExit(d time.Duration) (bool, error) {
	select {
	case <-s.done:
		return true, nil
	case <-time.After(d):
		return false, nil
	}
}
func (s *fakeServer) stderrLine(time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr
}

func (s *fakeServer) silence(time.Duration) {}

func (s *fakeServer) say(line string) {
	s.mu.Lock()
	s.stderr = line
	s.mu.Unlock()
}

// read reads the client's next packet.
func (s *fakeServer) read() (msg, []byte, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(s.r, h[:]); err != nil {
		return msgNone, nil, err
	}
	p := make([]byte, binary.LittleEndian.Uint32(h[:4]))
	if _, err := io.ReadFull(s.r, p); err != nil {
		return msgNone, nil, err
	}
	s.mu.Lock()
	s.sent = append(s.sent, h[4])
	s.mu.Unlock()
	return s.kinds.back[h[4]], p, nil
}

// expect reads the client's next packet, which must be m.
func (s *fakeServer) expect(m msg) ([]byte, error) {
	got, p, err := s.read()
	if err != nil {
		return nil, err
	}
	if got != m {
		return nil, fmt.Errorf("fake server: client sent %s, want %s", got, m)
	}
	return p, nil
}

// write writes a packet m with payload p.
func (s *fakeServer) write(m msg, p []byte) error {
	return s.writeRaw(uint32(len(p)), s.kinds.wire[m], p)
}

// writeRaw writes a header claiming size and kind, then p.
func (s *fakeServer) writeRaw(size uint32, kind uint8, p []byte) error {
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[:4], size)
	h[4] = kind
	if _, err := s.outW.Write(h[:]); err != nil {
		return err
	}
	_, err := s.outW.Write(p)
	return err
}

func (s *fakeServer) chunk(addr bupstash.Address, data []byte) error {
	return s.write(msgChunk, append(addr[:len(addr):len(addr)], data...))
}

// open answers TOpenRepository.
func (s *fakeServer) open() error {
	if _, err := s.expect(msgOpen); err != nil {
		return err
	}
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], uint64(time.Now().UnixMilli()))
	return s.write(msgOpenReply, p[:])
}

// exit ends the script as bupstash serve ends: a stderr line and EOF.
func (s *fakeServer) exit(line string) error {
	s.say(line)
	return nil
}

// hang waits until the connection kills the server.
func (s *fakeServer) hang() error {
	_, err := io.Copy(io.Discard, s.r)
	return err
}

// openFake starts a fake server that answers the open, then runs script.
func openFake(t testing.TB, stall time.Duration, script func(s *fakeServer) error) (*Conn, *fakeServer) {
	t.Helper()
	c, s := startFake(t, Protocol13, stall, func(s *fakeServer) error {
		if err := s.open(); err != nil {
			return err
		}
		return script(s)
	})
	if err := c.open(testContext(t, 10*time.Second)); err != nil {
		t.Fatalf("open: %v", err)
	}
	return c, s
}

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }
