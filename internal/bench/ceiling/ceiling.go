// Package ceiling is the fastest filesystem go-fuse can serve on a given
// machine, for comparison: a tree held in memory, built from the same
// entries a benchmark repository holds (names, modes, sizes, times), whose
// files read as bytes copied out of one shared buffer. It is mounted with
// the kernel settings backupfs asks for (1 MiB reads and readahead, long
// entry and attribute timeouts, the page cache kept), so a tool timed on
// both differs only by what backupfs does to produce its bytes.
//
// It is written with go-fuse's node API, as a plain in-memory filesystem
// would be (compare go-fuse's own memnode and zipfs examples).
package ceiling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// patternSize is the size of the buffer every file's bytes come from.
const patternSize = 1 << 20

// pattern is what files contain, repeated: random bytes, so nothing can
// shortcut a copy.
var pattern = func() []byte {
	b := make([]byte, patternSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// attrs is what a node reports about itself.
type attrs struct {
	mode         uint32
	size         uint64
	uid, gid     uint32
	nlink        uint32
	mtime, ctime time.Time
}

func (a *attrs) fill(out *fuse.Attr) {
	out.Mode = a.mode
	out.Size = a.size
	out.Blocks = (a.size + 511) / 512
	out.Blksize = 128 << 10
	out.Uid, out.Gid = a.uid, a.gid
	out.Nlink = a.nlink
	out.SetTimes(&a.mtime, &a.mtime, &a.ctime)
}

type dirNode struct {
	fs.Inode
	attrs
}

var _ = (fs.NodeGetattrer)((*dirNode)(nil))

func (n *dirNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

type fileNode struct {
	fs.Inode
	attrs
}

var (
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeReader)((*fileNode)(nil))
)

func (n *fileNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

// Open keeps the page cache: the content never changes.
func (n *fileNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read copies the file's bytes from the pattern, as a filesystem with
// everything decoded in memory would.
func (n *fileNode) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(n.size) {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), int64(n.size)-off)
	for done := int64(0); done < want; {
		p := (off + done) % patternSize
		done += int64(copy(dest[done:want], pattern[p:]))
	}
	return fuse.ReadResultData(dest[:want]), 0
}

type linkNode struct {
	fs.Inode
	attrs
	target []byte
}

var (
	_ = (fs.NodeGetattrer)((*linkNode)(nil))
	_ = (fs.NodeReadlinker)((*linkNode)(nil))
)

func (n *linkNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *linkNode) Readlink(context.Context) ([]byte, syscall.Errno) { return n.target, 0 }

// Tree is the in-memory tree of a snapshot's entries.
type Tree struct {
	root    *dirNode
	entries []*testrepo.Entry // in walk order, "." first
	Files   int
	Bytes   int64
}

// Build reads every entry of src (a snapshot in walk order).
func Build(src testrepo.EntrySource) (*Tree, error) {
	t := &Tree{}
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if e.IsRegular() {
			t.Files++
			t.Bytes += e.Size()
		}
		t.entries = append(t.entries, e)
	}
	if len(t.entries) == 0 || t.entries[0].Path != "." {
		return nil, errors.New("the snapshot has no root entry")
	}
	t.root = &dirNode{attrs: attrsOf(t.entries[0])}
	return t, nil
}

func attrsOf(e *testrepo.Entry) attrs {
	mode := e.Mode
	if mode&testrepo.TypeMask == 0 {
		mode |= testrepo.TypeRegular
	}
	nlink := uint32(e.Nlink)
	if nlink == 0 {
		nlink = 1
		if e.IsDir() {
			nlink = 2
		}
	}
	return attrs{
		mode: mode, size: uint64(e.Size()), uid: uint32(e.UID), gid: uint32(e.GID), nlink: nlink,
		mtime: e.MtimeOrDefault(), ctime: e.CtimeOrDefault(),
	}
}

// onAdd creates every node below the root once the root is mounted.
func (t *Tree) onAdd(ctx context.Context) {
	dirs := map[string]*fs.Inode{".": &t.root.Inode}
	for _, e := range t.entries[1:] {
		parentPath, name := path.Split(e.Path)
		parentPath = path.Clean(parentPath)
		if parentPath == "" {
			parentPath = "."
		}
		parent := dirs[parentPath]
		if parent == nil {
			continue // cannot happen in walk order
		}
		a := attrsOf(e)
		var node fs.InodeEmbedder
		switch a.mode & testrepo.TypeMask {
		case testrepo.TypeDir:
			node = &dirNode{attrs: a}
		case testrepo.TypeSymlink:
			node = &linkNode{attrs: a, target: []byte(e.Link)}
		case testrepo.TypeRegular:
			node = &fileNode{attrs: a}
		default:
			node = &dirNode{attrs: a} // devices and fifos: attributes only
		}
		ch := parent.NewPersistentInode(ctx, node, fs.StableAttr{Mode: a.mode & testrepo.TypeMask})
		parent.AddChild(name, ch, true)
		if a.mode&testrepo.TypeMask == testrepo.TypeDir {
			dirs[e.Path] = ch
		}
	}
	t.entries = nil // the nodes hold everything now
}

// Options mirror the backupfs mount options that matter for speed.
type Options struct {
	// Xattrs is "auto" (the kernel caches ACL queries), "on" (every query
	// is a round trip) or "off" (none).
	Xattrs string
	Debug  bool
}

// Mount serves the tree on dir.
func (t *Tree) Mount(dir string, o Options) (*fuse.Server, error) {
	stable := time.Hour
	opts := &fs.Options{
		EntryTimeout:    &stable,
		AttrTimeout:     &stable,
		NegativeTimeout: &stable,
		OnAdd:           t.onAdd,
		MountOptions: fuse.MountOptions{
			FsName:        "ceiling",
			Name:          "ceiling",
			Options:       []string{"ro", "default_permissions"},
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			DirectMount:   true,
			DisableSplice: true,
			Debug:         o.Debug,
		},
	}
	switch o.Xattrs {
	case "auto", "":
		opts.EnableAcl = true
	case "on":
	case "off":
		opts.DisableXAttrs = true
	default:
		return nil, fmt.Errorf("xattrs: want auto, on or off, not %q", o.Xattrs)
	}
	return fs.Mount(dir, t.root, opts)
}
