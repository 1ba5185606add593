package fusefs

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// bupstashSource is a repository's directory in the mount:
//
//	ids/<item-id>/               a snapshot's tree, or a raw item's one file
//	latest                       -> ids/<newest item>
//	by-time/<time>               -> ../ids/<item>
//	by-tag/<key>/<value>/<id>    -> ../../../ids/<id>
//
// Requests are answered from the last good list of items, which a
// goroutine refreshes in the background: re-reading the list may wait for
// another process's transaction lock or a slow server, and no request
// waits for that.
type bupstashSource struct {
	fs   *FS
	name string
	repo *bupstash.Repository

	mu    sync.Mutex  // guards items and byID; held only to read or swap them
	items []*itemNode // oldest first
	byID  map[string]*itemNode

	refreshMu sync.Mutex // serialises refreshes; guards all and known
	// all is the last item list read, which Options.Select picks from
	// again as time passes; known are the nodes shown since they were
	// last in the repository, so that one hidden by the selection is
	// still marked removed when it leaves the repository.
	all   []*bupstash.Item
	known map[string]*itemNode
}

// AddBupstash adds a repository as a top-level directory called name.
func (f *FS) AddBupstash(name string, repo *bupstash.Repository) error {
	s := &bupstashSource{fs: f, name: name, repo: repo}
	dir := &staticDir{owner: f.owner, mtime: f.started, entries: s.listTop}
	if err := f.addSource(name, dir); err != nil {
		return err
	}
	// Read the item list now: a wrong key or a damaged repository should
	// show up at mount time, not on the first ls.
	if err := s.refresh(context.Background()); err != nil {
		return err
	}
	f.addWatcher(s.watch)
	return nil
}

// forcedRelist is how often the watcher re-reads the item list even when
// the source says nothing changed (a directory's time may not change on
// every filesystem).
const forcedRelist = 30 * time.Second

// watch re-reads the item list whenever the source says it changed (put,
// rm, recover-removed and gc all change it), checking once per refresh
// interval, so that removals are noticed even by readers of files that
// are already open, and whose reads the kernel answers from its cache.
func (s *bupstashSource) watch(ctx context.Context) {
	forced := time.Now()
	t := time.NewTicker(s.fs.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := s.repo.Changed(ctx)
		if err == nil && !changed && time.Since(forced) < forcedRelist {
			s.reselect() // ages change as time passes
			continue
		}
		forced = time.Now()
		_ = s.refresh(ctx) // reports its own errors
	}
}

// list returns the current items. It never reads the repository.
func (s *bupstashSource) list(context.Context) ([]*itemNode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.items, nil
}

// refresh re-reads the repository's item list and swaps it in. A failure
// keeps the last good list in place (and is reported once); only the
// first list's failure is returned, so that a mount that cannot list
// fails at once.
func (s *bupstashSource) refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	s.mu.Lock()
	first := s.byID == nil
	s.mu.Unlock()
	items, err := s.repo.Items(ctx)
	if err != nil {
		var ie *bupstash.ItemError
		if !errors.As(err, &ie) {
			if !first {
				// Keep showing what was there; say why it is stale.
				s.fs.errs.report("list "+s.name, "cannot re-read the item list", err, "source", s.name)
				return nil
			}
			return err
		}
		// Damaged items are left out; the rest stay browsable.
		s.fs.errs.report("items "+s.name, "some items cannot be read", err, "source", s.name)
	}
	s.all = items
	s.show(items)
	return nil
}

// show swaps in the items to list: all of them, or those Options.Select
// picks now. An item that leaves the repository is marked removed (its
// files fail with ESTALE); one that only leaves the selection leaves the
// listings, and its open files keep reading. The caller holds refreshMu.
func (s *bupstashSource) show(items []*bupstash.Item) {
	now := time.Now()
	present := make(map[string]bool, len(items))
	byID := make(map[string]*itemNode, len(items))
	nodes := make([]*itemNode, 0, len(items))
	for _, it := range items {
		id := it.ID.String()
		present[id] = true
		if s.fs.opts.Select != nil && !s.fs.opts.Select(it, now) {
			continue
		}
		n := s.fs.items.intern(s.name+"/"+id, func(slot uint32) *itemNode {
			return &itemNode{fs: s.fs, slot: slot, src: s, item: it, open: s.repo.OpenItem(it)}
		})
		// An item recovered (bupstash recover-removed) is back.
		n.removed.Store(false)
		byID[id] = n
		nodes = append(nodes, n)
	}
	s.mu.Lock()
	s.items, s.byID = nodes, byID
	s.mu.Unlock()
	if s.known == nil {
		s.known = map[string]*itemNode{}
	}
	for id, n := range s.known {
		if !present[id] {
			n.markRemoved()
			delete(s.known, id)
		}
	}
	for id, n := range byID {
		s.known[id] = n
	}
}

