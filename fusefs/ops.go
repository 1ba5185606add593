package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file implements the FUSE requests. Node IDs are resolved either to
// an item record (itemNode + record) or to a synthetic node.

// entryOf fills everything the kernel is told about a node: attributes
// and how long to trust them.
func (f *FS) entryOf(ctx context.Context, id uint64, out *fuse.EntryOut, entryTimeout time.Duration) error {
	attrTimeout, err := f.attrOf(ctx, id, &out.Attr)
	if err != nil {
		return err
	}
	out.NodeId = id
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(attrTimeout)
	return nil
}

func (f *FS) attrOf(ctx context.Context, id uint64, a *fuse.Attr) (time.Duration, error) {
	if slot, record, ok := splitNodeID(id); ok {
		n, err := f.item(slot)
		if err != nil {
			return 0, err
		}
		return n.attr(ctx, record, a)
	}
	s, ok := f.nodes.get(id)
	if !ok {
		return 0, syscall.ESTALE
	}
	if err := s.attr(ctx, a); err != nil {
		return 0, err
	}
	a.Ino = id
	if t, ok := s.(attrTimer); ok {
		return t.attrTimeout(), nil
	}
	return listTimeout, nil
}

// Lookup implements fuse.RawFileSystem.
func (f *FS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel)
	if slot, dir, ok := splitNodeID(header.NodeId); ok {
		n, err := f.item(slot)
		if err != nil {
			return status(err)
		}
		record, err := n.lookup(ctx, dir, name)
		if err == nil {
			f.notePathLookup(ctx, n, record)
		}
		if errors.Is(err, syscall.ENOENT) {
			// Nothing appears inside an item later: cache the absence.
			out.NodeId = 0
			out.SetEntryTimeout(stableTimeout)
			return fuse.OK
		}
		if err != nil {
			return status(err)
		}
		return status(f.entryOf(ctx, n.id(record), out, stableTimeout))
	}
	d, err := f.synthDir(header.NodeId)
	if err != nil {
		return status(err)
	}
	ents, err := d.list(ctx)
	if err != nil {
		return status(err)
	}
	e, ok := lookupDirent(ents, name)
	if !ok {
		return fuse.ENOENT
	}
	return status(f.entryOf(ctx, e.id, out, listTimeout))
}

func (f *FS) synthDir(id uint64) (synthDir, error) {
	s, ok := f.nodes.get(id)
	if !ok {
		return nil, syscall.ESTALE
	}
	d, ok := s.(synthDir)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	return d, nil
}

// Forget implements fuse.RawFileSystem. Node IDs carry their meaning, so
// there is nothing to release.
func (f *FS) Forget(nodeid, nlookup uint64) {}

// GetAttr implements fuse.RawFileSystem.
func (f *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	timeout, err := f.attrOf(newContext(cancel), in.NodeId, &out.Attr)
	if err != nil {
		return status(err)
	}
	out.SetTimeout(timeout)
	return fuse.OK
}

// Readlink implements fuse.RawFileSystem.
func (f *FS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	if slot, record, ok := splitNodeID(header.NodeId); ok {
		n, err := f.item(slot)
		if err != nil {
			return nil, status(err)
		}
		target, err := n.readlink(newContext(cancel), record)
		return target, status(err)
	}
	s, ok := f.nodes.get(header.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	l, ok := s.(synthLink)
	if !ok {
		return nil, fuse.EINVAL
	}
	return []byte(l.target()), fuse.OK
}

// Access implements fuse.RawFileSystem. The kernel checks permissions
// itself (default_permissions); only writing needs an answer here.
func (f *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&2 != 0 { // W_OK
		return fuse.EROFS
	}
	return fuse.OK
}

// dirHandle is an open directory: a snapshot of a synthetic listing, or a
// record of a decoded index (whose children never change).
type dirHandle struct {
	ents []dirent // synthetic directories

	item   *itemNode // directories inside items
	tree   *bupstash.Tree
	record uint32
	raw    bool // a raw item's directory: its one file
}

// OpenDir implements fuse.RawFileSystem.
func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := newContext(cancel)
	h := &dirHandle{}
	if slot, record, ok := splitNodeID(in.NodeId); ok {
		n, err := f.item(slot)
		if err != nil {
			return status(err)
		}
		isDir, err := n.isDir(ctx, record)
		if err != nil {
			return status(err)
		}
		if !isDir {
			return fuse.ENOTDIR
		}
		h.item, h.record = n, record
		switch {
		case !n.showsContents():
		case !n.item.HasIndex():
			h.raw = true
		default:
			if h.tree, err = n.tree(ctx); err != nil {
				return status(err)
			}
		}
		// An item's listings never change: let the kernel keep them.
		out.OpenFlags |= fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	} else {
		d, err := f.synthDir(in.NodeId)
		if err != nil {
			return status(err)
		}
		if h.ents, err = d.list(ctx); err != nil {
			return status(err)
		}
	}
	out.Fh = f.handles.add(h)
	return fuse.OK
}

