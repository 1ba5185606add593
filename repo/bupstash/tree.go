package bupstash

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"unsafe"
)

// Tree is a snapshot's file tree decoded once into a compact, navigable
// form: one fixed-size record per entry, names in a shared arena, and each
// directory's children as a sorted run of record numbers. An entry costs
// 108 bytes besides its name (its record and its place among its
// directory's children), and what few entries have (link targets, xattrs,
// devices, hard links, rare owners and times) lives beside in extras.
// Trees are immutable and safe for concurrent use.
//
// Record 0 is the snapshot root. Records are numbered in index order, so
// rebuilding a tree from the same index gives the same numbers; callers
// may derive stable inode numbers from them.
type Tree struct {
	item   *Item
	hidden hiddenEntries // entries the index has that the tree does not show
	nodes  nodeStore
	names  nameArena
	kids   []uint32
	extras []nodeExtra
	owners [][2]uint32 // distinct (uid, gid) pairs, by treeNode.owner
}

// treeNode is one entry. Field order keeps it free of padding; fields
// that only some entries need share space or live in extras.
type treeNode struct {
	size  uint64
	mtime int64
	// chunk is a regular file's first leaf (formats 3–5) or stream offset
	// (formats 1–2); for a directory, where its children start in kids
	// (high 32 bits) and how many there are (low 32 bits).
	chunk      uint64
	ctimeDelta int32 // ctime - mtime, unless flagCtimeExtra
	mtimeNsec  uint32
	ctimeNsec  uint32
	mode       uint32
	nlink      uint32
	parent     uint32
	nameOff    uint32
	delta      uint32
	start      uint32
	end        uint32
	extra      uint32 // 1-based index into extras, 0 for none
	owner      uint16 // index into owners, or ownerInExtra
	nameLen    uint8  // or longName
	flags      uint8
	hash       [32]byte
}

const (
	flagHash       = 1 << iota // hash holds the content hash
	flagCursor                 // chunk/delta/start/end form a relative cursor
	flagSparse                 // the source file had holes
	flagSynthetic              // a directory the index implies but does not contain
	flagHardlink               // saved with a link count above 1: extras name its inode group
	flagCtimeExtra             // ctime is in extras
)

const (
	ownerInExtra = math.MaxUint16 // the owner is in extras
	longName     = math.MaxUint8  // the name's length is in extras
)

// nodeExtra holds what few entries have.
type nodeExtra struct {
	link         []byte
	xattrs       []Xattr
	major, minor uint32
	inode        uint32 // hard links: the record whose inode the group shares
	uid, gid     uint32 // with ownerInExtra
	ctime        int64  // with flagCtimeExtra
	nameLen      uint32 // with longName
}

// TreeNodeSize is the size of one entry's fixed record.
const TreeNodeSize = int(unsafe.Sizeof(treeNode{}))

// NodeAttr are an entry's attributes as a filesystem presents them.
type NodeAttr struct {
	Mode                 uint32
	Size                 uint64
	UID, GID             uint32
	Nlink                uint32 // links in the snapshot (see Tree.Attr); for a directory at least the saved count
	Mtime, Ctime         int64
	MtimeNsec, CtimeNsec uint32
	// InodeRecord is the record whose number the inode number derives
	// from: the record itself, or for hard links the first record of the
	// group, so that every name of a file shows one inode.
	InodeRecord        uint32
	DevMajor, DevMinor uint32
	Sparse             bool
}

// LoadTree reads the item's whole index into a Tree.
func (o *OpenItem) LoadTree(ctx context.Context) (*Tree, error) {
	idx, err := o.Index()
	if err != nil {
		return nil, err
	}
	defer idx.Close()
	b := newTreeBuilder(o.item)
	var e IndexEntry
	for {
		err := idx.nextBorrowed(ctx, &e)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := b.add(&e); err != nil {
			return nil, fmt.Errorf("item %s: %q: %w", o.item.ID, e.Path, err)
		}
	}
	t := b.finish()
	o.repo.reportHidden(o.item.ID, t.hidden)
	return t, nil
}

type treeBuilder struct {
	t         *Tree
	hidden    int                  // entries dropped as they were added
	firstHide string               // the first of them
	dirs      map[string]uint32    // directory path → record; "" is the root
	links     map[[2]uint64]uint32 // (device, inode) of hard-linked files → first record
	owners    map[[2]uint32]uint16 // (uid, gid) → index in t.owners
}

