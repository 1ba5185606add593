package bupstash

import (
	"context"
	"io"
)

// LinkCounts gives the entries of a snapshot, read as a stream, the link
// counts a decoded Tree gives them (see Tree.Attr): a hard-linked file has
// as many links as its group has names in the snapshot, a directory its
// saved count raised to 2 plus its subdirectories. A streamed listing
// cannot know these until the whole index has been read, so the index is
// read once beforehand; it keeps one small record per directory and per
// hard-linked name, none per plain file.
type LinkCounts struct {
	groups map[[2]uint64]uint64 // (device, inode) of hard-linked names → names
	names  map[string]bool      // paths of hard-linked names counted, for duplicates
	dirs   map[string]*dirLinks // directory path ("" for the root) → its subdirectories
}

type dirLinks struct{ subdirs uint64 }

// LinkCounts reads the item's index once and counts its links.
func (o *OpenItem) LinkCounts(ctx context.Context) (*LinkCounts, error) {
	idx, err := o.Index()
	if err != nil {
		return nil, err
	}
	defer idx.Close()
	c := newLinkCounts()
	var e IndexEntry
	for {
		err := idx.nextBorrowed(ctx, &e)
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
		c.add(&e)
	}
}

func newLinkCounts() *LinkCounts {
	return &LinkCounts{
		groups: map[[2]uint64]uint64{},
		names:  map[string]bool{},
		dirs:   map[string]*dirLinks{"": {}},
	}
}

// entryPath maps the index's root "." to "".
func entryPath(p []byte) string {
	if string(p) == "." {
		return ""
	}
	return string(p)
}

// dir returns the record of a directory, creating it and its missing
// ancestors, each counted once in its parent, as a Tree synthesizes them.
func (c *LinkCounts) dir(p string) *dirLinks {
	if d, ok := c.dirs[p]; ok {
		return d
	}
	d := &dirLinks{}
	c.dirs[p] = d
	parent, _ := splitPath([]byte(p))
	c.dir(string(parent)).subdirs++
	return d
}

func (c *LinkCounts) add(e *IndexEntry) {
	p := entryPath(e.Path)
	if p != "" {
		parent, _ := splitPath([]byte(p))
		c.dir(string(parent))
	}
	switch {
	case e.IsDir():
		c.dir(p)
	case e.Nlink > 1:
		if !c.names[p] {
			c.names[p] = true
			c.groups[[2]uint64{e.NormDev, e.Ino}]++
		}
	}
}

// Nlink returns the entry's link count in the snapshot.
func (c *LinkCounts) Nlink(e *IndexEntry) uint64 {
	switch {
	case e.IsDir():
		links := uint64(2)
		if d, ok := c.dirs[entryPath(e.Path)]; ok {
			links += d.subdirs
		}
		return max(e.Nlink, links)
	case e.Nlink > 1:
		return max(c.groups[[2]uint64{e.NormDev, e.Ino}], 1)
	}
	return 1
}
