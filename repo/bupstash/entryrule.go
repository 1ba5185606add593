package bupstash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
)

// Bupstash writes each path of a snapshot once, every directory before
// what it holds. A forged or damaged index may do neither: the same path
// twice, a regular file that also has entries below it, entries whose
// directory comes later or never. Every reader of an index resolves this
// by one rule, so that the mount, ls and cat show the same tree:
//
//   - Entries are taken in index order. The first entry for a path counts;
//     a later one is hidden.
//   - An entry whose directory has no entry yet implies it: the path is
//     taken by a directory (0755, root, the item's time). A directory entry
//     for an implied directory still counts, and gives it its attributes;
//     any other entry for it is hidden (it would turn a directory with
//     entries into a file).
//   - An entry below a path taken by anything but a directory is hidden.
//   - "." is the snapshot's root, and counts only as a directory.
//
// Hidden entries are damage: each reader reports them once per item, with
// their number and the first of them, and shows the rest.

// hiddenEntries counts what a reader of an index did not show.
type hiddenEntries struct {
	count int
	first string // the first hidden entry's path
}

// Hidden returns how many entries of the index the tree does not show by
// the rule above, and the path of the first of them.
func (t *Tree) Hidden() (count int, first string) { return t.hidden.count, t.hidden.first }

// reportHidden logs, once per item and repository, that the item's index
// has entries the readers hide.
func (r *Repository) reportHidden(id Xid, h hiddenEntries) {
	if h.count == 0 {
		return
	}
	if _, done := r.hiddenReported.LoadOrStore(id, true); done {
		return
	}
	r.log.Warn(fmt.Sprintf("item %s: damaged index: %d entries repeat a path or lie below a non-directory and are hidden; the first entry of each path is shown", id, h.count),
		"first", h.first)
}

// ReportHidden logs, once per item, the entries f hid (if any).
func (o *OpenItem) ReportHidden(f *EntryFilter) { o.repo.reportHidden(o.item.ID, f.hidden) }

// Path states in an EntryFilter.
const (
	takenImplied = 1 + iota // a directory implied by an entry below it
	takenDir                // a directory entry
	takenOther              // any other entry
)

// An EntryFilter applies the rule above to entries read in index order,
// for readers that stream the index rather than build a Tree. It tracks
// only the paths that bear on its scope (the scope, its ancestors and what
// lies below it), by a hash of each, so that looking up one path costs
// memory for its ancestors only.
type EntryFilter struct {
	scope  string // "" for the whole tree
	seed   maphash.Seed
	taken  map[uint64]uint8
	hidden hiddenEntries
}

// NewEntryFilter returns a filter for the entries at and below scope, a
// path in index form ("" or "." for the whole tree).
func NewEntryFilter(scope string) *EntryFilter {
	if scope == "." {
		scope = ""
	}
	f := &EntryFilter{scope: scope, seed: maphash.MakeSeed(), taken: make(map[uint64]uint8)}
	f.taken[f.hash(nil)] = takenImplied // the root exists, described or not
	return f
}

func (f *EntryFilter) hash(p []byte) uint64 { return maphash.Bytes(f.seed, p) }

// inScope reports whether a path (index form, "" for the root) is the
// scope, above it or below it.
func (f *EntryFilter) inScope(p []byte) bool {
	switch {
	case f.scope == "" || len(p) == 0:
		return true
	case len(p) == len(f.scope):
		return string(p) == f.scope
	case len(p) < len(f.scope):
		return f.scope[len(p)] == '/' && strings.HasPrefix(f.scope, string(p))
	default:
		return p[len(f.scope)] == '/' && bytes.HasPrefix(p, []byte(f.scope))
	}
}

