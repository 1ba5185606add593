// Package dump writes items in export formats. Tar writes a snapshot as
// the tar stream `bupstash get` produces, byte for byte, so that the
// command line's cat of a whole snapshot and Bupstash agree.
package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/backupfs/backupfs/crypto/blake3"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Tar writes a snapshot item as the tar stream `bupstash get` produces
// for it, byte for byte: ustar headers as the Rust tar crate (0.4) encodes
// them, pax records for long names and xattrs, later names of hard-linked
// files as tar hard links, and two zero blocks at the end. Every file's
// content is checked against its content hash on the way.
func Tar(ctx context.Context, o *bupstash.OpenItem, w io.Writer) error {
	idx, err := o.Index()
	if err != nil {
		return fmt.Errorf("item %s: %w", o.Item().ID, err)
	}
	defer idx.Close()
	data, err := o.Data()
	if err != nil {
		return err // names the item
	}
	// One sequential reader over the whole stream, as Bupstash reads it:
	// readahead then spans file boundaries.
	stream := data.NewReader()
	buf := make([]byte, 1<<20)
	hardlinks := make(map[[2]uint64][]byte)
	var hdr bytes.Buffer
	for {
		e, err := idx.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		typ, ok := tarType(e)
		if !ok {
			continue // Bupstash discards entries of unknown type, data included
		}
		var link []byte
		if !e.IsDir() && e.Nlink > 1 {
			key := [2]uint64{e.NormDev, e.Ino}
			if first, seen := hardlinks[key]; seen {
				link = first
			} else {
				hardlinks[key] = e.Path
			}
		}
		hdr.Reset()
		if err := tarHeader(&hdr, e, typ, link); err != nil {
			return fmt.Errorf("item %s: %q: %w", o.Item().ID, e.Path, err)
		}
		if _, err := w.Write(hdr.Bytes()); err != nil {
			return err
		}
		if link != nil {
			continue // a hard link carries no data: the first name has it
		}
		if err := copyContent(ctx, w, stream, e, buf); err != nil {
			return bupstash.InFile(err, o.Item().ID, string(e.Path))
		}
	}
	_, err = w.Write(make([]byte, 1024))
	return err
}

