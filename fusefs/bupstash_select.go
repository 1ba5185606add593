package fusefs

import (
	"slices"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// ItemSelector chooses the Bupstash items a mount shows (backupfs mount
// --query). It is asked again whenever the item list is re-read and, as
// time passes, once per refresh interval, with the time of asking, so
// that a selection by age (older than a day) stays true as items age.
// It must be fast and safe for concurrent use.
type ItemSelector func(it *bupstash.Item, now time.Time) bool

// reselect asks Options.Select again about the last item list read, and
// swaps in the new selection if it differs.
func (s *bupstashSource) reselect() {
	if s.fs.opts.Select == nil {
		return
	}
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if s.all == nil {
		return
	}
	now := time.Now()
	var ids []bupstash.Xid
	for _, it := range s.all {
		if s.fs.opts.Select(it, now) {
			ids = append(ids, it.ID)
		}
	}
	s.mu.Lock()
	same := slices.EqualFunc(ids, s.items, func(id bupstash.Xid, n *itemNode) bool { return n.item.ID == id })
	s.mu.Unlock()
	if !same {
		s.show(s.all)
	}
}
