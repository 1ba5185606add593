package fusefs

import (
	"context"
	"fmt"
	"io"
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file answers the requests about files' contents: opening,
// reading and releasing them.

// fileHandle is an open file with its own reader, so sequential access is
// recognised (and read ahead) per open file.
type fileHandle struct {
	r      fileReader
	logKey string
	attrs  []any // what log lines about this file say

	item   *itemNode // for files inside Bupstash items
	record uint32
}

// bupstashReader adapts a Bupstash file reader.
type bupstashReader struct {
	*bupstash.FileReader
	size int64
}

func (r bupstashReader) Size(context.Context) (int64, error) { return r.size, nil }
func (r bupstashReader) Close() error                        { return nil }

// Open implements fuse.RawFileSystem.
func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EROFS
	}
	ctx := newContext(cancel)
	slot, record, ok := splitNodeID(in.NodeId)
	if !ok {
		return f.openSynth(ctx, in.NodeId, out)
	}
	n, err := f.item(slot)
	if err != nil {
		return status(err)
	}
	file, path, err := n.file(ctx, record)
	if err != nil {
		return status(err)
	}
	out.Fh = f.handles.add(&fileHandle{
		r:      bupstashReader{file.NewReader(), file.Size()},
		logKey: n.src.name + "/" + n.item.ID.String() + "/" + path,
		attrs:  n.logAttrs(path),
		item:   n,
		record: record,
	})
	// File contents never change: keep the page cache across opens.
	out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (f *FS) openSynth(ctx context.Context, id uint64, out *fuse.OpenOut) fuse.Status {
	s, ok := f.nodes.get(id)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	sf, ok := s.(synthFile)
	if !ok {
		return fuse.EISDIR
	}
	r, flags, err := sf.open(ctx)
	if err != nil {
		return status(err)
	}
	h := &fileHandle{r: r, logKey: fmt.Sprint(id)}
	if l, ok := s.(logDescriber); ok {
		h.attrs = l.logAttrs()
		h.logKey = fmt.Sprint(h.attrs...)
	}
	out.Fh = f.handles.add(h)
	out.OpenFlags |= flags
	return fuse.OK
}

// Read implements fuse.RawFileSystem. Only the leaves covering the range
// are decoded; a damaged one fails this read with EIO and one log line,
// and every other read goes on.
func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, ok := f.handles.get(in.Fh).(*fileHandle)
	if !ok {
		return nil, fuse.EBADF
	}
	if h.item != nil && h.item.gone() {
		f.errs.report(h.logKey, "read of a file whose item was removed from the repository", syscall.ESTALE, h.attrs...)
		return nil, fuse.Status(syscall.ESTALE)
	}
	buf = buf[:min(uint64(len(buf)), uint64(in.Size))]
	n, err := h.r.ReadAtContext(newContext(cancel), buf, int64(in.Offset))
	if err != nil && err != io.EOF {
		f.errs.report(h.logKey, "read failed", err, append(h.attrs, "offset", in.Offset)...)
		return nil, status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Release implements fuse.RawFileSystem.
func (f *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if h, ok := f.handles.remove(in.Fh).(*fileHandle); ok {
		if err := h.r.Close(); err != nil {
			f.log.Warn("closing a file", append(h.attrs, "err", err)...)
		}
	}
}
