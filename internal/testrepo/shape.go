package testrepo

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Shape generates a realistic snapshot of any size as a stream, for
// benchmarks: a random directory tree of bounded depth holding Files
// regular files whose sizes follow Sizes, plus optional sparse files, hard
// links, xattrs and special entries. Everything derives from Seed, so a
// shape always yields the same entries and contents, and nothing is held
// in memory but the directory skeleton (a few dozen bytes per directory)
// and one directory's listing at a time.
type Shape struct {
	Seed  uint64
	Files int
	// FilesPerDir is the average number of files per directory (default
	// 24); the tree has Files/FilesPerDir directories.
	FilesPerDir int
	// Depth is the maximum directory depth (default 6); one chain of
	// directories that deep is always present.
	Depth int
	// Sizes is the file size distribution (default LogNormal 2 KiB, σ 1.2,
	// about 4 KiB on average).
	Sizes SizeDist
	// Content of the files (default Text).
	Content ContentKind

	// Huge adds a file "huge.bin" of this size at the root.
	Huge int64
	// SparseFiles adds files of SparseSize bytes (default 8 MiB) that are
	// holes but for a few small data regions.
	SparseFiles int
	SparseSize  int64
	// Hardlinks adds this many second names of regular files, in the same
	// directory (same inode, nlink 2, same content).
	Hardlinks int
	// XattrEvery gives every n-th file and directory extended attributes.
	XattrEvery int
	// Special adds symlinks (some dangling), fifos, character and block
	// devices, non-UTF-8 names, setuid files and pre-1970 mtimes.
	Special bool
	// Time is the newest mtime (default DefaultTime); files are up to three
	// years older.
	Time time.Time
}

// ContentKind selects generated file content.
type ContentKind int

// Content kinds.
const (
	ContentText   ContentKind = iota // compresses about 3:1
	ContentRandom                    // incompressible
	ContentZero                      // all zeros
)

// ParseContentKind parses "text", "random" or "zero".
func ParseContentKind(s string) (ContentKind, error) {
	switch s {
	case "text":
		return ContentText, nil
	case "random":
		return ContentRandom, nil
	case "zero":
		return ContentZero, nil
	}
	return 0, fmt.Errorf("unknown content %q (want text, random or zero)", s)
}

// Make returns content of this kind.
func (k ContentKind) Make(size int64, seed uint64) Content {
	switch k {
	case ContentRandom:
		return Random(size, seed)
	case ContentZero:
		return Zeros(size)
	}
	return Text(size, seed)
}

// SizeDist draws file sizes.
type SizeDist interface {
	Sample(r *rand.Rand) int64
	String() string
}

// Fixed is a constant size.
type Fixed int64

// Sample returns the size.
func (f Fixed) Sample(*rand.Rand) int64 { return int64(f) }
func (f Fixed) String() string          { return "fixed:" + FormatSize(int64(f)) }

// Uniform draws sizes uniformly from [Min, Max].
type Uniform struct{ Min, Max int64 }

// Sample draws a size.
func (u Uniform) Sample(r *rand.Rand) int64 { return u.Min + r.Int64N(u.Max-u.Min+1) }
func (u Uniform) String() string {
	return "uniform:" + FormatSize(u.Min) + "-" + FormatSize(u.Max)
}

// LogNormal draws sizes whose logarithm is normal: most files are near
// Median, a few are much larger, as on real filesystems. Sizes are capped
// at Max (default 1 GiB).
type LogNormal struct {
	Median int64
	Sigma  float64
	Max    int64
}

// Sample draws a size.
func (l LogNormal) Sample(r *rand.Rand) int64 {
	v := float64(l.Median) * math.Exp(l.Sigma*r.NormFloat64())
	limit := l.Max
	if limit == 0 {
		limit = 1 << 30
	}
	return int64(min(v, float64(limit)))
}

func (l LogNormal) String() string {
	return fmt.Sprintf("lognormal:%s:%g", FormatSize(l.Median), l.Sigma)
}