func newTreeBuilder(it *Item) *treeBuilder {
	t := &Tree{item: it, extras: []nodeExtra{{}}}
	b := &treeBuilder{t: t, dirs: map[string]uint32{"": 0}, links: map[[2]uint64]uint32{}, owners: map[[2]uint32]uint16{}}
	// The root exists even when the index lacks a "." entry.
	t.nodes.add(b.syntheticDir(0, nil))
	return b
}

// syntheticDir is a directory the index implies (a parent of some entry)
// without describing it: 0755, owned by root, dated like the item.
func (b *treeBuilder) syntheticDir(parent uint32, name []byte) treeNode {
	n := treeNode{
		mode:   ModeDir | 0o755,
		nlink:  2,
		parent: parent,
		mtime:  b.t.item.Timestamp.Unix(),
		flags:  flagSynthetic,
	}
	n.mtimeNsec = uint32(b.t.item.Timestamp.Nanosecond())
	n.ctimeNsec = n.mtimeNsec
	b.setOwner(&n, 0, 0)
	b.setName(&n, name)
	return n
}

// extraOf returns n's extras, giving it some if it has none.
func (b *treeBuilder) extraOf(n *treeNode) *nodeExtra {
	if n.extra == 0 {
		n.extra = uint32(len(b.t.extras))
		b.t.extras = append(b.t.extras, nodeExtra{})
	}
	return &b.t.extras[n.extra]
}

func (b *treeBuilder) setName(n *treeNode, name []byte) {
	n.nameOff = b.t.names.add(name)
	if len(name) >= longName {
		n.nameLen = longName
		b.extraOf(n).nameLen = uint32(len(name))
		return
	}
	n.nameLen = uint8(len(name))
}

// setOwner records uid and gid: as an index into the tree's few distinct
// owners, or in extras once there are too many.
func (b *treeBuilder) setOwner(n *treeNode, uid, gid uint32) {
	k := [2]uint32{uid, gid}
	i, ok := b.owners[k]
	if !ok && len(b.t.owners) < ownerInExtra {
		i = uint16(len(b.t.owners))
		b.owners[k] = i
		b.t.owners = append(b.t.owners, k)
		ok = true
	}
	if !ok {
		n.owner = ownerInExtra
		x := b.extraOf(n)
		x.uid, x.gid = uid, gid
		return
	}
	n.owner = i
}

// setCtime records the change time, as an offset from the modification
// time when it fits (nearly always).
func (b *treeBuilder) setCtime(n *treeNode, ctime int64) {
	if d := ctime - n.mtime; d >= math.MinInt32 && d <= math.MaxInt32 && (d >= 0) == (ctime >= n.mtime) {
		n.ctimeDelta = int32(d)
		return
	}
	n.flags |= flagCtimeExtra
	b.extraOf(n).ctime = ctime
}

// dir returns the record of the directory at path, synthesizing it and its
// missing ancestors.
func (b *treeBuilder) dir(path []byte) (uint32, error) {
	if i, ok := b.dirs[string(path)]; ok {
		return i, nil
	}
	parentPath, name := splitPath(path)
	parent, err := b.dir(parentPath)
	if err != nil {
		return 0, err
	}
	if b.t.nodes.len() >= math.MaxUint32-1 {
		return 0, ErrTooLarge
	}
	i := b.t.nodes.add(b.syntheticDir(parent, name))
	b.dirs[string(path)] = i
	return i, nil
}

func splitPath(p []byte) (parent, name []byte) {
	if i := bytes.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return nil, p
}