// copyContent copies an entry's bytes from the data stream, padded to a
// whole block, checking them against the entry's content hash.
func copyContent(ctx context.Context, w io.Writer, stream *bupstash.FileReader, e *bupstash.IndexEntry, buf []byte) error {
	var h *blake3.Hasher
	if e.DataHash != nil {
		h = blake3.New()
	}
	for off, end := int64(e.StreamOffset), int64(e.StreamOffset+e.Size); off < end; {
		n, err := stream.ReadAtContext(ctx, buf[:min(int64(len(buf)), end-off)], off)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if h != nil {
				h.Write(buf[:n])
			}
			off += int64(n)
		}
		if err == io.EOF && off < end {
			return fmt.Errorf("%w: data stream ends early", bupstash.ErrCorrupt)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	if h != nil && h.Sum256() != *e.DataHash {
		return fmt.Errorf("%w: content does not match the hash in the index", bupstash.ErrCorrupt)
	}
	if pad := (512 - e.Size%512) % 512; pad > 0 {
		_, err := w.Write(make([]byte, pad))
		return err
	}
	return nil
}

func tarType(e *bupstash.IndexEntry) (byte, bool) {
	switch e.Type() {
	case bupstash.ModeRegular:
		return '0', true
	case bupstash.ModeSymlink:
		return '2', true
	case bupstash.ModeCharDev:
		return '3', true
	case bupstash.ModeBlockDev:
		return '4', true
	case bupstash.ModeDir:
		return '5', true
	case bupstash.ModeFIFO:
		return '6', true
	}
	return 0, false
}

// ustar header field offsets and sizes.
const (
	tarName, tarNameLen         = 0, 100
	tarMode, tarModeLen         = 100, 8
	tarUID, tarUIDLen           = 108, 8
	tarGID, tarGIDLen           = 116, 8
	tarSize, tarSizeLen         = 124, 12
	tarMtime, tarMtimeLen       = 136, 12
	tarCksum, tarCksumLen       = 148, 8
	tarTypeflag                 = 156
	tarLinkname, tarLinknameLen = 157, 100
	tarMagic                    = 257
	tarDevMajor, tarDevLen      = 329, 8
	tarDevMinor                 = 337
	tarPrefix, tarPrefixLen     = 345, 155
)

type tarBlock [512]byte

func newUstar() *tarBlock {
	var h tarBlock
	copy(h[tarMagic:], "ustar\x0000")
	numField(h[tarMtime:tarMtime+tarMtimeLen], 0)
	return &h
}

// tarHeader appends the header block(s) of an entry.
func tarHeader(out *bytes.Buffer, e *bupstash.IndexEntry, typ byte, hardlink []byte) error {
	var pax []byte
	h := newUstar()
	if hardlink != nil {
		typ = '1'
	}
	h[tarTypeflag] = typ
	octalField(h[tarMode:tarMode+tarModeLen], uint64(e.Mode))
	numField(h[tarMtime:tarMtime+tarMtimeLen], uint64(e.Mtime))
	numField(h[tarUID:tarUID+tarUIDLen], e.UID)
	numField(h[tarGID:tarGID+tarGIDLen], e.GID)
	size := e.Size
	if hardlink != nil {
		size = 0
	}
	numField(h[tarSize:tarSize+tarSizeLen], size)
	octalField(h[tarDevMajor:tarDevMajor+tarDevLen], uint64(uint32(e.DevMajor)))
	octalField(h[tarDevMinor:tarDevMinor+tarDevLen], uint64(uint32(e.DevMinor)))

	if err := h.setPath(e.Path); err != nil {
		if len(e.Path) <= 100 {
			return err
		}
		pax = append(pax, paxRecord("path", e.Path)...)
	}
	if typ == '2' || typ == '1' {
		target := e.Link
		if hardlink != nil {
			target = hardlink
		}
		if target == nil {
			return fmt.Errorf("%w: symlink without a target", bupstash.ErrCorrupt)
		}
		if err := copyPathInto(h[tarLinkname:tarLinkname+tarLinknameLen], target, true); err != nil {
			if len(target) <= 100 {
				return err
			}
			pax = append(pax, paxRecord("linkpath", target)...)
		}
	}
	h.setCksum()
	for _, x := range e.Xattrs {
		pax = append(pax, paxRecord("SCHILY.xattr."+x.Name, x.Value)...)
	}
	if len(pax) > 0 {
		x := newUstar()
		x[tarTypeflag] = 'x'
		numField(x[tarSize:tarSize+tarSizeLen], uint64(len(pax)))
		x.setCksum()
		out.Write(x[:])
		out.Write(pax)
		if pad := (512 - len(pax)%512) % 512; pad > 0 {
			out.Write(make([]byte, pad))
		}
	}
	out.Write(h[:])
	return nil
}

// paxRecord formats "<len> <key>=<value>\n", where len counts itself.
func paxRecord(key string, value []byte) []byte {
	n := 3 + len(key) + len(value)
	for {
		m := len(strconv.Itoa(n)) + 3 + len(key) + len(value)
		if m == n {
			break
		}
		n = m
	}
	rec := strconv.AppendInt(nil, int64(n), 10)
	rec = append(rec, ' ')
	rec = append(rec, key...)
	rec = append(rec, '=')
	rec = append(rec, value...)
	return append(rec, '\n')
}

// octalField writes v as zero-padded octal into all but the field's last
// byte, which stays NUL; digits that do not fit are dropped, as the tar
// crate does.
func octalField(dst []byte, v uint64) {
	o := strconv.FormatUint(v, 8)
	for i := len(dst) - 2; i >= 0; i-- {
		if len(o) > 0 {
			dst[i] = o[len(o)-1]
			o = o[:len(o)-1]
		} else {
			dst[i] = '0'
		}
	}
}

// numField writes v in octal, or in the base-256 extension when it does not
// fit (the thresholds of the tar crate's num_field_wrapper_into).
func numField(dst []byte, v uint64) {
	if v >= 8589934592 || (v >= 2097152 && len(dst) == 8) {
		clear(dst)
		for i := 0; i < 8; i++ {
			dst[len(dst)-1-i] = byte(v >> (8 * i))
		}
		dst[0] |= 0x80
		return
	}
	octalField(dst, v)
}

func (h *tarBlock) setCksum() {
	var sum uint64
	for i, b := range h {
		if i >= tarCksum && i < tarCksum+tarCksumLen {
			sum += ' '
		} else {
			sum += uint64(b)
		}
	}
	octalField(h[tarCksum:tarCksum+tarCksumLen], sum)
}

// setPath stores a path in the name field, or split between prefix and
// name at a '/', like the tar crate's UstarHeader::set_path.
func (h *tarBlock) setPath(p []byte) error {
	if len(p) <= tarNameLen {
		return copyPathInto(h[tarName:tarName+tarNameLen], p, false)
	}
	prefix := p
	for {
		i := bytes.LastIndexByte(prefix, '/')
		if len(prefix) == 0 {
			return errors.New("path cannot be split to be inserted into archive")
		}
		if i < 0 {
			prefix = prefix[:0]
		} else {
			prefix = prefix[:i]
		}
		if len(prefix) <= tarPrefixLen {
			break
		}
	}
	if err := copyPathInto(h[tarPrefix:tarPrefix+tarPrefixLen], prefix, false); err != nil {
		return err
	}
	return copyPathInto(h[tarName:tarName+tarNameLen], p[len(prefix)+1:], false)
}

// copyPathInto writes a path component by component the way the tar
// crate's copy_path_into does, including its partial writes when a
// component does not fit.
func copyPathInto(slot []byte, p []byte, isLink bool) error {
	comps := pathComponents(p)
	pos := 0
	put := func(b []byte) error {
		if len(b) > len(slot)-pos {
			return errors.New("provided value is too long")
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return errors.New("provided value contains a nul byte")
		}
		copy(slot[pos:], b)
		if pos+len(b) < len(slot) {
			slot[pos+len(b)] = 0
		}
		pos += len(b)
		return nil
	}
	emitted, needSlash := false, false
	for _, c := range comps {
		if !isLink {
			switch {
			case string(c) == "/":
				return errors.New("paths in archives must be relative")
			case string(c) == "..":
				return errors.New("paths in archives must not have `..`")
			case string(c) == "." && len(comps) != 1:
				continue
			}
		}
		if needSlash {
			if err := put([]byte{'/'}); err != nil {
				return err
			}
		}
		if err := put(c); err != nil {
			return err
		}
		needSlash = string(c) != "/"
		emitted = true
	}
	if !emitted {
		return errors.New("paths in archives must have at least one component")
	}
	if len(p) > 0 && p[len(p)-1] == '/' {
		return put([]byte{'/'})
	}
	return nil
}

// pathComponents splits a path like Rust's Path::components on Unix: a
// leading "/" is a component, empty components vanish, and "." survives
// only at the start of a relative path.
func pathComponents(p []byte) [][]byte {
	var comps [][]byte
	rest := p
	if len(p) > 0 && p[0] == '/' {
		comps = append(comps, []byte{'/'})
		rest = p[1:]
	}
	for i, c := range bytes.Split(rest, []byte{'/'}) {
		switch {
		case len(c) == 0:
		case string(c) == "." && !(i == 0 && (len(p) == 0 || p[0] != '/')):
		default:
			comps = append(comps, c)
		}
	}
	return comps
}