// DefaultSizes is the default file size distribution: small files, as in
// a source tree or a home directory.
var DefaultSizes SizeDist = LogNormal{Median: 2 << 10, Sigma: 1.2, Max: 64 << 20}

// ParseSizeDist parses "fixed:SIZE", "uniform:MIN-MAX" or
// "lognormal:MEDIAN[:SIGMA]" (sizes like 4096, 4K, 1.5M, 1G).
func ParseSizeDist(s string) (SizeDist, error) {
	kind, args, _ := strings.Cut(s, ":")
	switch kind {
	case "fixed":
		n, err := ParseSize(args)
		return Fixed(n), err
	case "uniform":
		a, b, ok := strings.Cut(args, "-")
		if !ok {
			return nil, fmt.Errorf("size distribution %q: want uniform:MIN-MAX", s)
		}
		lo, err := ParseSize(a)
		if err != nil {
			return nil, err
		}
		hi, err := ParseSize(b)
		if err != nil {
			return nil, err
		}
		if hi < lo {
			return nil, fmt.Errorf("size distribution %q: max below min", s)
		}
		return Uniform{lo, hi}, nil
	case "lognormal":
		m, sg, hasSigma := strings.Cut(args, ":")
		median, err := ParseSize(m)
		if err != nil {
			return nil, err
		}
		sigma := 1.2
		if hasSigma {
			if sigma, err = strconv.ParseFloat(sg, 64); err != nil || sigma < 0 {
				return nil, fmt.Errorf("size distribution %q: bad sigma", s)
			}
		}
		return LogNormal{Median: median, Sigma: sigma, Max: 64 << 20}, nil
	}
	return nil, fmt.Errorf("unknown size distribution %q (want fixed:SIZE, uniform:MIN-MAX or lognormal:MEDIAN[:SIGMA])", s)
}

// ParseSize parses a byte count with an optional binary suffix: K, M, G,
// T (also KiB, MB, …; all powers of 1024), fractions allowed ("1.5G").
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil && n >= 0 && n <= math.MaxInt64/mult {
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > math.MaxInt64/2 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(f * float64(mult)), nil
}

// FormatSize formats n with a binary suffix when it is a whole multiple.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// skelDir is a directory of the shape's skeleton.
type skelDir struct {
	name   string
	path   string
	depth  int
	subs   []int32 // child directories, by index
	files  int32
	sparse int32
	links  int32
}

// Source returns the shape's entries in walk order.
func (s Shape) Source() EntrySource {
	s.defaults()
	g := &shapeGen{s: s, rng: rand.New(rand.NewPCG(s.Seed, 0x7368617065))}
	g.build()
	return g
}

func (s *Shape) defaults() {
	if s.FilesPerDir <= 0 {
		s.FilesPerDir = 24
	}
	if s.Depth <= 0 {
		s.Depth = 6
	}
	if s.Sizes == nil {
		s.Sizes = DefaultSizes
	}
	if s.SparseSize <= 0 {
		s.SparseSize = 8 << 20
	}
	if s.Time.IsZero() {
		s.Time = DefaultTime
	}
}

// shapeGen walks the skeleton, generating one directory's listing at a
// time.
type shapeGen struct {
	s    Shape
	rng  *rand.Rand
	dirs []skelDir

	started bool
	pending []Entry // current directory's listing, in name order
	stack   [][]int32
	ino     uint64
	n       int // entries emitted, for xattrs
}