func (b *treeBuilder) add(e *IndexEntry) error {
	if len(e.Path) > 0 && string(e.Path) != "." {
		if _, name := splitPath(e.Path); len(name) > math.MaxUint16 {
			return fmt.Errorf("%w: name of %d bytes", ErrCorrupt, len(name))
		}
	}
	if len(b.t.extras) >= math.MaxUint32-4 {
		return ErrTooLarge
	}
	// The first entry for a path counts (see entryrule.go): a second "."
	// or a second entry of a directory already described is hidden here;
	// other duplicates, and entries below a non-directory, when the tree
	// is finished.
	switch {
	case string(e.Path) == ".":
		if !e.IsDir() || b.t.nodes.at(0).flags&flagSynthetic == 0 {
			b.hide(e.Path)
			return nil
		}
	case e.IsDir():
		if i, ok := b.dirs[string(e.Path)]; ok && b.t.nodes.at(i).flags&flagSynthetic == 0 {
			b.hide(e.Path)
			return nil
		}
	}
	var n treeNode
	if err := b.fillNode(&n, e); err != nil {
		return err
	}
	if e.Link != nil || e.Xattrs != nil || e.DevMajor != 0 || e.DevMinor != 0 {
		x := b.extraOf(&n)
		x.link, x.major, x.minor = bytes.Clone(e.Link), uint32(e.DevMajor), uint32(e.DevMinor)
		for _, xa := range e.Xattrs {
			x.xattrs = append(x.xattrs, Xattr{Name: xa.Name, Value: bytes.Clone(xa.Value)})
		}
	}

	if string(e.Path) == "." {
		b.replace(0, n)
		return nil
	}
	parentPath, name := splitPath(e.Path)
	parent, err := b.dir(parentPath)
	if err != nil {
		return err
	}
	n.parent = parent
	if e.IsDir() {
		// A directory implied by an earlier child gets the attributes of
		// its first entry and keeps its record: its children already
		// point at it.
		if i, ok := b.dirs[string(e.Path)]; ok {
			b.replace(i, n)
			return nil
		}
	}
	if b.t.nodes.len() >= math.MaxUint32-1 {
		return ErrTooLarge
	}
	b.setName(&n, name)
	i := uint32(b.t.nodes.len())
	if !e.IsDir() && e.Nlink > 1 {
		// Hard links: same device and inode, as Bupstash groups them.
		key := [2]uint64{e.NormDev, e.Ino}
		first, ok := b.links[key]
		if !ok {
			first = i
			b.links[key] = i
		}
		b.extraOf(&n).inode = first
		n.flags |= flagHardlink
	}
	b.t.nodes.add(n)
	if e.IsDir() {
		b.dirs[string(e.Path)] = i
	}
	return nil
}

// hide counts an entry the tree will not show.
func (b *treeBuilder) hide(path []byte) {
	if b.hidden == 0 {
		b.firstHide = string(path)
	}
	b.hidden++
}

// replace gives record i the attributes of n, keeping its place in the tree.
func (b *treeBuilder) replace(i uint32, n treeNode) {
	old := b.t.nodes.at(i)
	n.parent, n.nameOff, n.nameLen = old.parent, old.nameOff, old.nameLen
	if old.nameLen == longName {
		nameLen := b.t.extras[old.extra].nameLen
		b.extraOf(&n).nameLen = nameLen
	}
	*b.t.nodes.at(i) = n
}

func (b *treeBuilder) fillNode(n *treeNode, e *IndexEntry) error {
	*n = treeNode{
		size:      e.Size,
		mtime:     e.Mtime,
		mtimeNsec: e.MtimeNsec,
		ctimeNsec: e.CtimeNsec,
		mode:      e.Mode,
		nlink:     clamp32(e.Nlink),
	}
	b.setCtime(n, e.Ctime)
	b.setOwner(n, clamp32(e.UID), clamp32(e.GID))
	if e.IsDir() {
		return nil // no content; chunk will locate its children
	}
	if e.DataHash != nil {
		n.hash = *e.DataHash
		n.flags |= flagHash
	}
	if e.Sparse {
		n.flags |= flagSparse
	}
	if e.HasCursor {
		if e.ChunkDelta > math.MaxUint32 || e.StartOffset > math.MaxUint32 || e.EndOffset > math.MaxUint32 {
			return fmt.Errorf("%w: cursor out of range", ErrCorrupt)
		}
		n.flags |= flagCursor
		n.chunk, n.delta, n.start, n.end = e.FirstChunk, uint32(e.ChunkDelta), uint32(e.StartOffset), uint32(e.EndOffset)
	} else {
		n.chunk = e.StreamOffset
	}
	return nil
}

// Attr returns the entry's attributes as a decoded tree presents them,
// for a reader that needs one entry without decoding the whole index (its
// InodeRecord is 0, and a directory's link count is the saved one).
func (e *IndexEntry) Attr() NodeAttr {
	a := NodeAttr{
		Mode: e.Mode, UID: clamp32(e.UID), GID: clamp32(e.GID), Nlink: clamp32(e.Nlink),
		Mtime: e.Mtime, Ctime: e.Ctime, MtimeNsec: e.MtimeNsec, CtimeNsec: e.CtimeNsec,
		DevMajor: uint32(e.DevMajor), DevMinor: uint32(e.DevMinor), Sparse: e.Sparse,
	}
	if e.IsRegular() {
		a.Size = e.Size
	}
	return a
}

