package fusefs

import (
	"context"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Compile-time checks of what implements what. FS embeds
// fuse.RawFileSystem for the requests it leaves at ENOSYS, so a method
// whose signature drifts from go-fuse's would not fail to compile: it
// would silently stop overriding, and its request would answer ENOSYS.
// Naming each override as a method value of the interface's type catches
// that.
var (
	_ fuse.RawFileSystem = (*FS)(nil)

	_ func(*FS, <-chan struct{}, *fuse.InHeader, string, *fuse.EntryOut) fuse.Status         = (*FS).Lookup
	_ func(*FS, uint64, uint64)                                                              = (*FS).Forget
	_ func(*FS, <-chan struct{}, *fuse.GetAttrIn, *fuse.AttrOut) fuse.Status                 = (*FS).GetAttr
	_ func(*FS, <-chan struct{}, *fuse.InHeader) ([]byte, fuse.Status)                       = (*FS).Readlink
	_ func(*FS, <-chan struct{}, *fuse.AccessIn) fuse.Status                                 = (*FS).Access
	_ func(*FS, <-chan struct{}, *fuse.InHeader, *fuse.StatfsOut) fuse.Status                = (*FS).StatFs
	_ func(*FS, <-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status                    = (*FS).OpenDir
	_ func(*FS, <-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status               = (*FS).ReadDir
	_ func(*FS, <-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status               = (*FS).ReadDirPlus
	_ func(*FS, *fuse.ReleaseIn)                                                             = (*FS).ReleaseDir
	_ func(*FS, <-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status                    = (*FS).Open
	_ func(*FS, <-chan struct{}, *fuse.ReadIn, []byte) (fuse.ReadResult, fuse.Status)        = (*FS).Read
	_ func(*FS, <-chan struct{}, *fuse.LseekIn, *fuse.LseekOut) fuse.Status                  = (*FS).Lseek
	_ func(*FS, <-chan struct{}, *fuse.FlushIn) fuse.Status                                  = (*FS).Flush
	_ func(*FS, <-chan struct{}, *fuse.InHeader, string, []byte) (uint32, fuse.Status)       = (*FS).GetXAttr
	_ func(*FS, <-chan struct{}, *fuse.InHeader, []byte) (uint32, fuse.Status)               = (*FS).ListXAttr
	_ func(*FS, <-chan struct{}, *fuse.SetAttrIn, *fuse.AttrOut) fuse.Status                 = (*FS).SetAttr
	_ func(*FS, <-chan struct{}, *fuse.MknodIn, string, *fuse.EntryOut) fuse.Status          = (*FS).Mknod
	_ func(*FS, <-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status          = (*FS).Mkdir
	_ func(*FS, <-chan struct{}, *fuse.InHeader, string) fuse.Status                         = (*FS).Unlink
	_ func(*FS, <-chan struct{}, *fuse.InHeader, string) fuse.Status                         = (*FS).Rmdir
	_ func(*FS, <-chan struct{}, *fuse.RenameIn, string, string) fuse.Status                 = (*FS).Rename
	_ func(*FS, <-chan struct{}, *fuse.LinkIn, string, *fuse.EntryOut) fuse.Status           = (*FS).Link
	_ func(*FS, <-chan struct{}, *fuse.InHeader, string, string, *fuse.EntryOut) fuse.Status = (*FS).Symlink
	_ func(*FS, <-chan struct{}, *fuse.SetXAttrIn, string, []byte) fuse.Status               = (*FS).SetXAttr
	_ func(*FS, <-chan struct{}, *fuse.InHeader, string) fuse.Status                         = (*FS).RemoveXAttr
	_ func(*FS, <-chan struct{}, *fuse.CreateIn, string, *fuse.CreateOut) fuse.Status        = (*FS).Create
	_ func(*FS, <-chan struct{}, *fuse.WriteIn, []byte) (uint32, fuse.Status)                = (*FS).Write
	_ func(*FS, <-chan struct{}, *fuse.FallocateIn) fuse.Status                              = (*FS).Fallocate
	_ func(*FS, <-chan struct{}, *fuse.CopyFileRangeIn) (uint32, fuse.Status)                = (*FS).CopyFileRange
	_ func(*FS, *fuse.Server)                                                                = (*FS).Init

	// The synthetic nodes.
	_ synthDir     = (*staticDir)(nil)
	_ synthLink    = (*symlink)(nil)
	_ synthFile    = (*backupyFile)(nil)
	_ quickAttr    = (*backupyFile)(nil)
	_ xattrNode    = (*backupyFile)(nil)
	_ logDescriber = (*backupyFile)(nil)
	_ fileReader   = bupstashReader{}
	_ fileReader   = (*backupyReader)(nil)

	_ context.Context = requestContext{}
)