// build lays out the directories and assigns files to them.
func (g *shapeGen) build() {
	s, rng := &g.s, g.rng
	nd := s.Files / s.FilesPerDir
	if nd < s.Depth && s.Files >= s.Depth {
		nd = s.Depth
	}
	g.dirs = make([]skelDir, 1, nd+1)
	g.dirs[0] = skelDir{path: ""}
	used := map[[2]string]bool{}
	add := func(parent int) {
		p := &g.dirs[parent]
		var name string
		for {
			name = word(rng, 1+rng.IntN(2))
			if rng.IntN(4) == 0 {
				name += "_" + strconv.Itoa(rng.IntN(100))
			}
			if !used[[2]string{p.path, name}] {
				break
			}
			name += "-" + strconv.Itoa(len(g.dirs))
			if !used[[2]string{p.path, name}] {
				break
			}
		}
		used[[2]string{p.path, name}] = true
		path := name
		if p.path != "" {
			path = p.path + "/" + name
		}
		g.dirs = append(g.dirs, skelDir{name: name, path: path, depth: p.depth + 1})
		g.dirs[parent].subs = append(g.dirs[parent].subs, int32(len(g.dirs)-1))
	}
	// A chain as deep as allowed, then random attachment: each new
	// directory goes under a random directory that is not at the limit.
	for d := 0; d < min(s.Depth, nd); d++ {
		add(len(g.dirs) - 1)
	}
	for len(g.dirs) <= nd {
		for {
			p := rng.IntN(len(g.dirs))
			if g.dirs[p].depth < s.Depth {
				add(p)
				break
			}
		}
	}
	for i := range g.dirs {
		// The walk visits subdirectories in name order.
		slices.SortFunc(g.dirs[i].subs, func(a, b int32) int { return strings.Compare(g.dirs[a].name, g.dirs[b].name) })
	}
	for range s.Files {
		g.dirs[rng.IntN(len(g.dirs))].files++
	}
	for range s.SparseFiles {
		g.dirs[rng.IntN(len(g.dirs))].sparse++
	}
	for range s.Hardlinks {
		g.dirs[rng.IntN(len(g.dirs))].links++
	}
}

var syllables = []string{"ba", "ko", "ri", "tu", "me", "sa", "lo", "ne", "pi", "da", "fu", "gre", "sto", "lin", "mar", "ex", "on", "al", "ur", "ti"}

func word(rng *rand.Rand, n int) string {
	var b strings.Builder
	for range n + 1 {
		b.WriteString(syllables[rng.IntN(len(syllables))])
	}
	return b.String()
}

var extensions = []string{".c", ".h", ".go", ".txt", ".md", ".json", ".png", ".jpg", ".log", ".py", ".rs", ".html", ".o", ".dat"}

func (g *shapeGen) Next() (*Entry, error) {
	if !g.started {
		g.started = true
		g.stack = [][]int32{{0}}
		root := Dir(".")
		root.Mtime = g.s.Time
		root.Ino = g.nextIno()
		root.Nlink = uint64(2 + len(g.dirs[0].subs))
		root.UID, root.GID = 1000, 1000
		return &root, nil
	}
	for len(g.pending) == 0 {
		if len(g.stack) == 0 {
			return nil, io.EOF
		}
		top := &g.stack[len(g.stack)-1]
		if len(*top) == 0 {
			g.stack = g.stack[:len(g.stack)-1]
			continue
		}
		d := (*top)[0]
		*top = (*top)[1:]
		g.list(d)
	}
	e := g.pending[0]
	g.pending = g.pending[1:]
	g.n++
	return &e, nil
}

func (g *shapeGen) nextIno() uint64 {
	g.ino++
	return g.ino + 1 // inode numbers start at 2, like ext4's root
}

