package fusefs

import (
	"bytes"
	"context"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Filling the kernel's page cache ahead of reads. Once opening a file
// costs nothing (Open) and listings give files' attributes (ReadDirPlus),
// copying a tree of small files costs one round trip per file: its READ.
// Yet the files after one just read to its end are usually in the same
// leaf, decoded already, and programs that walk a tree (tar, cp -r,
// rsync, diff -r) read a directory's files in name order. So when a file
// has been read to its end, the next files of its directory whose leaves
// are in the chunk cache are given to the kernel (FUSE_NOTIFY_STORE), and
// the reads that follow never leave it.
//
// What is pushed is bounded: files of at most pushFileMax bytes, at most
// pushBytesMax bytes, pushFilesMax files and pushDecodesMax leaves decoded
// per file read, never a file the kernel was given or read before, and
// only to inodes the kernel holds (it refuses the others, and the first
// refusal ends the push). Pushed files are read as any read does, content
// hash checked; a damaged one ends the push, and its own read fails. The pages live in the kernel's page cache,
// which the kernel reclaims like any other, not in this process.

const (
	pushFileMax  = 128 << 10
	pushBytesMax = 4 << 20
	pushFilesMax = 1024
	// pushDecodesMax bounds the leaves decoded for a push: the files
	// after those read are usually in the next leaves, and a walk needs
	// them next.
	pushDecodesMax = 4
	// pushQueue bounds the pushes waiting; more are dropped, which costs
	// only the READs they would have saved.
	pushQueue = 16
)

type pushJob struct {
	n      *itemNode
	record uint32
}

// pushAfter asks for the files after record, in its directory, to be
// pushed into the kernel's page cache. It never waits.
func (f *FS) pushAfter(n *itemNode, record uint32) {
	if f.server == nil {
		return
	}
	f.pushPending.Add(1)
	select {
	case f.pushes <- pushJob{n, record}:
	default:
		f.pushPending.Add(-1)
	}
}

// pushPages runs the pushes until ctx ends.
func (f *FS) pushPages(ctx context.Context) {
	buf := make([]byte, pushFileMax)
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-f.pushes:
			f.pushSiblings(ctx, j.n, j.record, buf)
			f.pushPending.Add(-1)
		}
	}
}

// pushSiblings pushes the small files after record in its directory.
func (f *FS) pushSiblings(ctx context.Context, n *itemNode, record uint32, buf []byte) {
	t, ok := f.trees.get(n.slot) // never decodes an index for this
	if !ok || n.gone() || record == 0 || int(record) >= t.Len() {
		return
	}
	kids := t.Children(t.Parent(record))
	name := t.Name(record)
	i, found := slices.BinarySearchFunc(kids, name, func(k uint32, name []byte) int { return bytes.Compare(t.Name(k), name) })
	if !found {
		return
	}
	var bytesPushed, filesPushed, decoded int
	for _, k := range kids[i+1:] {
		if filesPushed >= pushFilesMax || bytesPushed >= pushBytesMax || ctx.Err() != nil {
			return
		}
		a := t.Attr(k)
		if a.Mode&syscall.S_IFMT != syscall.S_IFREG || a.Size == 0 || a.Size > pushFileMax || a.Sparse {
			continue
		}
		inode := a.InodeRecord
		if n.pages.has(inode) {
			continue
		}
		file, err := t.File(n.open, inode)
		if err != nil {
			return
		}
		ok, err := file.ReadCached(ctx, buf)
		if err != nil {
			return // damaged: its own read will say so
		}
		if !ok {
			// Its leaf is not decoded yet: Bupstash starts a new leaf
			// every 128 entries of a directory.
			if decoded >= pushDecodesMax {
				return
			}
			decoded++
			if got, err := file.NewReader().ReadAtContext(ctx, buf[:a.Size], 0); err != nil || got != int(a.Size) {
				return
			}
		}
		if st := f.server.InodeNotifyStoreCache(n.id(inode), 0, buf[:a.Size]); st != fuse.OK {
			// The kernel does not hold this inode (no listing gave its
			// attributes, no lookup found it): nor, most likely, the
			// ones after it.
			return
		}
		n.notePages(inode)
		if n.gone() {
			// Removed while this was pushed, perhaps after its pages
			// were dropped: drop these too.
			f.server.InodeNotify(n.id(inode), 0, 0)
			return
		}
		bytesPushed += int(a.Size)
		filesPushed++
	}
}
