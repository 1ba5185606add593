package fusefs

import (
	"context"
	"fmt"
	"io"
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file answers the requests about files' contents: opening, reading
// and flushing them.

// bupstashReader adapts a Bupstash file reader.
type bupstashReader struct {
	*bupstash.FileReader
	size int64
}

func (r bupstashReader) Size(context.Context) (int64, error) { return r.size, nil }
func (r bupstashReader) Close() error                        { return nil }

// Open implements fuse.RawFileSystem. A kernel that can open files
// without the filesystem (no-open mode, Linux 4.19 and newer) is told so
// by ENOSYS on the first open and never asks again: opening and closing a
// file then cost no round trip (nor does RELEASE), which for a tree of
// small files removes two of the round trips each file cost. Reads name
// the node; what a reader keeps lives per node (readers.go); and the
// kernel keeps files' pages across opens, as it does for every file in
// this mode. Older kernels get an answer that checks what a read would
// (the item is there, the key may read it, a Backupy object opens) and
// says how to cache the file.
func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.opens.Add(1)
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EROFS
	}
	if f.noOpen.Load() {
		return fuse.ENOSYS
	}
	r, err := f.reader(newContext(cancel), in.NodeId)
	if err != nil {
		return status(err)
	}
	out.OpenFlags = r.flags
	f.readers.release(r, f.logCloseError)
	return fuse.OK
}

// Flush implements fuse.RawFileSystem: nothing is ever written, and ENOSYS
// makes the kernel stop sending a FLUSH at every close.
func (f *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

// reader returns the reader of a file node, which the caller must release.
func (f *FS) reader(ctx context.Context, id uint64) (*nodeReader, error) {
	slot, record, inItem := splitNodeID(id)
	if !inItem {
		return f.synthReader(ctx, id)
	}
	n, err := f.item(slot)
	if err != nil {
		return nil, err
	}
	return f.readers.get(id, func() (*nodeReader, error) {
		file, path, err := n.file(ctx, record)
		if err != nil {
			return nil, err
		}
		return &nodeReader{
			r:      bupstashReader{file.NewReader(), file.Size()},
			logKey: n.src.name + "/" + n.item.ID.String() + "/" + path,
			attrs:  n.logAttrs(path),
			// File contents never change: keep the page cache across opens.
			flags:  fuse.FOPEN_KEEP_CACHE,
			item:   n,
			record: record,
		}, nil
	}, f.logCloseError)
}

// synthReader returns the reader of a synthetic file. A file whose
// attributes hold for no time (a Backupy object's meta.json) may change
// at any moment: it gets a reader for this read alone.
func (f *FS) synthReader(ctx context.Context, id uint64) (*nodeReader, error) {
	s, ok := f.nodes.get(id)
	if !ok {
		return nil, syscall.ESTALE
	}
	sf, ok := s.(synthFile)
	if !ok {
		return nil, syscall.EISDIR
	}
	open := func() (*nodeReader, error) {
		r, flags, err := sf.open(ctx)
		if err != nil {
			return nil, err
		}
		nr := &nodeReader{r: r, flags: flags, logKey: fmt.Sprint(id)}
		if l, ok := s.(logDescriber); ok {
			nr.attrs = l.logAttrs()
			nr.logKey = fmt.Sprint(nr.attrs...)
		}
		return nr, nil
	}
	if t, ok := s.(attrTimer); ok && t.attrTimeout() == 0 {
		nr, err := open()
		if err != nil {
			return nil, err
		}
		nr.refs, nr.dropped = 1, true // closed by its release
		if f.noOpen.Load() {
			f.volatileRead.Store(id, struct{}{})
		}
		return nr, nil
	}
	return f.readers.get(id, open, f.logCloseError)
}

// Read implements fuse.RawFileSystem. Only the leaves covering the range
// are decoded; a damaged one fails this read with EIO and one log line,
// and every other read goes on.
func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	f.reads.Add(1)
	ctx := newContext(cancel)
	r, err := f.reader(ctx, in.NodeId)
	if err != nil {
		if slot, record, ok := splitNodeID(in.NodeId); ok && status(err) == fuse.Status(syscall.ESTALE) {
			if n := f.items.get(slot); n != nil {
				f.errs.report(n.fileKey(record), "read of a file whose item was removed from the repository", err, n.logAttrs("")...)
			}
		}
		return nil, status(err)
	}
	defer f.readers.release(r, f.logCloseError)
	if r.item != nil && r.item.gone() {
		f.errs.report(r.logKey, "read of a file whose item was removed from the repository", syscall.ESTALE, r.attrs...)
		return nil, fuse.Status(syscall.ESTALE)
	}
	buf = buf[:min(uint64(len(buf)), uint64(in.Size))]
	n, err := r.r.ReadAtContext(ctx, buf, int64(in.Offset))
	if err != nil && err != io.EOF {
		f.errs.report(r.logKey, "read failed", err, append(r.attrs, "offset", in.Offset)...)
		if r.item == nil {
			f.dropPagesAround(in)
		}
		return nil, status(err)
	}
	if r.item != nil {
		r.item.notePages(r.record)
		if size, _ := r.r.Size(ctx); int64(in.Offset)+int64(n) >= size {
			// Read to its end: the files after it are likely next.
			f.pushAfter(r.item, r.record)
		}
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// dropPagesAround drops what the kernel cached of a synthetic file whose
// read just failed, but for the range of this read, whose pages the kernel
// holds locked until it is answered. A Backupy object found damaged may
// taint bytes read before (a hash checked at the end of the dump), and in
// no-open mode every file keeps its pages across opens: they must not
// answer later reads. The drop waits for the pages of other reads in
// flight; two failing reads each waiting for the other's would never
// end, so while one drop runs another is skipped: the pages of a failed
// read are never cached, and the running drop takes the rest.
func (f *FS) dropPagesAround(in *fuse.ReadIn) {
	if f.server == nil || !f.noOpen.Load() {
		return // without no-open, such views are read with direct I/O
	}
	if !f.dropping.TryLock() {
		return
	}
	defer f.dropping.Unlock()
	if in.Offset > 0 {
		f.server.InodeNotify(in.NodeId, 0, int64(in.Offset))
	}
	f.server.InodeNotify(in.NodeId, int64(in.Offset)+int64(in.Size), -1)
}
