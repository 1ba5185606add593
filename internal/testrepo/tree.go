package testrepo

import (
	"fmt"
	"sort"
)

// Tree is a snapshot described in memory, in any order: Entries puts it in
// Bupstash's walk order, creates missing parent directories, numbers
// inodes and counts links. Use it for hand-made test trees; stream large
// generated ones through an EntrySource (see Shape) instead.
type Tree struct {
	entries map[string]*Entry
	links   map[string][]string // hard-link group (by first name) → names
	linkOf  map[string]string   // name → its group's first name
}

// NewTree returns a tree holding only the root directory.
func NewTree() *Tree {
	root := Dir(".")
	return &Tree{
		entries: map[string]*Entry{".": &root},
		links:   map[string][]string{},
		linkOf:  map[string]string{},
	}
}

// Add adds entries; their parent directories are created (mode 0755) when
// missing. Adding "." replaces the root's attributes.
func (t *Tree) Add(entries ...Entry) error {
	for _, e := range entries {
		if err := e.check(); err != nil {
			return err
		}
		if e.Path != "." {
			if _, ok := t.entries[e.Path]; ok {
				return fmt.Errorf("%q added twice", e.Path)
			}
			if err := t.mkdirs(e.Path); err != nil {
				return err
			}
		}
		e := e
		t.entries[e.Path] = &e
	}
	return nil
}

// mkdirs creates the missing ancestors of p.
func (t *Tree) mkdirs(p string) error {
	parent, _ := splitPath(p)
	if parent == "" {
		return nil
	}
	if d, ok := t.entries[parent]; ok {
		if !d.IsDir() {
			return fmt.Errorf("%q: parent %q is not a directory", p, parent)
		}
		return nil
	}
	if err := t.mkdirs(parent); err != nil {
		return err
	}
	d := Dir(parent)
	t.entries[parent] = &d
	return nil
}

// MustAdd is Add for literal test trees: it panics on error.
func (t *Tree) MustAdd(entries ...Entry) *Tree {
	if err := t.Add(entries...); err != nil {
		panic(err)
	}
	return t
}

// Hardlink adds path as another name of the regular file target: same
// attributes, inode and content (Bupstash stores each name's copy). All
// names of the group get the group's size as link count unless a larger
// Nlink was set (links outside the snapshot).
func (t *Tree) Hardlink(path, target string) error {
	te, ok := t.entries[target]
	if !ok || !te.IsRegular() {
		return fmt.Errorf("hard link %q: target %q is not a regular file in the tree", path, target)
	}
	e := *te
	e.Path = path
	if err := t.Add(e); err != nil {
		return err
	}
	first, ok := t.linkOf[target]
	if !ok {
		first = target
		t.linkOf[target] = target
		t.links[target] = []string{target}
	}
	t.linkOf[path] = first
	t.links[first] = append(t.links[first], path)
	return nil
}

// Len returns the number of entries, the root included.
func (t *Tree) Len() int { return len(t.entries) }

// Get returns the entry at path.
func (t *Tree) Get(path string) (Entry, bool) {
	e, ok := t.entries[path]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Entries returns the entries in walk order with inodes and link counts
// resolved: directories have 2 + their subdirectories, hard-link groups
// share one inode, and other entries without an inode get unique ones.
func (t *Tree) Entries() []Entry {
	kids := map[string][]string{}
	for p := range t.entries {
		if p == "." {
			continue
		}
		parent, _ := splitPath(p)
		kids[parent] = append(kids[parent], p)
	}
	for _, k := range kids {
		sort.Slice(k, func(i, j int) bool {
			_, a := splitPath(k[i])
			_, b := splitPath(k[j])
			return a < b
		})
	}

	used := map[uint64]bool{}
	for _, e := range t.entries {
		if e.Ino != 0 {
			used[e.Ino] = true
		}
	}
	next := uint64(2)
	newIno := func() uint64 {
		for used[next] {
			next++
		}
		used[next] = true
		return next
	}
	groupIno := map[string]uint64{}

	out := make([]Entry, 0, len(t.entries))
	emit := func(p string) {
		e := *t.entries[p]
		if e.IsDir() && e.Nlink == 0 {
			e.Nlink = 2
			for _, k := range kids[p2key(p)] {
				if t.entries[k].IsDir() {
					e.Nlink++
				}
			}
		}
		if first, ok := t.linkOf[p]; ok {
			ino, ok := groupIno[first]
			if !ok {
				ino = t.entries[first].Ino
				if ino == 0 {
					ino = newIno()
				}
				groupIno[first] = ino
			}
			e.Ino = ino
			e.Nlink = max(e.Nlink, uint64(len(t.links[first])))
		}
		if e.Ino == 0 {
			e.Ino = newIno()
		}
		if e.Nlink == 0 {
			e.Nlink = 1
		}
		out = append(out, e)
	}

	// "siblings before nephews": list a directory's children, then visit
	// its subdirectories depth first.
	emit(".")
	var visit func(dir string)
	visit = func(dir string) {
		children := kids[dir]
		for _, k := range children {
			emit(k)
		}
		for _, k := range children {
			if t.entries[k].IsDir() {
				visit(k)
			}
		}
	}
	visit("")
	return out
}

// p2key maps a directory path to the key of its children in Entries.
func p2key(p string) string {
	if p == "." {
		return ""
	}
	return p
}

// Source returns the entries in walk order as an EntrySource.
func (t *Tree) Source() EntrySource { return Entries(t.Entries()) }
