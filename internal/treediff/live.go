package treediff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/backupfs/backupfs/crypto/blake3"
	"github.com/backupfs/backupfs/repo/bupstash"
	"golang.org/x/sys/unix"
)

// LiveOptions control how a local directory is indexed.
type LiveOptions struct {
	// Xattrs reads extended attributes of files and directories
	// (Bupstash's --xattrs); without it entries have none.
	Xattrs bool
	// Workers stat, read and hash entries in parallel (Bupstash's
	// --indexer-threads); 0 means GOMAXPROCS.
	Workers int
}

// Live indexes local paths as `bupstash diff ./dir` does (Bupstash's
// FsIndexer with content hashes): the paths' common directory becomes
// ".", entries come in index order with the source's metadata (device
// numbers normalised in order of appearance, link counts and inode
// numbers as they are), and each regular file carries the BLAKE3 of its
// content. Sockets are left out, as are entries that vanish while being
// read. A single path that is not a directory gives one entry named after
// it.
func Live(ctx context.Context, paths []string, opts LiveOptions) (*Index, error) {
	w, base, err := newWalker(paths)
	if err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	c := collector{base: base, xattrs: opts.Xattrs}

	// The walk is sequential (it fixes the order); batches of paths are
	// statted and hashed by the workers and collected in walk order.
	const batchSize = 256
	type batch struct {
		paths   []string
		entries []*bupstash.IndexEntry
		err     error
		done    chan struct{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *batch)
	order := make(chan *batch, 2*workers)
	walkErr := make(chan error, 1)
	go func() {
		defer close(jobs)
		defer close(order)
		var paths []string
		send := func() bool {
			b := &batch{paths: paths, done: make(chan struct{})}
			paths = nil
			select {
			case order <- b:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- b:
			case <-ctx.Done():
				return false
			}
			return true
		}
		for {
			p, err := w.next()
			if err != nil {
				walkErr <- err
				return
			}
			if p == "" {
				break
			}
			paths = append(paths, p)
			if len(paths) == batchSize && !send() {
				return
			}
		}
		if len(paths) > 0 {
			send()
		}
		walkErr <- nil
	}()
	for range workers {
		go func() {
			fh := newFileHasher()
			for b := range jobs {
				for _, p := range b.paths {
					if ctx.Err() != nil {
						b.err = ctx.Err()
						break
					}
					e, err := c.entry(p, fh)
					switch {
					case err == nil:
						b.entries = append(b.entries, e)
					case isSmear(err):
						// Gone or changed while indexing: Bupstash leaves
						// such entries out.
					default:
						b.err = err
					}
					if b.err != nil {
						break
					}
				}
				close(b.done)
			}
		}()
	}

	bld := newBuilder()
	devs := map[uint64]uint64{}
	for b := range order {
		select {
		case <-b.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if b.err != nil {
			return nil, b.err
		}
		for _, e := range b.entries {
			n, ok := devs[e.NormDev]
			if !ok {
				n = uint64(len(devs))
				devs[e.NormDev] = n
			}
			e.NormDev = n
			if err := bld.add(e); err != nil {
				return nil, err
			}
		}
	}
	if err := <-walkErr; err != nil {
		return nil, err
	}
	return bld.finish()
}

// isSmear reports an error Bupstash takes for the tree changing under it:
// ENOENT or EINVAL.
func isSmear(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) || errors.Is(err, errChanged)
}

var errChanged = errors.New("changed while being read")

// child is a directory entry found by the walk.
type child struct {
	path        string
	dir, socket bool
}

// walker yields paths in Bupstash's index order (FsWalker): each
// directory's entries together, sorted by name, then its subdirectories'
// entries, depth first.
type walker struct {
	prefilled map[string][]child // children of the paths' common ancestors, fixed at the start
	buffered  []string
	stack     [][]string
}

func newWalker(paths []string) (*walker, string, error) {
	if len(paths) == 0 {
		return nil, "", errors.New("no paths specified")
	}
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, "", fmt.Errorf("unable to get absolute path of %q: %w", p, err)
		}
		abs[i] = a
	}
	if len(abs) == 1 {
		fi, err := os.Lstat(abs[0])
		if err != nil {
			return nil, "", err // names the path
		}
		if !fi.IsDir() {
			return &walker{buffered: []string{abs[0]}}, abs[0], nil
		}
	}
	slices.SortFunc(abs, func(a, b string) int { return pathCmp([]byte(a), []byte(b)) })
	abs = slices.Compact(abs)
	// Paths inside another given path add nothing: "a a/b" is "a".
	var roots []string
	for i := 0; i < len(abs); {
		j := i + 1
		for j < len(abs) && commonPath(abs[i], abs[j]) == abs[i] {
			j++
		}
		roots = append(roots, abs[i])
		i = j
	}
	base := roots[0]
	for _, r := range roots[1:] {
		base = commonPath(base, r)
	}
	// With several roots, their common ancestor and the directories
	// between it and them are "fillers": only the roots are listed in them.
	fillers := map[string]bool{}
	if len(roots) > 1 {
		fillers[base] = true
		for _, r := range roots {
			for p := filepath.Dir(r); p != base; p = filepath.Dir(p) {
				fillers[p] = true
			}
		}
	}
	w := &walker{prefilled: map[string][]child{}}
	add := func(p string) error {
		fi, err := os.Lstat(p)
		if err != nil {
			return err // names the path
		}
		parent := filepath.Dir(p)
		if p == "/" {
			parent = "" // the parent of / is written as nothing
		}
		w.prefilled[parent] = append(w.prefilled[parent], child{path: p, dir: fi.IsDir(), socket: fi.Mode()&os.ModeSocket != 0})
		return nil
	}
	for f := range fillers {
		if err := add(f); err != nil {
			return nil, "", err
		}
	}
	for _, r := range roots {
		if err := add(r); err != nil {
			return nil, "", err
		}
	}
	for _, cs := range w.prefilled {
		slices.SortFunc(cs, func(a, b child) int { return pathCmp([]byte(a.path), []byte(b.path)) })
	}
	if _, err := os.Lstat(base); err != nil {
		return nil, "", err // names the path
	}
	start := filepath.Dir(base)
	if base == "/" {
		start = ""
	}
	w.stack = [][]string{{start}}
	return w, base, nil
}

