package fusefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// backupySource is a Backupy store's directory in the mount: the object
// keys' directories mirrored, and in each, every object's views (the
// decoded dump as <base>.<ext>, optionally .zst and .meta.json, or the raw
// <base>.enc while no key opens it). Each directory is listed when it is
// looked at, and again once the store's listing of it has expired.
type backupySource struct {
	fs    *FS
	name  string
	store *backupy.Store
}

// AddBackupy adds a Backupy store as a top-level directory called name.
func (f *FS) AddBackupy(name string, store *backupy.Store) error {
	s := &backupySource{fs: f, name: name, store: store}
	return f.addSource(name, s.dir(""))
}

// dir returns the node of a directory of the store ("" is its root).
func (s *backupySource) dir(p string) synthNode {
	return &staticDir{owner: s.fs.owner, mtime: s.fs.started, entries: func(ctx context.Context) ([]dirent, error) {
		return s.list(ctx, p)
	}}
}

func (s *backupySource) dirID(p string) uint64 {
	return s.fs.nodes.intern(s.name+"\x00backupy-dir\x00"+p, func() synthNode { return s.dir(p) })
}

// list returns the subdirectories and object views in directory p.
func (s *backupySource) list(ctx context.Context, p string) ([]dirent, error) {
	subdirs, blobs, err := s.store.Dir(ctx, p)
	if err != nil {
		return nil, err
	}
	prefix := ""
	if p != "" {
		prefix = p + "/"
	}
	var ents []dirent
	for _, sub := range subdirs {
		ents = append(ents, dirent{name: sub, id: s.dirID(prefix + sub), mode: fuse.S_IFDIR})
	}
	for _, b := range blobs {
		files, err := s.store.Files(ctx, b)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.fs.errs.report("files "+s.name+"/"+b.Path, "cannot read object", err, "source", s.name, "object", b.Path)
			continue
		}
		for _, f := range files {
			ents = append(ents, dirent{name: f.Name(), id: s.fileID(b, f), mode: fuse.S_IFREG})
		}
	}
	sortDirents(ents)
	// Two objects may claim the same view name (a.enc next to a foreign
	// a.pgdump), or an object a subdirectory's; the first keeps it, the
	// other is reported.
	out := ents[:0]
	for i, e := range ents {
		if i > 0 && e.name == ents[i-1].name {
			s.fs.errs.report("dup "+s.name+"/"+prefix+e.name, "two objects have a view of the same name; showing one", errors.New("name clash"),
				"source", s.name, "name", prefix+e.name)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// fileID interns a view. The key includes the object's size and time, so
// a changed object gets a new node and the kernel cannot serve the old
// one's cached pages for it.
func (s *backupySource) fileID(b *backupy.Blob, f *backupy.File) uint64 {
	key := fmt.Sprintf("%s\x00backupy-file\x00%s\x00%d\x00%d\x00%s", s.name, b.Path, b.Size, b.ModTime.UnixNano(), f.Name())
	return s.fs.nodes.intern(key, func() synthNode { return &backupyFile{src: s, f: f} })
}

// backupyFile is one view of an object.
type backupyFile struct {
	src *backupySource
	f   *backupy.File
}

func (n *backupyFile) fill(a *fuse.Attr, size int64) {
	setSynthAttr(a, syscall.S_IFREG|uint32(n.f.Mode().Perm()), n.src.fs.owner, n.f.ModTime())
	a.Size = uint64(size)
	if n.damaged() && n.src.fs.noOpen.Load() {
		// Without direct I/O (the kernel opens files itself, see Open),
		// the kernel ends reads at the size: one byte more makes a read
		// to the end ask, and fail.
		a.Size++
	}
	a.Blocks = blocks(a.Size)
}

// damaged reports whether this is a decoded view of an object found
// damaged: its size is what still reads, and a read past it must reach
// the object and fail with EIO rather than end cleanly at the size.
func (n *backupyFile) damaged() bool {
	return n.f.Blob().Corrupt() != nil && n.f.Kind() != backupy.FileRaw
}

// attr gives the exact size, running the object's decode pass if that is
// the only way to know it (the dump's size is recorded nowhere).
func (n *backupyFile) attr(ctx context.Context, a *fuse.Attr) error {
	size, err := n.f.Size(ctx)
	if err != nil {
		n.src.fs.errs.report("size "+n.src.name+"/"+n.f.Blob().Path, "cannot size object", err, n.logAttrs()...)
		return err
	}
	n.fill(a, size)
	return nil
}

func (n *backupyFile) quickAttr(a *fuse.Attr) bool {
	size, ok := n.f.SizeKnown()
	if ok {
		n.fill(a, size)
	}
	return ok
}

// attrTimeout: meta.json changes as passes learn more; the other views
// change only when the object does, and then they are new nodes.
func (n *backupyFile) attrTimeout() time.Duration {
	if n.f.Volatile() {
		return 0
	}
	return listTimeout
}

func (n *backupyFile) xattrs() []xattr {
	var xs []xattr
	for _, x := range n.f.Xattrs() {
		xs = append(xs, xattr{x.Name, x.Value})
	}
	return xs
}

func (n *backupyFile) logAttrs() []any {
	return []any{"source", n.src.name, "object", n.f.Blob().Path, "file", n.f.Name()}
}

func (n *backupyFile) open(ctx context.Context) (fileReader, uint32, error) {
	h, err := n.f.Open(ctx)
	if err != nil {
		if !errors.Is(err, backupy.ErrLocked) {
			n.src.fs.errs.report("open "+n.src.name+"/"+n.f.Blob().Path, "cannot open object", err, n.logAttrs()...)
		}
		return nil, 0, err
	}
	flags := uint32(fuse.FOPEN_KEEP_CACHE)
	switch {
	case n.f.Volatile():
		// Its size may change between stat and read: no page cache, and
		// reads are not clipped at a stale size.
		flags = fuse.FOPEN_DIRECT_IO
	case n.damaged():
		flags = fuse.FOPEN_DIRECT_IO
	}
	return &backupyReader{h: h, f: n.f}, flags, nil
}

// backupyReader adapts a Backupy handle.
type backupyReader struct {
	h backupy.Handle
	f *backupy.File
}

func (r *backupyReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return r.h.ReadAt(ctx, p, off)
}

func (r *backupyReader) Size(ctx context.Context) (int64, error) { return r.f.Size(ctx) }
func (r *backupyReader) Close() error                            { return r.h.Close() }