// clamp32 maps ids beyond 32 bits to the kernel's overflow id.
func clamp32(v uint64) uint32 {
	if v > math.MaxUint32 {
		return 65534
	}
	return uint32(v)
}

// finish links children to their directories, sorts them by name, resolves
// duplicate names (the first entry wins: see entryrule.go), and computes
// link counts.
func (b *treeBuilder) finish() *Tree {
	t := b.t
	b.dirs = nil
	nodes := &t.nodes
	n := uint32(nodes.len())

	// Counting sort of records by parent, in record order.
	count := make([]uint32, n+1)
	for i := uint32(1); i < n; i++ {
		count[nodes.at(i).parent+1]++
	}
	for i := 1; i < len(count); i++ {
		count[i] += count[i-1]
	}
	t.kids = make([]uint32, max(int(n)-1, 0))
	next := slices.Clone(count[:n])
	for i := uint32(1); i < n; i++ {
		p := nodes.at(i).parent
		t.kids[next[p]] = i
		next[p]++
	}
	for d := range n {
		off, end := count[d], count[d+1]
		if off == end {
			continue
		}
		run := t.kids[off:end]
		if !slices.IsSortedFunc(run, t.compareRecords) {
			slices.SortStableFunc(run, t.compareRecords)
		}
		// Duplicates are adjacent now, in record order, which is the
		// order the index took their path in (a directory implied by a
		// child takes it when the child comes): keep the first.
		w := 0
		for r := 0; r < len(run); r++ {
			if w > 0 && bytes.Equal(t.Name(run[w-1]), t.Name(run[r])) {
				continue
			}
			run[w] = run[r]
			w++
		}
		nodes.at(d).chunk = uint64(off)<<32 | uint64(w)
	}

	// A hard-linked file has as many links as its group has names in the
	// snapshot, which is what extracting it gives (Bupstash's get and
	// restore link the names of a group, and only those): a file saved
	// with a second name outside the snapshot has one link, whatever the
	// source's count was. A directory keeps its saved count, raised to 2
	// plus its subdirectories here: find(1) and others take nlink-2 as a
	// promise of how many subdirectories to look for, and the saved count
	// is what a stat of an item's root shows before its index is decoded.
	reachable := make([]bool, n)
	reachable[0] = true
	for d := range n { // parents precede their children in record order
		if !reachable[d] {
			continue
		}
		for _, k := range t.Children(d) {
			reachable[k] = true
		}
	}
	b.countHidden(reachable)
	names := map[uint32]uint32{}
	for i := range n {
		r := nodes.at(i)
		switch {
		case r.mode&ModeType == ModeDir:
			links := uint32(2)
			for _, k := range t.Children(i) {
				if nodes.at(k).mode&ModeType == ModeDir {
					links++
				}
			}
			r.nlink = max(r.nlink, links)
		case r.flags&flagHardlink != 0 && reachable[i]:
			names[t.extras[r.extra].inode]++
		default:
			r.nlink = max(r.nlink, 1)
		}
	}
	for i := range n {
		if r := nodes.at(i); r.flags&flagHardlink != 0 {
			r.nlink = max(names[t.extras[r.extra].inode], 1)
		}
	}
	return t
}

// countHidden records what the index has that the tree does not show:
// entries dropped when added, and entries left unreachable (duplicates,
// entries below a non-directory). Directories the tree made up for
// entries that did not describe them do not count.
func (b *treeBuilder) countHidden(reachable []bool) {
	t := b.t
	h := hiddenEntries{count: b.hidden, first: b.firstHide}
	for i, ok := range reachable {
		if ok || t.nodes.at(uint32(i)).flags&flagSynthetic != 0 {
			continue
		}
		if h.count == 0 {
			h.first = t.Path(uint32(i))
		}
		h.count++
	}
	t.hidden = h
}

func (t *Tree) compareRecords(a, b uint32) int { return bytes.Compare(t.Name(a), t.Name(b)) }

// Item returns the item the tree belongs to.
func (t *Tree) Item() *Item { return t.item }

// Len returns the number of records.
func (t *Tree) Len() int { return t.nodes.len() }

// Bytes estimates the memory the tree holds.
func (t *Tree) Bytes() int64 {
	n := t.nodes.bytes() + t.names.bytes() + int64(len(t.kids))*4 + int64(len(t.owners))*8
	for _, x := range t.extras {
		n += int64(unsafe.Sizeof(x)) + int64(len(x.link))
		for _, xa := range x.xattrs {
			n += int64(unsafe.Sizeof(xa)) + int64(len(xa.Name)+len(xa.Value))
		}
	}
	return n
}

