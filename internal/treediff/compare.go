package treediff

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// Ignore is a set of attributes left out of comparisons, as Bupstash's
// INDEX_COMPARE_MASK bits.
type Ignore uint64

// The attributes, named as --ignore names them.
const (
	IgnoreType Ignore = 1 << iota
	IgnorePerms
	IgnoreSize
	IgnoreDataHash
	IgnoreMtime
	IgnoreCtime
	IgnoreDev
	IgnoreUID
	IgnoreGID
	IgnoreInode
	IgnoreNlink
	ignoreLinkTarget // Bupstash has no option for it
	IgnoreDevnos
	IgnoreXattrs
	ignoreDataCursors // always: cursors say where data is, not what it is
)

// Relaxed is what --relaxed ignores: what differs between machines more
// than between contents.
const Relaxed = IgnoreDev | IgnoreInode | IgnoreNlink | IgnoreMtime | IgnoreCtime | IgnoreUID | IgnoreGID | IgnoreXattrs

// ParseIgnore reads a comma-separated --ignore list: dev, devnos, uid,
// gid, inode, nlink, type, perms, file-content (size and hash), times
// (mtime and ctime), xattrs. Bupstash's manual calls file-content
// "content"; both are accepted.
func ParseIgnore(list string) (Ignore, error) {
	var ig Ignore
	for _, f := range strings.Split(list, ",") {
		switch f {
		case "dev":
			ig |= IgnoreDev
		case "devnos":
			ig |= IgnoreDevnos
		case "uid":
			ig |= IgnoreUID
		case "gid":
			ig |= IgnoreGID
		case "inode":
			ig |= IgnoreInode
		case "nlink":
			ig |= IgnoreNlink
		case "type":
			ig |= IgnoreType
		case "perms":
			ig |= IgnorePerms
		case "file-content", "content":
			ig |= IgnoreSize | IgnoreDataHash
		case "times":
			ig |= IgnoreMtime | IgnoreCtime
		case "xattrs":
			ig |= IgnoreXattrs
		default:
			return 0, fmt.Errorf("'%s' is %w", f, ErrIgnore)
		}
	}
	return ig, nil
}

// equal is Bupstash's IndexEntry::masked_compare_eq for two entries of
// the same path: every attribute not ignored is equal. The sparse flag is
// never compared.
func equal(l, r *bupstash.IndexEntry, ig Ignore) bool {
	on := func(bit Ignore) bool { return ig&bit == 0 }
	return (!on(IgnoreType) || l.Mode&bupstash.ModeType == r.Mode&bupstash.ModeType) &&
		(!on(IgnorePerms) || l.Mode&^bupstash.ModeType == r.Mode&^bupstash.ModeType) &&
		(!on(IgnoreSize) || l.Size == r.Size) &&
		(!on(IgnoreDataHash) || hashEqual(l.DataHash, r.DataHash)) &&
		(!on(IgnoreUID) || l.UID == r.UID) &&
		(!on(IgnoreGID) || l.GID == r.GID) &&
		(!on(IgnoreMtime) || l.Mtime == r.Mtime && l.MtimeNsec == r.MtimeNsec) &&
		(!on(IgnoreCtime) || l.Ctime == r.Ctime && l.CtimeNsec == r.CtimeNsec) &&
		(!on(IgnoreDev) || l.NormDev == r.NormDev) &&
		(!on(IgnoreXattrs) || xattrsEqual(l.Xattrs, r.Xattrs)) &&
		(!on(IgnoreInode) || l.Ino == r.Ino) &&
		(!on(IgnoreNlink) || l.Nlink == r.Nlink) &&
		(!on(ignoreLinkTarget) || linkEqual(l.Link, r.Link)) &&
		(!on(IgnoreDevnos) || l.DevMajor == r.DevMajor && l.DevMinor == r.DevMinor)
}

func hashEqual(a, b *[32]byte) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// linkEqual tells an absent target from an empty one, as Option does.
func linkEqual(a, b []byte) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return bytes.Equal(a, b)
}

// xattrsEqual compares two attribute maps; no map differs from an empty
// one, as Bupstash's Option<BTreeMap> does.
func xattrsEqual(a, b []bupstash.Xattr) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if len(a) != len(b) {
		return false
	}
	as, bs := sortedXattrs(a), sortedXattrs(b)
	for i := range as {
		if as[i].Name != bs[i].Name || !bytes.Equal(as[i].Value, bs[i].Value) {
			return false
		}
	}
	return true
}

// sortedXattrs returns the attributes in name order, the last of any
// duplicate names winning, as a BTreeMap holds them.
func sortedXattrs(xs []bupstash.Xattr) []bupstash.Xattr {
	if slices.IsSortedFunc(xs, func(a, b bupstash.Xattr) int { return strings.Compare(a.Name, b.Name) }) && !hasDupNames(xs) {
		return xs
	}
	s := slices.Clone(xs)
	slices.SortStableFunc(s, func(a, b bupstash.Xattr) int { return strings.Compare(a.Name, b.Name) })
	out := s[:0]
	for _, x := range s {
		if len(out) > 0 && out[len(out)-1].Name == x.Name {
			out[len(out)-1] = x
			continue
		}
		out = append(out, x)
	}
	return out
}

func hasDupNames(sorted []bupstash.Xattr) bool {
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Name == sorted[i-1].Name {
			return true
		}
	}
	return false
}

// oldIndex reports an entry Bupstash's diff refuses: one without a
// relative data cursor (entry formats 1 and 2), which Bupstash reads with
// a chunk delta of u64::MAX.
func oldIndex(e *bupstash.IndexEntry) bool {
	return !e.HasCursor || e.ChunkDelta == math.MaxUint64
}

// pathCmp is Bupstash's index::path_cmp: "." first, a directory's entries
// before its subdirectories' ("uncles and aunts before nieces and
// nephews"), components compared as bytes.
func pathCmp(l, r []byte) int {
	switch {
	case bytes.Equal(l, r):
		return 0
	case string(l) == ".":
		return -1
	case string(r) == ".":
		return 1
	}
	li, ri := components(l), components(r)
	for {
		lc, lok := li.next()
		rc, rok := ri.next()
		switch {
		case lok && rok:
			c := bytes.Compare(lc, rc)
			if c == 0 {
				continue
			}
			_, lmore := li.next()
			_, rmore := ri.next()
			if c > 0 {
				if !lmore && rmore {
					return -1
				}
				return 1
			}
			if lmore && !rmore {
				return 1
			}
			return -1
		case lok:
			return 1
		case rok:
			return -1
		default:
			return 0 // equal but for redundant separators
		}
	}
}

// componentIter yields a path's components as Rust's Path::iter does for
// the relative, normalised paths of an index: split at '/', empty parts
// skipped, and "." dropped except at the start.
type componentIter struct {
	p     []byte
	first bool
}

func components(p []byte) *componentIter { return &componentIter{p: p, first: true} }

func (it *componentIter) next() ([]byte, bool) {
	for len(it.p) > 0 {
		i := bytes.IndexByte(it.p, '/')
		var c []byte
		if i < 0 {
			c, it.p = it.p, nil
		} else {
			c, it.p = it.p[:i], it.p[i+1:]
		}
		first := it.first
		it.first = false
		if len(c) == 0 || string(c) == "." && !first {
			continue
		}
		return c, true
	}
	return nil, false
}
