package fusefs

import (
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A mount may show one directory of the filesystem at its root (one
// item's tree, or a directory inside it: backupfs mount ITEM:PATH), as
// restic and kopia can. The filesystem stays whole and keeps refreshing
// its sources; only the kernel's root node (FUSE_ROOT_ID, which the kernel
// fixes) is answered as the chosen directory. Every node below it keeps
// its own ID, so nothing else changes: removals still show as ESTALE,
// hard links still share inodes.

// subtree serves f with the node root answering for FUSE_ROOT_ID.
type subtree struct {
	*FS
	root uint64
}

// at returns the ID a request for id is answered for.
func (s *subtree) at(id uint64) uint64 {
	if id == rootID {
		return s.root
	}
	return id
}

// resolve walks path (slash-separated, from the root of the whole
// filesystem) with the filesystem's own lookups, and returns the ID of
// the directory it names, or the errno a lookup of it would give.
func (f *FS) resolve(path string) (uint64, error) {
	id := uint64(rootID)
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		var out fuse.EntryOut
		st := f.Lookup(nil, &fuse.InHeader{NodeId: id}, name, &out)
		if st == fuse.OK && out.NodeId == 0 {
			st = fuse.ENOENT // a cached absence
		}
		if st != fuse.OK {
			return 0, syscall.Errno(st)
		}
		id = out.NodeId
	}
	var out fuse.AttrOut
	if st := f.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: id}}, &out); st != fuse.OK {
		return 0, syscall.Errno(st)
	}
	if out.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, syscall.ENOTDIR
	}
	return id, nil
}

// The requests that name a node. The others (writes, locks) are refused
// whatever node they name.

func (s *subtree) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	h.NodeId = s.at(h.NodeId)
	return s.FS.Lookup(cancel, h, name, out)
}

func (s *subtree) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.GetAttr(cancel, in, out)
}

func (s *subtree) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	h.NodeId = s.at(h.NodeId)
	return s.FS.Readlink(cancel, h)
}

func (s *subtree) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.Access(cancel, in)
}

func (s *subtree) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	h.NodeId = s.at(h.NodeId)
	return s.FS.StatFs(cancel, h, out)
}

func (s *subtree) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.OpenDir(cancel, in, out)
}

func (s *subtree) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.ReadDir(cancel, in, out)
}

func (s *subtree) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.ReadDirPlus(cancel, in, out)
}

func (s *subtree) ReleaseDir(in *fuse.ReleaseIn) {
	in.NodeId = s.at(in.NodeId)
	s.FS.ReleaseDir(in)
}

func (s *subtree) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.Open(cancel, in, out)
}

func (s *subtree) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	in.NodeId = s.at(in.NodeId)
	return s.FS.Read(cancel, in, buf)
}

func (s *subtree) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	in.NodeId = s.at(in.NodeId)
	return s.FS.Lseek(cancel, in, out)
}

func (s *subtree) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	in.NodeId = s.at(in.NodeId)
	s.FS.Release(cancel, in)
}

func (s *subtree) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	h.NodeId = s.at(h.NodeId)
	return s.FS.GetXAttr(cancel, h, attr, dest)
}

func (s *subtree) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	h.NodeId = s.at(h.NodeId)
	return s.FS.ListXAttr(cancel, h, dest)
}

// The overrides above must keep go-fuse's signatures, or they would
// silently stop overriding (see api_check.go).
var (
	_ fuse.RawFileSystem = (*subtree)(nil)

	_ func(*subtree, <-chan struct{}, *fuse.InHeader, string, *fuse.EntryOut) fuse.Status   = (*subtree).Lookup
	_ func(*subtree, <-chan struct{}, *fuse.GetAttrIn, *fuse.AttrOut) fuse.Status           = (*subtree).GetAttr
	_ func(*subtree, <-chan struct{}, *fuse.InHeader) ([]byte, fuse.Status)                 = (*subtree).Readlink
	_ func(*subtree, <-chan struct{}, *fuse.AccessIn) fuse.Status                           = (*subtree).Access
	_ func(*subtree, <-chan struct{}, *fuse.InHeader, *fuse.StatfsOut) fuse.Status          = (*subtree).StatFs
	_ func(*subtree, <-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status              = (*subtree).OpenDir
	_ func(*subtree, <-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status         = (*subtree).ReadDir
	_ func(*subtree, <-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status         = (*subtree).ReadDirPlus
	_ func(*subtree, *fuse.ReleaseIn)                                                       = (*subtree).ReleaseDir
	_ func(*subtree, <-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status              = (*subtree).Open
	_ func(*subtree, <-chan struct{}, *fuse.ReadIn, []byte) (fuse.ReadResult, fuse.Status)  = (*subtree).Read
	_ func(*subtree, <-chan struct{}, *fuse.LseekIn, *fuse.LseekOut) fuse.Status            = (*subtree).Lseek
	_ func(*subtree, <-chan struct{}, *fuse.ReleaseIn)                                      = (*subtree).Release
	_ func(*subtree, <-chan struct{}, *fuse.InHeader, string, []byte) (uint32, fuse.Status) = (*subtree).GetXAttr
	_ func(*subtree, <-chan struct{}, *fuse.InHeader, []byte) (uint32, fuse.Status)         = (*subtree).ListXAttr
)
