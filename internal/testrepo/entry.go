package testrepo

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
)

// File type bits of Entry.Mode (st_mode).
const (
	TypeMask     = 0o170000
	TypeRegular  = 0o100000
	TypeDir      = 0o040000
	TypeSymlink  = 0o120000
	TypeCharDev  = 0o020000
	TypeBlockDev = 0o060000
	TypeFIFO     = 0o010000
)

// DefaultTime is the mtime of entries that leave it zero.
var DefaultTime = time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)

// Entry describes one file of a snapshot, as Bupstash's indexer records
// it from lstat, readlink and listxattr.
type Entry struct {
	// Path relative to the snapshot root, '/'-separated: "." is the root,
	// otherwise no leading or trailing '/', no "." or ".." components.
	// Any bytes but '/' and NUL may form a name (non-UTF-8 included).
	Path string
	// Mode is st_mode: type bits and permissions. Zero type bits mean a
	// regular file.
	Mode     uint32
	UID, GID uint64
	// Mtime and Ctime keep nanoseconds and may precede 1970. A zero Mtime
	// means DefaultTime; a zero Ctime means Mtime.
	Mtime, Ctime time.Time
	// Ino and Nlink as stat reports them. Zero Ino is replaced by a unique
	// number; entries sharing an Ino with Nlink > 1 are hard links (give
	// them the same content: Bupstash stores each name's full copy).
	// Zero Nlink means 1 (for a Tree, directories get 2 + subdirectories).
	Ino, Nlink uint64
	// Dev is the normalised device number (0 for the first device seen).
	Dev uint64
	// Link is a symlink's target (raw bytes).
	Link string
	// DevMajor and DevMinor of a character or block device.
	DevMajor, DevMinor uint64
	// Xattrs of a regular file or directory (Bupstash records no others).
	Xattrs map[string][]byte
	// Sparse records that the source file had holes. It is set
	// automatically for Sparse content.
	Sparse bool
	// Content of a regular file; nil means empty.
	Content Content
}

// File returns a regular file entry with mode 0644.
func File(path string, c Content) Entry {
	return Entry{Path: path, Mode: TypeRegular | 0o644, Content: c}
}

// Dir returns a directory entry with mode 0755.
func Dir(path string) Entry { return Entry{Path: path, Mode: TypeDir | 0o755} }

// Symlink returns a symbolic link to target.
func Symlink(path, target string) Entry {
	return Entry{Path: path, Mode: TypeSymlink | 0o777, Link: target}
}

// FIFO returns a named pipe.
func FIFO(path string) Entry { return Entry{Path: path, Mode: TypeFIFO | 0o644} }

// CharDev returns a character device.
func CharDev(path string, major, minor uint64) Entry {
	return Entry{Path: path, Mode: TypeCharDev | 0o666, DevMajor: major, DevMinor: minor}
}

// BlockDev returns a block device.
func BlockDev(path string, major, minor uint64) Entry {
	return Entry{Path: path, Mode: TypeBlockDev | 0o660, DevMajor: major, DevMinor: minor}
}

// Type returns the entry's file type bits.
func (e *Entry) Type() uint32 {
	if t := e.Mode & TypeMask; t != 0 {
		return t
	}
	return TypeRegular
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Type() == TypeDir }

// IsRegular reports whether the entry is a regular file.
func (e *Entry) IsRegular() bool { return e.Type() == TypeRegular }

// Size returns the content's declared size (0 unless regular).
func (e *Entry) Size() int64 {
	if !e.IsRegular() || e.Content == nil {
		return 0
	}
	return e.Content.Size()
}

// Open returns a reader over the entry's content.
func (e *Entry) Open() io.Reader {
	if !e.IsRegular() || e.Content == nil {
		return strings.NewReader("")
	}
	return e.Content.Open()
}

// MtimeOrDefault and CtimeOrDefault return the times written to the index.
func (e *Entry) MtimeOrDefault() time.Time {
	if e.Mtime.IsZero() {
		return DefaultTime
	}
	return e.Mtime
}

// CtimeOrDefault returns the ctime written to the index.
func (e *Entry) CtimeOrDefault() time.Time {
	if e.Ctime.IsZero() {
		return e.MtimeOrDefault()
	}
	return e.Ctime
}

// IsSparse reports whether the index marks the entry sparse.
func (e *Entry) IsSparse() bool {
	if e.Sparse {
		return true
	}
	s, ok := e.Content.(interface{ Sparse() bool })
	return ok && e.IsRegular() && s.Sparse()
}

