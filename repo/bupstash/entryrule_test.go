package bupstash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// forgedEntries draws an index no writer would produce: paths from a small
// set, so that they repeat, in any order, each a directory or a file. An
// entry's Mtime numbers it, to tell which of a path's entries a reader
// shows.
func forgedEntries(rng *rand.Rand) []*IndexEntry {
	paths := []string{".", "a", "b", "a/x", "a/y", "b/z", "a/x/q", "c/d"}
	var es []*IndexEntry
	for i := range 1 + rng.IntN(10) {
		e := &IndexEntry{Path: []byte(paths[rng.IntN(len(paths))]), Mtime: int64(1000 + i), Nlink: 1}
		if rng.IntN(2) == 0 {
			e.Mode = ModeDir | 0o700
		} else {
			e.Mode = ModeRegular | 0o600
		}
		es = append(es, e)
	}
	return es
}

// entryIterator yields es like IndexReader.Next.
func entryIterator(es []*IndexEntry) func(context.Context) (*IndexEntry, error) {
	i := 0
	return func(context.Context) (*IndexEntry, error) {
		if i == len(es) {
			return nil, io.EOF
		}
		i++
		return es[i-1], nil
	}
}

func describe(es []*IndexEntry) string {
	var b strings.Builder
	for _, e := range es {
		kind := "file"
		if e.IsDir() {
			kind = "dir"
		}
		fmt.Fprintf(&b, "%s(%s,%d) ", e.Path, kind, e.Mtime)
	}
	return b.String()
}

// The mount's tree and the command line's lookup (a streaming filter) read
// forged indexes by the same rule: for every path, both show the same
// entry (or the same implied directory), or both show nothing; and they
// count the same hidden entries.
func TestTreeAndLookupAgreeOnForgedIndexes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	it := &Item{ID: Xid{9}, Timestamp: time.Unix(500, 0)}
	all := []string{".", "a", "b", "c", "a/x", "a/y", "b/z", "a/x/q", "c/d", "a/x/q/r", "b/z/w"}
	for range 2000 {
		es := forgedEntries(rng)
		b := newTreeBuilder(it)
		for _, e := range es {
			if err := b.add(e); err != nil {
				t.Fatal(err)
			}
		}
		tr := b.finish()
		f := NewEntryFilter("")
		for _, e := range es {
			f.Keep(e)
		}
		if n, _ := tr.Hidden(); n != f.hidden.count {
			t.Fatalf("%s\ntree hides %d entries, the filter %d", describe(es), n, f.hidden.count)
		}
		for _, p := range all {
			n, inTree := resolve(tr, []byte(p))
			e, hidden, err := lookupEntries(context.Background(), entryIterator(es), it, p)
			inLookup := err == nil
			if inTree != inLookup {
				t.Fatalf("%s\n%q: in the tree %v, lookup %v (%v)", describe(es), p, inTree, inLookup, err)
			}
			if err != nil && !errors.Is(err, ErrNoEntry) && !errors.Is(err, ErrNotDir) {
				t.Fatal(err)
			}
			if !inTree {
				continue
			}
			if a := tr.Attr(n); a.Mode != e.Mode || a.Mtime != e.Mtime {
				t.Fatalf("%s\n%q: the tree shows %o from %d, lookup %o from %d", describe(es), p, a.Mode, a.Mtime, e.Mode, e.Mtime)
			}
			if hidden.count > f.hidden.count {
				t.Fatalf("%s\n%q: a lookup hid %d entries, the whole index has %d", describe(es), p, hidden.count, f.hidden.count)
			}
		}
	}
}

// The cases by name, as the rule states them.
func TestEntryRule(t *testing.T) {
	dir := func(p string, id int64) *IndexEntry {
		return &IndexEntry{Path: []byte(p), Mode: ModeDir | 0o700, Mtime: id, Nlink: 2}
	}
	file := func(p string, id int64) *IndexEntry {
		return &IndexEntry{Path: []byte(p), Mode: ModeRegular | 0o600, Mtime: id, Nlink: 1}
	}
	it := &Item{ID: Xid{9}, Timestamp: time.Unix(500, 0)}
	for _, tc := range []struct {
		name    string
		entries []*IndexEntry
		path    string
		want    int64 // Mtime of the entry shown; 500 an implied directory; 0 none
		err     error
		hidden  int
	}{
		{"duplicate files: the first counts", []*IndexEntry{file("f", 1), file("f", 2)}, "f", 1, nil, 1},
		{"duplicate directories: the first counts", []*IndexEntry{dir("d", 1), dir("d", 2)}, "d", 1, nil, 1},
		{"a file with children stays a file", []*IndexEntry{file("f", 1), file("f/x", 2)}, "f", 1, nil, 1},
		{"nothing below a file", []*IndexEntry{file("f", 1), file("f/x", 2)}, "f/x", 0, ErrNotDir, 1},
		{"a directory after a file of its name is hidden", []*IndexEntry{file("f", 1), dir("f", 2), file("f/x", 3)}, "f", 1, nil, 2},
		{"an implied directory stays one", []*IndexEntry{file("d/x", 1), file("d", 2)}, "d", 500, nil, 1},
		{"an implied directory takes its entry's attributes", []*IndexEntry{file("d/x", 1), dir("d", 2)}, "d", 2, nil, 0},
		{"the root is a directory", []*IndexEntry{file(".", 1), dir(".", 2)}, ".", 2, nil, 1},
		{"the first root counts", []*IndexEntry{dir(".", 1), dir(".", 2)}, ".", 1, nil, 1},
		{"missing", []*IndexEntry{file("f", 1)}, "g", 0, ErrNoEntry, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, hidden, err := lookupEntries(context.Background(), entryIterator(tc.entries), it, tc.path)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			} else if err != nil || e.Mtime != tc.want {
				t.Fatalf("entry %+v, %v; want the one from %d", e, err, tc.want)
			}
			if hidden.count != tc.hidden {
				t.Errorf("hid %d entries, want %d", hidden.count, tc.hidden)
			}
		})
	}
}