// commonPath is the longest common ancestor of two clean absolute paths,
// by whole components.
func commonPath(a, b string) string {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	n := 0
	for n < len(as) && n < len(bs) && as[n] == bs[n] {
		n++
	}
	if n <= 1 {
		return "/"
	}
	return strings.Join(as[:n], "/")
}

// next returns the next path, or "" at the end.
func (w *walker) next() (string, error) {
	for {
		if len(w.buffered) > 0 {
			p := w.buffered[0]
			w.buffered = w.buffered[1:]
			return p, nil
		}
		if len(w.stack) == 0 {
			return "", nil
		}
		top := &w.stack[len(w.stack)-1]
		if len(*top) == 0 {
			w.stack = w.stack[:len(w.stack)-1]
			continue
		}
		dir := (*top)[len(*top)-1]
		*top = (*top)[:len(*top)-1]
		if err := w.walkDir(dir); err != nil {
			return "", err
		}
	}
}

func (w *walker) walkDir(dir string) error {
	children, ok := w.prefilled[dir]
	if ok {
		delete(w.prefilled, dir)
	} else {
		ents, err := os.ReadDir(dir)
		if err != nil && !isSmear(err) {
			return fmt.Errorf("unable to walk %s: %w", dir, err)
		}
		for _, e := range ents {
			children = append(children, child{path: filepath.Join(dir, e.Name()), dir: e.IsDir(), socket: e.Type()&os.ModeSocket != 0})
		}
		// os.ReadDir sorts by name as Go strings compare: bytes, as
		// Bupstash's OsStr comparison of single names.
	}
	var recurse []string
	for _, c := range children {
		if c.socket {
			continue
		}
		if c.dir {
			recurse = append(recurse, c.path)
		}
		w.buffered = append(w.buffered, c.path)
	}
	if len(recurse) > 0 {
		slices.Reverse(recurse)
		w.stack = append(w.stack, recurse)
	}
	return nil
}

