package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file answers the requests about directories: opening, listing
// (with or without attributes) and releasing them.

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
			if !fn(string(h.tree.Name(kids[k])), h.item.id(a.InodeRecord), a.Mode, a.InodeRecord) {
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
