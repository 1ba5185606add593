package treediff

import (
	"encoding/hex"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
)

func formatSize(n uint64) string { return query.FormatSize(n) }

// DisplayMode renders st_mode as Bupstash's IndexEntry::display_mode: a
// type letter ('?' for anything Bupstash does not name, sockets included)
// and rwx triplets with s/S and t/T.
func DisplayMode(mode uint32) string {
	b := make([]byte, 0, 10)
	switch mode & bupstash.ModeType {
	case bupstash.ModeRegular:
		b = append(b, '-')
	case bupstash.ModeSymlink:
		b = append(b, 'l')
	case bupstash.ModeCharDev:
		b = append(b, 'c')
	case bupstash.ModeBlockDev:
		b = append(b, 'b')
	case bupstash.ModeDir:
		b = append(b, 'd')
	case bupstash.ModeFIFO:
		b = append(b, 'p')
	default:
		b = append(b, '?')
	}
	bit := func(m uint32, c byte) {
		if mode&m != 0 {
			b = append(b, c)
		} else {
			b = append(b, '-')
		}
	}
	special := func(s, x uint32, set, unset byte) {
		switch {
		case mode&s != 0 && mode&x != 0:
			b = append(b, set)
		case mode&s != 0:
			b = append(b, unset)
		default:
			bit(x, 'x')
		}
	}
	bit(0o400, 'r')
	bit(0o200, 'w')
	special(0o4000, 0o100, 's', 'S')
	bit(0o040, 'r')
	bit(0o020, 'w')
	special(0o2000, 0o010, 's', 'S')
	bit(0o004, 'r')
	bit(0o002, 'w')
	special(0o1000, 0o001, 't', 'T')
	return string(b)
}

// HumanLine renders an entry as `bupstash list-contents` does
// (fmtutil::format_human_content_listing): mode, size ("-" for anything
// but a regular file) padded to sizeWidth, change time in loc, and the
// path with invalid UTF-8 replaced as Rust's to_string_lossy replaces it.
func HumanLine(e *bupstash.IndexEntry, sizeWidth int, loc *time.Location) string {
	size := "-"
	if e.IsRegular() {
		size = formatSize(e.Size)
	}
	var b strings.Builder
	b.WriteString(DisplayMode(e.Mode))
	b.WriteByte(' ')
	b.WriteString(size)
	for i := len(size); i < sizeWidth; i++ {
		b.WriteByte(' ')
	}
	b.WriteByte(' ')
	b.WriteString(query.FormatTimestamp(time.Unix(e.Ctime, int64(e.CtimeNsec)), loc))
	b.WriteByte(' ')
	b.WriteString(RustLossy(e.Path))
	return b.String()
}

// JSONLine renders an entry as `bupstash list-contents --format jsonl1`
// does (fmtutil::format_jsonl1_content_listing), field for field and byte
// for byte: names, link targets and xattrs that are not UTF-8 are written
// losslessly as arrays of byte values.
func JSONLine(e *bupstash.IndexEntry) string {
	var b strings.Builder
	u := func(name string, v uint64) {
		b.WriteString(`,"` + name + `":`)
		b.WriteString(strconv.FormatUint(v, 10))
	}
	b.WriteString(`{"mode":`)
	b.WriteString(strconv.FormatUint(uint64(e.Mode), 10))
	u("size", e.Size)
	b.WriteString(`,"path":`)
	WriteJSONBytes(&b, e.Path)
	u("mtime", uint64(e.Mtime))
	u("mtime_nsec", uint64(e.MtimeNsec))
	u("ctime", uint64(e.Ctime))
	u("ctime_nsec", uint64(e.CtimeNsec))
	u("uid", e.UID)
	u("gid", e.GID)
	u("norm_dev", e.NormDev)
	u("nlink", e.Nlink)
	u("ino", e.Ino)
	if t := e.Type(); t == bupstash.ModeBlockDev || t == bupstash.ModeCharDev {
		u("dev_major", e.DevMajor)
		u("dev_minor", e.DevMinor)
	} else {
		b.WriteString(`,"dev_major":null,"dev_minor":null`)
	}
	if e.Xattrs != nil {
		b.WriteString(`,"xattrs":{`)
		for i, x := range sortedXattrs(e.Xattrs) {
			if i > 0 {
				b.WriteByte(',')
			}
			WriteJSONBytes(&b, []byte(x.Name))
			b.WriteByte(':')
			WriteJSONBytes(&b, x.Value)
		}
		b.WriteByte('}')
	} else {
		b.WriteString(`,"xattrs":null`)
	}
	b.WriteString(`,"sparse": ` + strconv.FormatBool(e.Sparse))
	if e.Link != nil {
		b.WriteString(`,"link_target":`)
		WriteJSONBytes(&b, e.Link)
	} else {
		b.WriteString(`,"link_target":null`)
	}
	if e.DataHash != nil {
		b.WriteString(`,"data_hash":"blake3:` + hex.EncodeToString(e.DataHash[:]) + `"`)
	} else {
		b.WriteString(`,"data_hash":null`)
	}
	b.WriteByte('}')
	return b.String()
}

