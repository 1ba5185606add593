package backupy

import (
	"context"
	"fmt"
	"io"
)

// streamReader serves one handle from a private decode pass, keeping the
// most recent decoded bytes in a ring buffer. The kernel's readahead issues
// reads slightly out of order; the ring absorbs that, so a sequential
// reader (cat, pg_restore, mongorestore) never touches the disk cache.
type streamReader struct {
	pass   *decodePass
	ring   []byte // grows up to max
	max    int
	start  int64 // decoded offset of the oldest byte kept
	end    int64 // decoded offset just past the newest byte
	err    error // terminal error of the pass (io.EOF when complete)
	closed bool
}

// streamInitialRing keeps a few MiB of history, more than the kernel's
// readahead reorders by.
const streamInitialRing = 4 << 20

func newStreamReader(pass *decodePass, window int) *streamReader {
	w := max(window, 1<<20)
	return &streamReader{pass: pass, max: w, ring: make([]byte, min(w, streamInitialRing))}
}

// readAt serves p at off if the window allows: off not before the oldest
// kept byte, not more than a window ahead of the newest, and p at most half
// a window. ok is false otherwise, and the caller must read elsewhere.
func (s *streamReader) readAt(ctx context.Context, p []byte, off int64) (n int, err error, ok bool) {
	if off < s.start || off > s.end+int64(s.max) || len(p) > s.max/2 {
		return 0, nil, false
	}
	need := off + int64(len(p))
	for s.end < need && s.err == nil {
		if err := ctx.Err(); err != nil {
			return 0, context.Cause(ctx), true
		}
		if !s.makeRoom(off) {
			return 0, nil, false
		}
		pos := int(s.end % int64(len(s.ring)))
		free := len(s.ring) - int(s.end-s.start)
		space := min(len(s.ring)-pos, free)
		m, rerr := s.pass.Read(s.ring[pos : pos+space])
		s.end += int64(m)
		if rerr != nil {
			s.err = rerr
		}
	}
	if s.err != nil && s.err != io.EOF && need > s.end {
		// The pass stopped before these bytes (at damage, say); what it
		// decoded before still reads.
		return 0, s.err, true
	}
	if off >= s.end {
		return 0, io.EOF, true
	}
	n = s.copyOut(p[:min(int64(len(p)), s.end-off)], off)
	if n < len(p) {
		return n, io.EOF, true
	}
	return n, nil, true
}

// makeRoom frees ring space for more output. A sequential reader keeps
// plenty of history, so the oldest quarter is dropped while at least half
// the ring lies behind keep; otherwise (reads racing ahead) the ring grows
// up to its maximum, and only then gives up history down to keep. It
// reports false when no byte can be freed.
func (s *streamReader) makeRoom(keep int64) bool {
	if s.end-s.start < int64(len(s.ring)) {
		return true
	}
	quarter := int64(len(s.ring) / 4)
	if keep-s.start >= 2*quarter {
		s.start += quarter
		return true
	}
	if len(s.ring) < s.max {
		grown := make([]byte, min(2*len(s.ring), s.max))
		for off := s.start; off < s.end; {
			src := int(off % int64(len(s.ring)))
			c := min(len(s.ring)-src, int(s.end-off))
			dst := int(off % int64(len(grown)))
			c = min(c, len(grown)-dst)
			copy(grown[dst:dst+c], s.ring[src:src+c])
			off += int64(c)
		}
		s.ring = grown
		return true
	}
	if s.start >= keep {
		return false
	}
	s.start = min(keep, s.start+quarter)
	return true
}

// drain finishes the pass once the reader has all size bytes, so that a
// sequential reader that stops at the known size (as the kernel does when
// st_size is exact) still gets the end-of-stream checks: the zstd checksum,
// the end-of-stream marker and the ciphertext hash.
func (s *streamReader) drain(ctx context.Context, b *Blob, size int64) error {
	if s.err != nil || s.end < size {
		return nil
	}
	var probe [512]byte
	for s.err == nil {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		m, err := s.pass.Read(probe[:])
		if m > 0 {
			s.err = b.markCorrupt(fmt.Errorf("%w: decodes to more than the recorded %d bytes", errZstd, size))
			break
		}
		s.err = err
	}
	if s.err != io.EOF {
		return s.err
	}
	return nil
}

func (s *streamReader) copyOut(p []byte, off int64) int {
	n := 0
	for n < len(p) {
		src := int((off + int64(n)) % int64(len(s.ring)))
		n += copy(p[n:], s.ring[src:min(len(s.ring), src+len(p)-n)])
	}
	return n
}

func (s *streamReader) close() {
	if !s.closed {
		s.closed = true
		s.pass.Close()
		s.ring = nil
	}
}