func (s *bupstashSource) key(parts ...string) string {
	return s.name + "\x00" + strings.Join(parts, "\x00")
}

func (s *bupstashSource) dir(key string, entries func(context.Context) ([]dirent, error)) uint64 {
	return s.fs.nodes.intern(key, func() synthNode {
		return &staticDir{owner: s.fs.owner, mtime: s.fs.started, entries: entries}
	})
}

// link interns a symlink; its key includes the target, so a view whose
// target changes (latest) gets a new node rather than a stale one.
func (s *bupstashSource) link(key, target string, mtime time.Time) uint64 {
	return s.fs.nodes.intern(key+"\x00"+target, func() synthNode {
		return &symlink{owner: s.fs.owner, mtime: mtime, to: target}
	})
}

func (s *bupstashSource) listTop(ctx context.Context) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	ents := []dirent{
		{name: "by-tag", id: s.dir(s.key("by-tag"), s.listTagKeys), mode: fuse.S_IFDIR},
		{name: "by-time", id: s.dir(s.key("by-time"), s.listByTime), mode: fuse.S_IFDIR},
		{name: "ids", id: s.dir(s.key("ids"), s.listIDs), mode: fuse.S_IFDIR},
	}
	if len(items) > 0 {
		newest := items[len(items)-1]
		ents = append(ents, dirent{name: "latest", mode: syscall.S_IFLNK,
			id: s.link(s.key("latest"), "ids/"+newest.item.ID.String(), newest.item.Timestamp)})
	}
	return ents, nil
}

func (s *bupstashSource) listIDs(ctx context.Context) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	ents := make([]dirent, len(items))
	for i, n := range items {
		ents[i] = dirent{name: n.item.ID.String(), id: n.id(0), mode: fuse.S_IFDIR}
	}
	sortDirents(ents)
	return ents, nil
}

// timeNames names items by their time to the second, in UTC. Items made
// in the same second get their id's first 8 characters appended, except
// the oldest, so names are stable as newer items arrive.
func timeNames(items []*itemNode) []string {
	names := make([]string, len(items))
	seen := map[string]bool{}
	for i, n := range items {
		name := n.item.Timestamp.UTC().Format("2006-01-02T15:04:05Z")
		if seen[name] {
			name += "_" + n.item.ID.String()[:8]
		}
		seen[name] = true
		names[i] = name
	}
	return names
}

func (s *bupstashSource) listByTime(ctx context.Context) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	names := timeNames(items)
	ents := make([]dirent, len(items))
	for i, n := range items {
		id := n.item.ID.String()
		ents[i] = dirent{name: names[i], mode: syscall.S_IFLNK,
			id: s.link(s.key("by-time", id), "../ids/"+id, n.item.Timestamp)}
	}
	sortDirents(ents)
	return ents, nil
}

func (s *bupstashSource) listTagKeys(ctx context.Context) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for _, n := range items {
		for k := range n.item.Tags {
			keys[k] = true
		}
	}
	var ents []dirent
	for k := range keys {
		ents = append(ents, dirent{name: escapeName(k), mode: fuse.S_IFDIR,
			id: s.dir(s.key("by-tag", k), func(ctx context.Context) ([]dirent, error) { return s.listTagValues(ctx, k) })})
	}
	sortDirents(ents)
	return ents, nil
}

func (s *bupstashSource) listTagValues(ctx context.Context, key string) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	values := map[string]bool{}
	for _, n := range items {
		if v, ok := n.item.Tags[key]; ok {
			values[v] = true
		}
	}
	var ents []dirent
	for v := range values {
		ents = append(ents, dirent{name: escapeName(v), mode: fuse.S_IFDIR,
			id: s.dir(s.key("by-tag", key, v), func(ctx context.Context) ([]dirent, error) { return s.listTagged(ctx, key, v) })})
	}
	sortDirents(ents)
	return ents, nil
}

func (s *bupstashSource) listTagged(ctx context.Context, key, value string) ([]dirent, error) {
	items, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	var ents []dirent
	for _, n := range items {
		if v, ok := n.item.Tags[key]; ok && v == value {
			id := n.item.ID.String()
			ents = append(ents, dirent{name: id, mode: syscall.S_IFLNK,
				id: s.link(s.key("by-tag", key, value, id), "../../../ids/"+id, n.item.Timestamp)})
		}
	}
	sortDirents(ents)
	return ents, nil
}

func sortDirents(ents []dirent) {
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
}

// escapeName turns a tag key or value into a file name: '%', '/' and NUL
// are percent-encoded, and the names "", "." and ".." (which cannot be
// file names) become "%", "%2E" and "%2E%2E".
func escapeName(s string) string {
	switch s {
	case "":
		return "%"
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	r := strings.NewReplacer("%", "%25", "/", "%2F", "\x00", "%00")
	return r.Replace(s)
}