// WriteJSONBytes writes UTF-8 as a JSON string and anything else as an
// array of byte values, as Bupstash (serde_json) writes names, link
// targets and xattrs: losslessly, so that the bytes can be fed back.
func WriteJSONBytes(b *strings.Builder, v []byte) {
	if utf8.Valid(v) {
		WriteJSONString(b, string(v))
		return
	}
	b.WriteByte('[')
	for i, c := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(c)))
	}
	b.WriteByte(']')
}

// WriteJSONString writes a JSON string as serde_json writes it: quotes,
// backslashes and control characters escaped (the usual short forms, else
// \u00xx in lowercase), everything else, DEL and non-ASCII included, as
// it is.
func WriteJSONString(b *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var esc string
		switch {
		case c == '"':
			esc = `\"`
		case c == '\\':
			esc = `\\`
		case c == '\b':
			esc = `\b`
		case c == '\f':
			esc = `\f`
		case c == '\n':
			esc = `\n`
		case c == '\r':
			esc = `\r`
		case c == '\t':
			esc = `\t`
		case c < 0x20:
			esc = `\u00` + string(hexDigits[c>>4]) + string(hexDigits[c&0xf])
		default:
			continue
		}
		b.WriteString(s[start:i])
		b.WriteString(esc)
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// RustLossy converts bytes to UTF-8 as Rust's String::from_utf8_lossy
// does: each maximal prefix of a valid sequence that is cut short, and
// each byte that cannot start one, becomes one U+FFFD. (Go's
// strings.ToValidUTF8 merges runs; utf8.DecodeRune splits prefixes.)
func RustLossy(p []byte) string {
	if utf8.Valid(p) {
		return string(p)
	}
	var b strings.Builder
	b.Grow(len(p) + 8)
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		n, lo, hi := 0, byte(0x80), byte(0xbf)
		switch {
		case c >= 0xc2 && c <= 0xdf:
			n = 2
		case c == 0xe0:
			n, lo = 3, 0xa0
		case c >= 0xe1 && c <= 0xec, c == 0xee, c == 0xef:
			n = 3
		case c == 0xed:
			n, hi = 3, 0x9f
		case c == 0xf0:
			n, lo = 4, 0x90
		case c >= 0xf1 && c <= 0xf3:
			n = 4
		case c == 0xf4:
			n, hi = 4, 0x8f
		}
		if n == 0 {
			b.WriteRune(utf8.RuneError)
			i++
			continue
		}
		k := 1 // bytes of the sequence that are valid so far
		for ; k < n && i+k < len(p); k++ {
			x := p[i+k]
			if k == 1 && (x < lo || x > hi) || k > 1 && (x < 0x80 || x > 0xbf) {
				break
			}
		}
		if k == n {
			b.Write(p[i : i+n])
		} else {
			b.WriteRune(utf8.RuneError)
		}
		i += k
	}
	return b.String()
}
