package fusefs

import (
	"context"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// StatsFiles exposes statsFiles to the tests.
func (f *FS) StatsFiles() bool { return f.statsFiles() }

// Requests returns how many OPEN and READ requests the filesystem has
// served.
func (f *FS) Requests() (opens, reads int64) { return f.opens.Load(), f.reads.Load() }

// GetXattrRequests returns how many GETXATTR requests it has served.
func (f *FS) GetXattrRequests() int64 { return f.getxattrs.Load() }

// PushesDone reports whether no push into the kernel's page cache is
// queued or running.
func (f *FS) PushesDone() bool { return f.pushPending.Load() == 0 }

// panickingNode is a synthetic node whose attributes panic, to test that a
// handler's panic becomes EIO and the mount lives on.
type panickingNode struct{}

func (panickingNode) attr(context.Context, *fuse.Attr) error { panic("injected for a test") }

// AddPanickingSource adds a top-level entry whose stat panics.
func (f *FS) AddPanickingSource(name string) error { return f.addSource(name, panickingNode{}) }
