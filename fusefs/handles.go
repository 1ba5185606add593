package fusefs

import "sync"

// handleTable hands out FUSE file handles for open directories.
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