// check validates an entry's own fields (not its place in the walk).
func (e *Entry) check() error {
	if err := checkPath(e.Path); err != nil {
		return err
	}
	t := e.Type()
	switch t {
	case TypeRegular, TypeDir, TypeSymlink, TypeCharDev, TypeBlockDev, TypeFIFO:
	default:
		return fmt.Errorf("%q: file type %#o cannot be stored (Bupstash skips sockets)", e.Path, t)
	}
	if e.Mode>>16 != 0 {
		return fmt.Errorf("%q: mode %#o has bits beyond st_mode", e.Path, e.Mode)
	}
	if e.Path == "." && t != TypeDir {
		return fmt.Errorf(`"." must be a directory`)
	}
	if e.Content != nil && t != TypeRegular {
		return fmt.Errorf("%q: only regular files have content", e.Path)
	}
	if (t == TypeSymlink) != (e.Link != "") {
		return fmt.Errorf("%q: a symlink, and only a symlink, needs a target", e.Path)
	}
	if strings.IndexByte(e.Link, 0) >= 0 {
		return fmt.Errorf("%q: NUL in symlink target", e.Path)
	}
	if t != TypeCharDev && t != TypeBlockDev && (e.DevMajor != 0 || e.DevMinor != 0) {
		return fmt.Errorf("%q: only devices have device numbers", e.Path)
	}
	if len(e.Xattrs) > 0 && t != TypeRegular && t != TypeDir {
		return fmt.Errorf("%q: Bupstash records xattrs of files and directories only", e.Path)
	}
	return nil
}

// checkPath accepts "." and relative paths of non-empty components other
// than "." and "..", without NUL.
func checkPath(p string) error {
	if p == "." {
		return nil
	}
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("bad path %q", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("bad path %q", p)
		}
	}
	return nil
}

// splitPath returns the parent ("" for the root's children) and the name.
func splitPath(p string) (parent, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// cursor is a relative data cursor (docs/bupstash-format.md §10.5).
type cursor struct {
	delta, start, end uint64
}

// encodeEntry appends e as a V5 index entry (docs/bupstash-format.md §10.3).
// ino and nlink are the resolved values; size and hash describe the content
// actually read.
func encodeEntry(enc *bare.Encoder, e *Entry, ino, nlink, size uint64, hash *[32]byte, c cursor) {
	mtime, ctime := e.MtimeOrDefault(), e.CtimeOrDefault()
	enc.Uint(indexEntryV5)
	enc.Uint(uint64(len(e.Path)))
	enc.Buf = append(enc.Buf, e.Path...)
	enc.Uint(size)
	enc.Uint(uint64(mtime.Unix())) // a negative i64 wraps, as Bupstash stores it
	enc.Uint(uint64(mtime.Nanosecond()))
	enc.Uint(uint64(ctime.Unix()))
	enc.Uint(uint64(ctime.Nanosecond()))
	enc.Uint(ino)
	enc.Uint(e.Dev)
	enc.Uint(uint64(e.Type() | e.Mode&^TypeMask))
	enc.Uint(e.UID)
	enc.Uint(e.GID)
	enc.Uint(nlink)
	enc.Option(e.Type() == TypeSymlink)
	if e.Type() == TypeSymlink {
		enc.Uint(uint64(len(e.Link)))
		enc.Buf = append(enc.Buf, e.Link...)
	}
	enc.Uint(e.DevMajor)
	enc.Uint(e.DevMinor)
	enc.Bool(e.IsSparse())
	// Bupstash keeps xattrs in a BTreeMap<Vec<u8>, Vec<u8>>: sorted by
	// name bytes, and None rather than an empty map.
	enc.Option(len(e.Xattrs) > 0)
	if len(e.Xattrs) > 0 {
		names := make([]string, 0, len(e.Xattrs))
		for n := range e.Xattrs {
			names = append(names, n)
		}
		sort.Strings(names)
		enc.Uint(uint64(len(names)))
		for _, n := range names {
			enc.Uint(uint64(len(n)))
			enc.Buf = append(enc.Buf, n...)
			enc.Data(e.Xattrs[n])
		}
	}
	enc.Uint(c.delta)
	enc.Uint(c.start)
	enc.Uint(c.end)
	if hash != nil {
		enc.Uint(contentHashB3)
		enc.Fixed(hash[:])
	} else {
		enc.Uint(contentHashNil)
	}
}