// entries calls fn for the directory's entries from index from on ("."
// and ".." are 0 and 1), until fn returns false.
func (h *dirHandle) entries(from uint64, fn func(name string, id uint64, mode uint32, record uint32) bool) {
	i := from
	if i == 0 {
		if !fn(".", 0, fuse.S_IFDIR, 0) {
			return
		}
		i++
	}
	if i == 1 {
		if !fn("..", 0, fuse.S_IFDIR, 0) {
			return
		}
		i++
	}
	k := i - 2
	switch {
	case h.tree != nil:
		kids := h.tree.Children(h.record)
		for ; k < uint64(len(kids)); k++ {
			a := h.tree.Attr(kids[k])
			if !fn(string(h.tree.Name(kids[k])), h.item.id(a.Inode), a.Mode, a.Inode) {
				return
			}
		}
	case h.raw:
		if k == 0 {
			fn(h.item.item.FileName(), h.item.id(rawFileRecord), fuse.S_IFREG, rawFileRecord)
		}
	default:
		for ; k < uint64(len(h.ents)); k++ {
			e := h.ents[k]
			if !fn(e.name, e.id, e.mode, 0) {
				return
			}
		}
	}
}

// ReadDir implements fuse.RawFileSystem.
func (f *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h, ok := f.handles.get(in.Fh).(*dirHandle)
	if !ok {
		return fuse.EBADF
	}
	h.entries(in.Offset, func(name string, id uint64, mode uint32, _ uint32) bool {
		return out.AddDirEntry(fuse.DirEntry{Name: name, Ino: id, Mode: mode})
	})
	return fuse.OK
}

// statsFilesFor is how long after a lookup of a file by name listings go
// on giving files' attributes.
const statsFilesFor = 5 * time.Second

// statsFiles reports whether someone has lately looked files up by name:
// ls -l, tar, cp and rsync stat every file they list, find and du -s
// (for directories) and ls without -l do not. READDIRPLUS gives files'
// attributes only then. Each attribute given makes the kernel create an
// inode, which costs more than finding the entry (find over a million
// entries: 13.6 s with every entry's attributes, 9.6 s with directories'
// only), while each attribute missing costs a stat one lookup (ls -lR of
// 200,000 files: 18.6 s with, 23 s without). The first directory an ls -l
// lists after a quiet spell pays the lookups; the rest get attributes.
func (f *FS) statsFiles() bool {
	return time.Now().UnixNano()-f.lastFileLookup.Load() < int64(statsFilesFor)
}

// notePathLookup records a lookup of a file inside an item.
func (f *FS) notePathLookup(ctx context.Context, n *itemNode, record uint32) {
	if isDir, err := n.isDir(ctx, record); err == nil && !isDir {
		f.lastFileLookup.Store(time.Now().UnixNano())
	}
}

// ReadDirPlus implements fuse.RawFileSystem. Attributes come from the
// listing itself (the decoded index): directories' always, files' while
// files are being looked up (see statsFiles), so that ls -l costs no
// further lookups and find creates no inode for a file.
func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := newContext(cancel)
	h, ok := f.handles.get(in.Fh).(*dirHandle)
	if !ok {
		return fuse.EBADF
	}
	var err error
	statting := f.statsFiles()
	h.entries(in.Offset, func(name string, id uint64, mode uint32, record uint32) bool {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: name, Ino: id, Mode: mode})
		if eo == nil {
			return false
		}
		if id == 0 { // "." and "..": the kernel knows them
			return true
		}
		if h.tree != nil {
			if !statting && mode&syscall.S_IFMT != syscall.S_IFDIR {
				*eo = fuse.EntryOut{} // see statsFiles
				return true
			}
			eo.SetAttrTimeout(h.item.fillAttr(h.tree, record, &eo.Attr))
			eo.NodeId = id
			eo.SetEntryTimeout(stableTimeout)
			return true
		}
		timeout := listTimeout
		if h.item != nil {
			timeout = stableTimeout
		}
		if slot, record, ok := splitNodeID(id); ok && record == 0 {
			// An item's directory shows its saved root, the first entry
			// of its index: listing ids/ decodes no index; the kernel
			// looks the entry up when someone asks for its attributes.
			if n := f.items.get(slot); n == nil || !n.rootKnown() {
				*eo = fuse.EntryOut{}
				return true
			}
		}
		if s, ok := f.nodes.get(id); ok {
			if q, ok := s.(quickAttr); ok {
				// Attributes that would need a decode pass are left out:
				// the kernel looks the entry up when someone asks.
				if !q.quickAttr(&eo.Attr) {
					*eo = fuse.EntryOut{}
					return true
				}
				eo.Attr.Ino = id
				eo.NodeId = id
				eo.SetEntryTimeout(timeout)
				eo.SetAttrTimeout(timeout)
				if t, ok := s.(attrTimer); ok {
					eo.SetAttrTimeout(t.attrTimeout())
				}
				return true
			}
		}
		if err = f.entryOf(ctx, id, eo, timeout); err != nil {
			// The entry went away between listing and now; the
			// kernel will look it up again and get ENOENT.
			*eo = fuse.EntryOut{}
			err = nil
		}
		return true
	})
	return status(err)
}

// ReleaseDir implements fuse.RawFileSystem.
func (f *FS) ReleaseDir(in *fuse.ReleaseIn) { f.handles.remove(in.Fh) }

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
	if l, ok := s.(interface{ logAttrs() []any }); ok {
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

// StatFs implements fuse.RawFileSystem.
func (f *FS) StatFs(cancel <-chan struct{}, header *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{Bsize: blockSize, Frsize: blockSize, NameLen: 255}
	return fuse.OK
}

// The filesystem is read-only: every change is refused with EROFS (the
// kernel refuses most before they reach us, as the mount is read-only).

func (f *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return fuse.EROFS
}
func (f *FS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}
func (f *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (f *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return fuse.EROFS
}
func (f *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
