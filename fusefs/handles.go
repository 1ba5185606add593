package fusefs

import "sync"

// handleTable hands out FUSE file handles for open files and directories.
type handleTable struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]any
}

func (t *handleTable) add(h any) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[uint64]any{}
	}
	t.next++
	t.m[t.next] = h
	return t.next
}

func (t *handleTable) get(fh uint64) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[fh]
}

func (t *handleTable) remove(fh uint64) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.m[fh]
	delete(t.m, fh)
	return h
}

// each calls fn for every open handle (under the table's lock: fn must not
// use the table).
func (t *handleTable) each(fn func(h any)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range t.m {
		fn(h)
	}
}