// valid reports whether n is a record number.
func (t *Tree) valid(n uint32) bool { return int(n) < t.nodes.len() }

// Name returns a record's name (the root's is empty). It aliases the tree.
func (t *Tree) Name(n uint32) []byte {
	r := t.nodes.at(n)
	l := uint32(r.nameLen)
	if l == longName {
		l = t.extras[r.extra].nameLen
	}
	return t.names.get(r.nameOff, uint16(l))
}

// Parent returns a record's directory (the root is its own parent).
func (t *Tree) Parent(n uint32) uint32 { return t.nodes.at(n).parent }

// Path returns a record's path from the snapshot root, for messages.
func (t *Tree) Path(n uint32) string {
	if n == 0 || !t.valid(n) {
		return "."
	}
	var parts [][]byte
	for ; n != 0; n = t.nodes.at(n).parent {
		parts = append(parts, t.Name(n))
	}
	slices.Reverse(parts)
	return string(bytes.Join(parts, []byte{'/'}))
}

// Children returns a directory's entries sorted by name. The slice aliases
// the tree and must not be modified.
func (t *Tree) Children(dir uint32) []uint32 {
	if !t.valid(dir) {
		return nil
	}
	r := t.nodes.at(dir)
	if r.mode&ModeType != ModeDir {
		return nil
	}
	off, n := uint32(r.chunk>>32), uint32(r.chunk)
	return t.kids[off : off+n : off+n]
}

// Lookup finds name in a directory.
func (t *Tree) Lookup(dir uint32, name []byte) (uint32, bool) {
	kids := t.Children(dir)
	i, found := slices.BinarySearchFunc(kids, name, func(k uint32, name []byte) int {
		return bytes.Compare(t.Name(k), name)
	})
	if !found {
		return 0, false
	}
	return kids[i], true
}

// Attr returns a record's attributes.
func (t *Tree) Attr(n uint32) NodeAttr {
	r := t.nodes.at(n)
	a := NodeAttr{
		Mode: r.mode, Size: r.size, Nlink: r.nlink,
		Mtime: r.mtime, Ctime: r.mtime + int64(r.ctimeDelta), MtimeNsec: r.mtimeNsec, CtimeNsec: r.ctimeNsec,
		InodeRecord: n, Sparse: r.flags&flagSparse != 0,
	}
	if r.owner != ownerInExtra {
		o := t.owners[r.owner]
		a.UID, a.GID = o[0], o[1]
	}
	if r.mode&ModeType != ModeRegular {
		a.Size = 0
	}
	if x := t.extra(n); x != nil {
		a.DevMajor, a.DevMinor = x.major, x.minor
		if r.owner == ownerInExtra {
			a.UID, a.GID = x.uid, x.gid
		}
		if r.flags&flagCtimeExtra != 0 {
			a.Ctime = x.ctime
		}
		if r.flags&flagHardlink != 0 {
			a.InodeRecord = x.inode
		}
	}
	return a
}

// IsDir reports whether a record is a directory.
func (t *Tree) IsDir(n uint32) bool { return t.nodes.at(n).mode&ModeType == ModeDir }

func (t *Tree) extra(n uint32) *nodeExtra {
	if x := t.nodes.at(n).extra; x != 0 {
		return &t.extras[x]
	}
	return nil
}

// Link returns a symlink's target.
func (t *Tree) Link(n uint32) []byte {
	if x := t.extra(n); x != nil {
		return x.link
	}
	return nil
}

// Xattrs returns a record's extended attributes, sorted by name.
func (t *Tree) Xattrs(n uint32) []Xattr {
	if x := t.extra(n); x != nil {
		return x.xattrs
	}
	return nil
}

// File returns the content of a regular file record, read through o.
func (t *Tree) File(o *OpenItem, n uint32) (*File, error) {
	r := t.nodes.at(n)
	if r.mode&ModeType != ModeRegular {
		return nil, ErrNotRegular
	}
	e := IndexEntry{Path: []byte(t.Path(n)), Size: r.size, HasCursor: r.flags&flagCursor != 0}
	if e.HasCursor {
		e.FirstChunk, e.ChunkDelta, e.StartOffset, e.EndOffset = r.chunk, uint64(r.delta), uint64(r.start), uint64(r.end)
	} else {
		e.StreamOffset = r.chunk
	}
	if r.flags&flagHash != 0 {
		h := r.hash
		e.DataHash = &h
	}
	return o.File(&e)
}
