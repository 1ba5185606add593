package fusefs

import (
	"syscall"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// xattrsOf returns a node's extended attributes: the saved ones inside
// Bupstash items, what is known about a Backupy object on its views, none
// elsewhere.
func (f *FS) xattrsOf(cancel <-chan struct{}, id uint64) ([]xattr, error) {
	slot, record, ok := splitNodeID(id)
	if !ok {
		s, ok := f.nodes.get(id)
		if !ok {
			return nil, syscall.ESTALE
		}
		if x, ok := s.(xattrNode); ok {
			return x.xattrs(), nil
		}
		return nil, nil
	}
	n, err := f.item(slot)
	if err != nil {
		return nil, err
	}
	if !n.item.HasIndex() || !n.showsContents() {
		return nil, nil
	}
	if record == 0 {
		r, err := n.rootEntry(newContext(cancel))
		if err != nil {
			return nil, err
		}
		return toXattrs(r.xattrs), nil
	}
	t, err := n.tree(newContext(cancel))
	if err != nil {
		return nil, err
	}
	if int(record) >= t.Len() {
		return nil, syscall.ENOENT
	}
	return toXattrs(t.Xattrs(record)), nil
}

func toXattrs(saved []bupstash.Xattr) []xattr {
	xs := make([]xattr, len(saved))
	for i, x := range saved {
		xs[i] = xattr{x.Name, x.Value}
	}
	return xs
}

// GetXAttr implements fuse.RawFileSystem: with an empty dest it reports the
// value's size, as getxattr(2) does.
func (f *FS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	f.getxattrs.Add(1)
	xs, err := f.xattrsOf(cancel, header.NodeId)
	if err != nil {
		return 0, status(err)
	}
	for _, x := range xs {
		if x.name != attr {
			continue
		}
		if len(dest) == 0 {
			return uint32(len(x.value)), fuse.OK
		}
		if len(dest) < len(x.value) {
			return uint32(len(x.value)), fuse.ERANGE
		}
		return uint32(copy(dest, x.value)), fuse.OK
	}
	return 0, fuse.ENOATTR
}

// ListXAttr implements fuse.RawFileSystem: names, each NUL-terminated.
func (f *FS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	xs, err := f.xattrsOf(cancel, header.NodeId)
	if err != nil {
		return 0, status(err)
	}
	size := 0
	for _, x := range xs {
		size += len(x.name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), fuse.OK
	}
	if len(dest) < size {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.name)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}