// collector builds an entry from a live path (Bupstash's
// MetadataCollector::index_entry_from_fs).
type collector struct {
	base   string
	xattrs bool
}

func (c *collector) entry(p string, fh *fileHasher) (*bupstash.IndexEntry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	e := &bupstash.IndexEntry{
		Version: 5, HasCursor: true,
		Path:  c.indexPath(p, typ == unix.S_IFDIR),
		Mode:  st.Mode,
		UID:   uint64(st.Uid),
		GID:   uint64(st.Gid),
		Mtime: st.Mtim.Sec, MtimeNsec: uint32(st.Mtim.Nsec),
		Ctime: st.Ctim.Sec, CtimeNsec: uint32(st.Ctim.Nsec),
		NormDev: st.Dev, // normalised in walk order by Live
		Ino:     st.Ino,
		Nlink:   uint64(st.Nlink),
	}
	if c.xattrs && (typ == unix.S_IFREG || typ == unix.S_IFDIR) {
		xs, err := readXattrs(p)
		if err != nil {
			return nil, err
		}
		e.Xattrs = xs
	}
	switch typ {
	case unix.S_IFREG:
		e.Size = uint64(st.Size)
		h, err := fh.hash(p, &st)
		if err != nil {
			return nil, err
		}
		e.DataHash = h
	case unix.S_IFBLK, unix.S_IFCHR:
		e.DevMajor, e.DevMinor = uint64(unix.Major(st.Rdev)), uint64(unix.Minor(st.Rdev))
	case unix.S_IFLNK:
		target, err := readlink(p)
		if err != nil {
			return nil, err
		}
		e.Link = target
	}
	return e, nil
}

// indexPath is a path relative to the base: "." for the base directory,
// its name for a base that is a single file.
func (c *collector) indexPath(p string, dir bool) []byte {
	if len(p) == len(c.base) {
		if dir {
			return []byte(".")
		}
		return []byte(filepath.Base(p))
	}
	if c.base == "/" {
		return []byte(p[1:])
	}
	return []byte(p[len(c.base)+1:])
}

// fileHasher hashes files for one worker, with its own buffer and
// hasher: allocating them per file cost more than the hashing of the
// small files that trees are mostly made of.
type fileHasher struct {
	buf []byte
	h   *blake3.Hasher
}

func newFileHasher() *fileHasher {
	return &fileHasher{buf: make([]byte, 256<<10), h: blake3.New()}
}

// hash hashes a regular file's content with plain BLAKE3, as the content
// hash of an index entry. The file is opened without following links and
// without blocking, so that a file replaced by a fifo or a link since it
// was listed is not waited on but skipped as changed.
func (fh *fileHasher) hash(p string, st *unix.Stat_t) (*[32]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = errChanged
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: p, Err: err}
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || now.Dev != st.Dev {
		return nil, &os.PathError{Op: "open", Path: p, Err: errChanged}
	}
	fh.h.Reset()
	for {
		n, err := unix.Read(fd, fh.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: p, Err: err}
		}
		if n == 0 {
			break
		}
		fh.h.Write(fh.buf[:n])
	}
	sum := fh.h.Sum256()
	return &sum, nil
}

func readlink(p string) ([]byte, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlink(p, buf)
		if err != nil {
			return nil, &os.PathError{Op: "readlink", Path: p, Err: err}
		}
		if n < size {
			return buf[:n], nil
		}
	}
}

// readXattrs lists a file's extended attributes without following links.
// None gives nil, as Bupstash records no map at all; an attribute removed
// meanwhile is left out.
func readXattrs(p string) ([]bupstash.Xattr, error) {
	var names []byte
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			if isSmear(err) {
				return nil, nil
			}
			return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
		}
		names = buf[:n]
		break
	}
	var xs []bupstash.Xattr
	for _, name := range bytes.Split(names, []byte{0}) {
		if len(name) == 0 {
			continue
		}
		v, err := getXattr(p, string(name))
		if errors.Is(err, unix.ENODATA) || isSmear(err) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + string(name), Path: p, Err: err}
		}
		xs = append(xs, bupstash.Xattr{Name: string(name), Value: v})
	}
	return xs, nil
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<24 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