// list generates directory d's children, sorted, and queues its
// subdirectories for the walk.
func (g *shapeGen) list(di int32) {
	s := &g.s
	d := &g.dirs[di]
	rng := rand.New(rand.NewPCG(mix(s.Seed, uint64(di)), 0x6c697374))
	var es []Entry
	at := func(name string) string {
		if d.path == "" {
			return name
		}
		return d.path + "/" + name
	}
	mtime := func() time.Time {
		return s.Time.Add(-time.Duration(rng.Int64N(3 * 365 * 24 * int64(time.Hour))))
	}
	for _, sub := range d.subs {
		sd := &g.dirs[sub]
		e := Entry{Path: sd.path, Mode: TypeDir | 0o755, UID: 1000, GID: 1000, Mtime: mtime(), Nlink: uint64(2 + len(sd.subs))}
		es = append(es, e)
	}
	if di == 0 && s.Huge > 0 {
		e := File("huge.bin", s.Content.Make(s.Huge, mix(s.Seed, 1<<62)))
		e.UID, e.GID, e.Mtime = 1000, 1000, mtime()
		es = append(es, e)
	}
	for i := range int(d.files) {
		stem := word(rng, 1+rng.IntN(3))
		ext := extensions[rng.IntN(len(extensions))]
		name := stem + "-" + strconv.Itoa(i) + ext
		size := s.Sizes.Sample(rng)
		seed := mix(s.Seed, uint64(di)<<32|uint64(i))
		e := File(at(name), s.Content.Make(size, seed))
		e.UID, e.GID, e.Mtime = 1000, 1000, mtime()
		if ext == ".py" {
			e.Mode = TypeRegular | 0o755
		}
		if s.Special {
			switch rng.IntN(200) {
			case 0:
				e.Path = at(stem + "-caf\xe9-" + strconv.Itoa(i) + ext) // Latin-1, not UTF-8
			case 1:
				e.Mtime = time.Unix(-rng.Int64N(1e9), rng.Int64N(1e9)).UTC()
			case 2:
				e.Mode = TypeRegular | 0o4755
			}
		}
		if i < int(d.links) {
			e.Nlink = 2
			e.Ino = g.nextIno()
			link := e
			link.Path = at(stem + "-" + strconv.Itoa(i) + "-link" + ext)
			es = append(es, link)
		}
		es = append(es, e)
		if s.Special && rng.IntN(100) == 0 {
			target := name
			if rng.IntN(4) == 0 {
				target = "../missing/" + name
			}
			l := Symlink(at("link-"+strconv.Itoa(i)+".lnk"), target)
			l.Mtime = mtime()
			es = append(es, l)
		}
	}
	for i := range int(d.sparse) {
		size := s.SparseSize
		seed := mix(s.Seed, uint64(di)<<32|1<<31|uint64(i))
		var regions []Region
		for off := int64(rng.IntN(3)) * (size / 3); off < size; {
			n := min(int64(1+rng.IntN(64<<10)), size-off)
			regions = append(regions, Region{Offset: off, Data: s.Content.Make(n, mix(seed, uint64(off)))})
			off += n + size/4 + int64(rng.IntN(4096))
		}
		e := File(at("sparse-"+strconv.Itoa(i)+".img"), Sparse(size, regions...))
		e.Mtime = mtime()
		es = append(es, e)
	}
	if s.Special && di < 3 {
		es = append(es,
			Entry{Path: at("fifo-" + strconv.Itoa(int(di)) + ".pipe"), Mode: TypeFIFO | 0o600, Mtime: mtime()},
			Entry{Path: at("dev-" + strconv.Itoa(int(di)) + ".chr"), Mode: TypeCharDev | 0o666, DevMajor: 1, DevMinor: uint64(3 + di), Mtime: mtime()},
			Entry{Path: at("dev-" + strconv.Itoa(int(di)) + ".blk"), Mode: TypeBlockDev | 0o660, DevMajor: 8, DevMinor: uint64(di), Mtime: mtime()},
		)
	}
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	for i := range es {
		e := &es[i]
		if e.Ino == 0 { // hard-link pairs already share one
			e.Ino = g.nextIno()
		}
		if s.XattrEvery > 0 && (g.n+i)%s.XattrEvery == 0 && (e.IsRegular() || e.IsDir()) {
			e.Xattrs = map[string][]byte{
				"user.comment": []byte("generated entry " + strconv.Itoa(g.n+i)),
				"user.bin":     {0, byte(i), 0xff},
			}
		}
		if e.Nlink == 0 {
			e.Nlink = 1
		}
	}
	g.pending = es
	if len(d.subs) > 0 {
		g.stack = append(g.stack, slices.Clone(d.subs))
	}
}