// Keep reports whether e counts. Entries outside the filter's scope are
// neither tracked nor kept.
func (f *EntryFilter) Keep(e *IndexEntry) bool {
	p := e.Path
	if string(p) == "." {
		p = nil
	}
	if !f.inScope(p) {
		// It still implies the directories it shares with the scope. (Had
		// it been hidden, whatever hid it took or implied them first.)
		for i := 0; i < len(p) && i < len(f.scope); i++ {
			if p[i] != f.scope[i] {
				break
			}
			if p[i] == '/' {
				if h := f.hash(p[:i]); f.taken[h] == 0 {
					f.taken[h] = takenImplied
				}
			}
		}
		return false
	}
	if len(p) == 0 {
		return f.take(e.Path, nil, e.IsDir())
	}
	// Below a non-directory?
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && f.taken[f.hash(p[:i])] == takenOther {
			return f.hide(e.Path)
		}
	}
	if !f.take(e.Path, p, e.IsDir()) {
		return false
	}
	// It implies its directories.
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			if h := f.hash(p[:i]); f.taken[h] == 0 {
				f.taken[h] = takenImplied
			}
		}
	}
	return true
}

// take takes path p for an entry, if the rule lets it.
func (f *EntryFilter) take(orig, p []byte, isDir bool) bool {
	h := f.hash(p)
	switch f.taken[h] {
	case 0:
	case takenImplied:
		if !isDir {
			return f.hide(orig)
		}
	default:
		return f.hide(orig)
	}
	if len(p) == 0 && !isDir {
		return f.hide(orig) // the root is a directory
	}
	if isDir {
		f.taken[h] = takenDir
	} else {
		f.taken[h] = takenOther
	}
	return true
}

func (f *EntryFilter) hide(p []byte) bool {
	if f.hidden.count == 0 {
		f.hidden.first = string(p)
	}
	f.hidden.count++
	return false
}

// Hidden returns how many entries in scope the filter hid, and the path of
// the first of them.
func (f *EntryFilter) Hidden() (count int, first string) { return f.hidden.count, f.hidden.first }

// ErrNotDir reports a path with a non-directory where a directory should
// be (a path through a file, or a file's path ending in a slash).
var ErrNotDir = errors.New("not a directory")

// ErrNoEntry reports a path the snapshot does not have.
var ErrNoEntry = errors.New("no such file or directory")

// Lookup finds the entry for path (index form, "." for the root) by the
// rule the mount's tree follows, streaming the whole index. A path below a
// non-directory fails with ErrNotDir, a missing one with ErrNoEntry. A
// directory only implied by entries below it has no entry: it is returned
// as a synthetic IndexEntry with the attributes the tree gives it.
func (o *OpenItem) Lookup(ctx context.Context, path string) (*IndexEntry, error) {
	idx, err := o.Index()
	if err != nil {
		return nil, fmt.Errorf("item %s: %w", o.item.ID, err)
	}
	defer idx.Close()
	e, hidden, err := lookupEntries(ctx, idx.Next, o.item, path)
	o.repo.reportHidden(o.item.ID, hidden)
	return e, err
}

// lookupEntries is Lookup over entries from next.
func lookupEntries(ctx context.Context, next func(context.Context) (*IndexEntry, error), it *Item, path string) (*IndexEntry, hiddenEntries, error) {
	if path == "" {
		path = "."
	}
	f := NewEntryFilter(path)
	var found, notDirAbove *IndexEntry
	implied := path == "." // the root exists, described or not
	for {
		e, err := next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, f.hidden, err
		}
		if !f.Keep(e) {
			continue
		}
		p := string(e.Path)
		switch {
		case p == path:
			found = e
		case path != "." && !e.IsDir() && strings.HasPrefix(path, p+"/"):
			notDirAbove = e
		case path == "." || strings.HasPrefix(p, path+"/"):
			implied = true
		}
	}
	switch {
	case notDirAbove != nil:
		return nil, f.hidden, fmt.Errorf("%q: %w", notDirAbove.Path, ErrNotDir)
	case found != nil:
		return found, f.hidden, nil
	case implied:
		// As treeBuilder.syntheticDir makes it.
		ts := it.Timestamp
		return &IndexEntry{Path: []byte(path), Mode: ModeDir | 0o755, Nlink: 2,
			Mtime: ts.Unix(), MtimeNsec: uint32(ts.Nanosecond()), Ctime: ts.Unix(), CtimeNsec: uint32(ts.Nanosecond())}, f.hidden, nil
	}
	return nil, f.hidden, ErrNoEntry
}
