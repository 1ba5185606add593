package fusefs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file answers the requests about nodes: lookups, attributes,
// links, access and the filesystem's statistics. A node ID is resolved to
// an item record (itemNode + record) or to a synthetic node (see
// inode.go).

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
	if _, read := f.volatileRead.LoadAndDelete(in.NodeId); read && f.server != nil {
		// A file whose content may change at any moment (its attributes
		// hold for no time) was read since the kernel last asked: drop
		// the pages it kept (no-open mode keeps every file's pages across
		// opens), so that what is read next is what the file holds now.
		// The kernel then disregards the attributes of this answer and
		// asks again before it reads.
		f.server.InodeNotify(in.NodeId, 0, -1)
	}
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

// StatFs implements fuse.RawFileSystem.
func (f *FS) StatFs(cancel <-chan struct{}, header *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{Bsize: blockSize, Frsize: blockSize, NameLen: 255}
	return fuse.OK
}
