package serve

import (
	"context"
	"fmt"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// ItemLog is the item list of a repository, replayed from its operation
// log, the only listing the protocol has. It keeps what an incremental
// refresh needs: the log's gc generation, the start of its last
// operation (the server skips the operation at the offset it is given),
// and the metadata of every item added since the last gc, removed ones
// too, since a later RecoverRemoved brings them back.
//
// An ItemLog is not safe for concurrent use.
type ItemLog struct {
	gen    bupstash.Xid
	synced bool
	end    uint64 // bytes of log applied
	lastOp uint64 // where the last operation applied starts
	nOps   uint64

	byID  map[bupstash.Xid]*logItem
	order []*logItem // in log order
}

type logItem struct {
	id   bupstash.Xid
	meta []byte
	live bool
	pos  uint64 // where its AddItem starts in the log
}

// LogItem is a live item: its id and its metadata as stored.
type LogItem struct {
	ID   bupstash.Xid
	Meta []byte
}

// Generation returns the gc generation of the log last synced.
func (l *ItemLog) Generation() bupstash.Xid { return l.gen }

// Synced reports whether the log has been synced at least once.
func (l *ItemLog) Synced() bool { return l.synced }

// Token names the state of the log: it changes whenever the log does.
func (l *ItemLog) Token() string { return fmt.Sprintf("%x:%d", l.gen, l.end) }

// Len returns the number of operations applied.
func (l *ItemLog) Len() uint64 { return l.nOps }

// Live returns the live items, in log order.
func (l *ItemLog) Live() []LogItem {
	var out []LogItem
	for _, it := range l.order {
		if it.live {
			out = append(out, LogItem{ID: it.id, Meta: it.meta})
		}
	}
	return out
}

// Sync brings the log up to date over c: incrementally when it was
// synced before and the server's gc generation is unchanged, else from
// the start (a gc rewrites the log and cycles the generation in one
// transaction, so an unchanged generation means the log was only
// appended to). It reports whether anything changed. On error the log
// is as it was.
func (l *ItemLog) Sync(ctx context.Context, c *Conn) (changed bool, err error) {
	var after *uint64
	var gen *bupstash.Xid
	if l.synced {
		g := l.gen
		gen = &g
		if l.nOps > 0 {
			a := l.lastOp
			after = &a
		}
	}
	g, ops, err := c.SyncOpLog(ctx, after, gen)
	if err != nil {
		return false, err
	}
	if after != nil && g == *gen {
		for _, op := range ops {
			l.apply(op)
		}
		return len(ops) > 0, nil
	}
	return l.replace(g, ops)
}

// replace makes the log the one ops describe from its start.
func (l *ItemLog) replace(gen bupstash.Xid, ops []rawOp) (bool, error) {
	fresh := &ItemLog{gen: gen, synced: true}
	for _, op := range ops {
		fresh.apply(op)
	}
	changed := !l.synced || l.gen != gen || !sameLive(l, fresh)
	*l = *fresh
	return changed, nil
}

func sameLive(a, b *ItemLog) bool {
	la, lb := a.Live(), b.Live()
	if len(la) != len(lb) {
		return false
	}
	for i := range la {
		if la[i].ID != lb[i].ID || string(la[i].Meta) != string(lb[i].Meta) {
			return false
		}
	}
	return true
}

// apply replays one operation (oplog.rs, querycache.rs sync_op).
func (l *ItemLog) apply(op rawOp) {
	if l.byID == nil {
		l.byID = make(map[bupstash.Xid]*logItem)
	}
	start := l.end
	switch op.Kind {
	case OpAddItem:
		if it := l.byID[op.ID]; it != nil {
			// Bupstash never adds an id twice; if a log does, the later
			// metadata wins and the item moves to its new place.
			for i, o := range l.order {
				if o == it {
					l.order = append(l.order[:i], l.order[i+1:]...)
					break
				}
			}
		}
		it := &logItem{id: op.ID, meta: op.Meta, live: true, pos: start}
		l.byID[op.ID] = it
		l.order = append(l.order, it)
	case OpRemoveItems:
		for _, id := range op.IDs {
			if it := l.byID[id]; it != nil {
				it.live = false
			}
		}
	case OpRecoverRemoved:
		for _, it := range l.order {
			it.live = true
		}
	}
	l.lastOp = start
	l.end = start + op.size
	l.nOps++
}
