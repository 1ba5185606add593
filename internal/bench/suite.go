package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config says what to run and with what.
type Config struct {
	// Backupfs and Ceilingfs are the binaries to time.
	Backupfs, Ceilingfs string
	// Bupstash is genuine bupstash 0.12.1, the reference of the diff
	// group, and the server and reference of the remote group ("": those
	// groups cannot run).
	Bupstash string
	// Versitygw is the S3 server the s3 group reads from.
	Versitygw string
	// Work holds the generated datasets and the mountpoints.
	Work string
	// Runs is how many times each figure is measured (median reported).
	Runs int
	// CacheSize is the mounts' --cache-size in bytes.
	CacheSize int64
	// Only, when not empty, selects groups by name (see Groups).
	Only []string
	// LimitTime is how long each primitive is timed per round.
	LimitTime time.Duration
	Logf      func(format string, args ...any)
}

// Groups are the parts of the suite, in the order they run.
var Groups = []string{"limits", "cat", "large", "million", "items", "ceiling", "smallfiles", "diff", "s3", "remote"}

// Suite runs the benchmarks and collects their results.
type Suite struct {
	cfg     Config
	Limits  []Limit
	Rows    []Row
	Targets []Target
	Notes   []string

	data map[string]*Generated
	// Medians the targets compare, filled as groups run.
	pipeline, catMBps, mountColdMBps float64
	largeRSS                         []int64
	copyNoted                        bool // the note on where copies go was added
}

// A Row is one measured figure.
type Row struct {
	Group, What, Value, Notes string
}

// A Target is one of the performance goals, checked against a measured
// figure.
type Target struct {
	Goal, Measured, Ratio string
	Met                   bool
}

// NewSuite checks the configuration.
func NewSuite(cfg Config) (*Suite, error) {
	if cfg.Runs < 1 {
		cfg.Runs = 3
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 256 << 20
	}
	if cfg.LimitTime <= 0 {
		cfg.LimitTime = time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	for _, g := range cfg.Only {
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("no benchmark group %q (groups: %s)", g, strings.Join(Groups, ", "))
		}
	}
	if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
		return nil, err
	}
	// Mount table paths are real paths.
	real, err := filepath.EvalSymlinks(cfg.Work)
	if err != nil {
		return nil, err
	}
	cfg.Work = real
	return &Suite{cfg: cfg, data: map[string]*Generated{}}, nil
}

func (s *Suite) selected(group string) bool {
	return len(s.cfg.Only) == 0 || slices.Contains(s.cfg.Only, group)
}

// Run runs every selected group.
func (s *Suite) Run(ctx context.Context) error {
	steps := []struct {
		group string
		fn    func(context.Context) error
	}{
		{"limits", s.runLimits},
		{"cat", s.runCat},
		{"large", s.runLarge},
		{"million", s.runMillion},
		{"items", s.runItems},
		{"ceiling", s.runCeiling},
		{"smallfiles", s.runSmallFiles},
		{"diff", s.runDiff},
		{"s3", s.runS3},
		{"remote", s.runRemote},
	}
	for _, st := range steps {
		if !s.selected(st.group) {
			continue
		}
		s.cfg.Logf("== %s", st.group)
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.group, err)
		}
	}
	s.checkTargets()
	return nil
}

// dataset generates (or finds) a dataset and puts its repository in the
// page cache, so that timings measure backupfs and not the disk.
func (s *Suite) dataset(ctx context.Context, d *Dataset) (*Generated, error) {
	if g := s.data[d.Name]; g != nil {
		return g, nil
	}
	g, err := Prepare(ctx, d, s.cfg.Work, s.cfg.Logf)
	if err != nil {
		return nil, err
	}
	if err := g.checkKey(); err != nil {
		return nil, err
	}
	if err := warmFiles(g.Repo); err != nil {
		return nil, err
	}
	s.data[d.Name] = g
	return g, nil
}

func (s *Suite) add(group, what, value, notes string) {
	s.Rows = append(s.Rows, Row{group, what, value, notes})
	s.cfg.Logf("   %-58s %14s  %s", what, value, notes)
}

// mount starts backupfs on a fresh mountpoint.
func (s *Suite) mount(ctx context.Context, g *Generated, extra ...string) (*Server, error) {
	return startServer(ctx, s.cfg.Work, append(s.mountArgv(g), extra...)...)
}

// mountArgv is the command that mounts g, but for the mountpoint.
func (s *Suite) mountArgv(g *Generated) []string {
	return []string{s.cfg.Backupfs, "mount", "--repo", g.Repo, "--key", g.Key, "--name", "repo",
		"--cache-size", strconv.FormatInt(s.cfg.CacheSize, 10)}
}

// ceiling starts the in-memory filesystem of d's first item.
func (s *Suite) ceiling(ctx context.Context, d *Dataset, xattrs string) (*Server, error) {
	return startServer(ctx, s.cfg.Work, s.cfg.Ceilingfs, "-dataset", d.Name, "-xattrs", xattrs)
}

// mounted runs fn against a fresh server and stops it, returning the
// server's own cost too.
func mounted(ctx context.Context, start func() (*Server, error), fn func(*Server) error) (Run, error) {
	srv, err := start()
	if err != nil {
		return Run{}, err
	}
	ferr := fn(srv)
	r, err := srv.Stop()
	if ferr != nil {
		return r, fmt.Errorf("%w (server log: %s)", ferr, firstLine(srv.Log()))
	}
	return r, err
}

func (s *Suite) runLimits(context.Context) error {
	limits, err := MeasureLimits(s.cfg.LimitTime)
	if err != nil {
		return err
	}
	s.Limits = limits
	for _, l := range limits {
		s.add("Limits: one core, in-process", l.Name, mbps(l.MBps), "MB/s of "+l.Of)
	}
	s.pipeline = limits[len(limits)-1].MBps
	return nil
}

// hugeFile is Large's 1 GiB file, at the root of its item.
const hugeFile = "huge.bin"

func (s *Suite) runCat(ctx context.Context) error {
	g, err := s.dataset(ctx, &Large)
	if err != nil {
		return err
	}
	var walls, rss []float64
	for i := range s.cfg.Runs + 1 {
		r, err := runToNull(ctx, "", s.cfg.Backupfs, "cat", "--repo", g.Repo, "--key", g.Key,
			"--cache-size", strconv.FormatInt(s.cfg.CacheSize, 10), g.Item, hugeFile)
		if err != nil {
			return err
		}
		if i > 0 { // the first run is a warm-up
			walls = append(walls, r.Wall.Seconds())
			rss = append(rss, float64(r.MaxRSS))
		}
	}
	s.catMBps = float64(int64(1)<<30) / median(walls) / 1e6
	s.add("backupfs cat (no mount)", "cat of huge.bin (1 GiB) to /dev/null", mbps(s.catMBps),
		fmt.Sprintf("MB/s; %.2f s; peak RSS %s (cache %s)", median(walls), mib(median(rss)), mib(float64(s.cfg.CacheSize))))
	return nil
}

func (s *Suite) runLarge(ctx context.Context) error {
	g, err := s.dataset(ctx, &Large)
	if err != nil {
		return err
	}
	const group = "Through the mount: large files"
	start := func() (*Server, error) { return s.mount(ctx, g) }
	huge := func(srv *Server) string { return filepath.Join(g.ItemDir(srv.Dir), hugeFile) }

	// Sequential: the first read after mounting, then the same again
	// (served by the kernel's page cache).
	var cold, warm, coldRSS []float64
	for range s.cfg.Runs {
		var c, w Run
		r, err := mounted(ctx, start, func(srv *Server) error {
			var err error
			if c, err = runToNull(ctx, "", "cat", huge(srv)); err != nil {
				return err
			}
			w, err = runToNull(ctx, "", "cat", huge(srv))
			return err
		})
		if err != nil {
			return err
		}
		cold = append(cold, c.Wall.Seconds())
		warm = append(warm, w.Wall.Seconds())
		coldRSS = append(coldRSS, float64(r.MaxRSS))
		s.largeRSS = append(s.largeRSS, r.MaxRSS)
	}
	s.mountColdMBps = float64(int64(1)<<30) / median(cold) / 1e6
	s.add(group, "cat huge.bin (1 GiB), first read after mounting", mbps(s.mountColdMBps),
		fmt.Sprintf("MB/s; %.2f s; mount peak RSS %s", median(cold), mib(median(coldRSS))))
	s.add(group, "cat huge.bin again (kernel page cache)", mbps(float64(int64(1)<<30)/median(warm)/1e6),
		fmt.Sprintf("MB/s; %.2f s", median(warm)))

	// Four readers, each on its own 256 MiB file.
	files, err := regularFiles(&Large, 256<<20)
	if err != nil {
		return err
	}
	if len(files) != 4 {
		return fmt.Errorf("want 4 files of 256 MiB in the dataset, have %d", len(files))
	}
	var par, parRSS []float64
	for range s.cfg.Runs {
		var wall time.Duration
		r, err := mounted(ctx, start, func(srv *Server) error {
			t0 := time.Now()
			errs := make([]error, len(files))
			var wg sync.WaitGroup
			for i, f := range files {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = runToNull(ctx, "", "cat", filepath.Join(g.ItemDir(srv.Dir), f))
				}()
			}
			wg.Wait()
			wall = time.Since(t0)
			return errors.Join(errs...)
		})
		if err != nil {
			return err
		}
		par = append(par, wall.Seconds())
		parRSS = append(parRSS, float64(r.MaxRSS))
		s.largeRSS = append(s.largeRSS, r.MaxRSS)
	}
	s.add(group, "4 readers at once, one 256 MiB file each", mbps(float64(int64(1)<<30)/median(par)/1e6),
		fmt.Sprintf("MB/s in all; %.2f s; mount peak RSS %s", median(par), mib(median(parRSS))))

	// Random 4 KiB reads of the 1 GiB file.
	const randomFor = 5 * time.Second
	var rates, randRSS []float64
	for range s.cfg.Runs {
		var rate float64
		r, err := mounted(ctx, start, func(srv *Server) error {
			var err error
			rate, err = randomReads(huge(srv), 1<<30, 4096, randomFor)
			return err
		})
		if err != nil {
			return err
		}
		rates = append(rates, rate)
		randRSS = append(randRSS, float64(r.MaxRSS))
		s.largeRSS = append(s.largeRSS, r.MaxRSS)
	}
	s.add(group, "random 4 KiB reads of huge.bin, from mounting on", fmt.Sprintf("%.0f", median(rates)),
		fmt.Sprintf("reads/s over %v (1 GiB file, %s cache: most reads decode a leaf); mount peak RSS %s", randomFor, mib(float64(s.cfg.CacheSize)), mib(median(randRSS))))

	// The same within a part that fits the cache, once decoded: the cost
	// of a request itself. The reads use O_DIRECT, so that every one
	// reaches backupfs rather than the kernel's page cache.
	const warmSpan = 128 << 20
	rates = rates[:0]
	for range s.cfg.Runs {
		var rate float64
		r, err := mounted(ctx, start, func(srv *Server) error {
			f, err := os.Open(huge(srv))
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, warmSpan)); err != nil {
				return err
			}
			rate, err = directRandomReads(huge(srv), warmSpan, 4096, randomFor)
			return err
		})
		if err != nil {
			return err
		}
		rates = append(rates, rate)
		s.largeRSS = append(s.largeRSS, r.MaxRSS)
	}
	s.add(group, "random 4 KiB reads within 128 MiB already decoded", fmt.Sprintf("%.0f", median(rates)),
		fmt.Sprintf("reads/s over %v: a round trip to backupfs and a copy out of the chunk cache", randomFor))
	return nil
}

// randomReads reads size bytes at random aligned offsets of the file for
// d and returns reads per second. Readahead is turned off (POSIX_FADV_RANDOM),
// as a database reading its pages would.
func randomReads(path string, fileSize, size int64, d time.Duration) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		return 0, fmt.Errorf("fadvise: %w", err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, size)
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		off := rng.Int64N(fileSize/size) * size
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read at %d: %w", off, err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// directRandomReads is randomReads with O_DIRECT: no read is answered
// from the kernel's page cache.
func directRandomReads(path string, span, size int64, d time.Duration) (float64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// O_DIRECT wants an aligned buffer.
	raw := make([]byte, size+4096)
	buf := raw[4096-int(uintptr(unsafe.Pointer(&raw[0]))%4096):][:size]
	rng := rand.New(rand.NewPCG(8, 8))
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		off := rng.Int64N(span/size) * size
		if _, err := unix.Pread(fd, buf, off); err != nil {
			return 0, fmt.Errorf("read at %d: %w", off, err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// regularFiles lists the paths of d's first item's regular files of the
// given size.
func regularFiles(d *Dataset, size int64) ([]string, error) {
	files, err := filesOf(d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		if f.size == size {
			out = append(out, f.path)
		}
	}
	return out, nil
}

func (s *Suite) runMillion(ctx context.Context) error {
	g, err := s.dataset(ctx, &Million)
	if err != nil {
		return err
	}
	group := fmt.Sprintf("Through the mount: one item of %d entries", g.Entries)
	start := func() (*Server, error) { return s.mount(ctx, g) }
	ops := []struct {
		what string
		argv []string
	}{
		{"ls of the item's root", []string{"ls"}},
		{"find | wc -l", []string{"find", "."}},
		{"ls -lR", []string{"ls", "-lR"}},
	}
	for _, op := range ops {
		var first, total, rss []float64
		var lines int64
		for range s.cfg.Runs {
			var t Run
			r, err := mounted(ctx, start, func(srv *Server) error {
				var err error
				t, err = runTool(ctx, g.ItemDir(srv.Dir), op.argv...)
				return err
			})
			if err != nil {
				return err
			}
			first = append(first, t.First.Seconds())
			total = append(total, t.Wall.Seconds())
			rss = append(rss, float64(r.MaxRSS))
			lines = t.Lines
		}
		if op.argv[0] == "find" && lines != int64(g.Entries) {
			return fmt.Errorf("find listed %d entries, the item has %d", lines, g.Entries)
		}
		s.add(group, op.what+" (mounted afresh)", secs(median(total)),
			fmt.Sprintf("first output at %s; %d lines; mount peak RSS %s", secs(median(first)), lines, mib(median(rss))))
		switch op.argv[0] {
		case "ls":
			if len(op.argv) == 1 {
				s.target("first ls of the root of a 1,000,000-entry item under 2 s", median(total), 2, false, "s")
			}
		case "find":
			s.target("full find of it under 10 s", median(total), 10, false, "s")
			beyond := median(rss) - float64(s.cfg.CacheSize)
			s.target("mount RSS during that find under 300 MiB beyond the chunk cache", max(beyond, 0)/(1<<20), 300, false, "MiB")
		}
	}
	return nil
}

func (s *Suite) runItems(ctx context.Context) error {
	g, err := s.dataset(ctx, &Items)
	if err != nil {
		return err
	}
	const group = "Mount start"
	var ready, listed, rss []float64
	for range s.cfg.Runs + 2 {
		srv, err := s.mount(ctx, g)
		if err != nil {
			return err
		}
		t, lerr := runTool(ctx, filepath.Join(srv.Dir, "repo", "ids"), "ls")
		r, err := srv.Stop()
		if err := errors.Join(lerr, err); err != nil {
			return err
		}
		if t.Lines != int64(g.Items) {
			return fmt.Errorf("ids/ lists %d items, the repository has %d", t.Lines, g.Items)
		}
		ready = append(ready, srv.Ready.Seconds())
		listed = append(listed, (srv.Ready + t.Wall).Seconds())
		rss = append(rss, float64(r.MaxRSS))
	}
	what := fmt.Sprintf("%d items: until the mountpoint answers", g.Items)
	s.add(group, what, secs(median(ready)), "from starting backupfs mount")
	s.add(group, fmt.Sprintf("%d items: until ls ids/ has listed them all", g.Items), secs(median(listed)), "peak RSS "+mib(median(rss)))
	s.target("mount start on 10,000 items under 1 s", median(ready), 1, false, "s")
	return nil
}

// runCeiling times the same tools on backupfs and on the in-memory
// ceiling, mounted afresh for every run, alternating between the two.
func (s *Suite) runCeiling(ctx context.Context) error {
	small, err := s.dataset(ctx, &Small)
	if err != nil {
		return err
	}
	if err := s.sameTree(ctx, small); err != nil {
		return err
	}
	large, err := s.dataset(ctx, &Large)
	if err != nil {
		return err
	}
	const group = "Against the in-memory ceiling (same names and sizes)"
	cases := []struct {
		what   string
		g      *Generated
		xattrs string
		argv   []string
		limit  float64
		goal   string
	}{
		{"cat huge.bin (1 GiB), first read", large, "auto", []string{"cat", hugeFile}, 2, "cat of 1 GiB within 2× of the ceiling"},
		{"ls -lR of 200,000 files", small, "auto", []string{"ls", "-lR"}, 1.5, "ls -l over 200,000 small files within 1.5× of the ceiling"},
		{"ls -lR of 200,000 files, --xattrs=off on both", small, "off", []string{"ls", "-lR"}, 0, ""},
		{"find of 200,000 files", small, "auto", []string{"find", "."}, 0, ""},
		{"tar -c of 200,000 files (to a pipe)", small, "auto", []string{"tar", "-cf", "-", "."}, 1.5, "tar -c over 200,000 small files within 1.5× of the ceiling"},
	}
	for _, c := range cases {
		var ours, ceil, ourRSS []float64
		var ourOut, ceilOut int64
		for range s.cfg.Runs {
			var t Run
			// cat's output goes to /dev/null: through a pipe, moving the
			// bytes would cost more than reading them. tar's cannot (GNU
			// tar reads nothing when writing to /dev/null).
			run := runTool
			if c.argv[0] == "cat" {
				run = runToNull
			}
			r, err := mounted(ctx, func() (*Server, error) { return s.mount(ctx, c.g, "--xattrs", c.xattrs) }, func(srv *Server) error {
				var err error
				t, err = run(ctx, c.g.ItemDir(srv.Dir), c.argv...)
				return err
			})
			if err != nil {
				return err
			}
			ours = append(ours, t.Wall.Seconds())
			ourRSS = append(ourRSS, float64(r.MaxRSS))
			ourOut = t.Out
			if _, err := mounted(ctx, func() (*Server, error) { return s.ceiling(ctx, c.g.Dataset, c.xattrs) }, func(srv *Server) error {
				var err error
				t, err = run(ctx, srv.Dir, c.argv...)
				return err
			}); err != nil {
				return err
			}
			ceil = append(ceil, t.Wall.Seconds())
			ceilOut = t.Out
		}
		if (c.argv[0] == "find" || c.argv[0] == "tar") && ourOut != ceilOut {
			// ls -l prints owners and times, which may differ in width;
			// find and tar output must have the same size.
			return fmt.Errorf("%s: backupfs wrote %d bytes, the ceiling %d: the trees differ", c.what, ourOut, ceilOut)
		}
		ratio := median(ours) / median(ceil)
		s.add(group, c.what, fmt.Sprintf("%.2f×", ratio),
			fmt.Sprintf("backupfs %s, ceiling %s; backupfs mount peak RSS %s", secs(median(ours)), secs(median(ceil)), mib(median(ourRSS))))
		if c.goal != "" {
			s.target(c.goal, ratio, c.limit, false, "×")
		}
	}
	return nil
}

// sameTree checks that the ceiling shows exactly the names, sizes and
// modes backupfs shows for the dataset's first item.
func (s *Suite) sameTree(ctx context.Context, g *Generated) error {
	listing := func(start func() (*Server, error), dir func(*Server) string) ([]string, error) {
		var out []string
		_, err := mounted(ctx, start, func(srv *Server) error {
			cmd := exec.CommandContext(ctx, "find", ".", "-printf", `%P\t%s\t%M\n`)
			cmd.Dir = dir(srv)
			b, err := cmd.Output()
			// The first line is the item's root itself; the rest must match.
			for _, l := range strings.Split(string(b), "\n") {
				if l != "" && !strings.HasPrefix(l, "\t") {
					out = append(out, l)
				}
			}
			return err
		})
		sort.Strings(out)
		return out, err
	}
	ours, err := listing(func() (*Server, error) { return s.mount(ctx, g) }, func(srv *Server) string { return g.ItemDir(srv.Dir) })
	if err != nil {
		return err
	}
	ceil, err := listing(func() (*Server, error) { return s.ceiling(ctx, g.Dataset, "auto") }, func(srv *Server) string { return srv.Dir })
	if err != nil {
		return err
	}
	if !slices.Equal(ours, ceil) {
		for i := range min(len(ours), len(ceil)) {
			if ours[i] != ceil[i] {
				return fmt.Errorf("the ceiling's tree differs from backupfs's: %q vs %q", ceil[i], ours[i])
			}
		}
		return fmt.Errorf("the ceiling lists %d entries, backupfs %d", len(ceil), len(ours))
	}
	s.Notes = append(s.Notes, fmt.Sprintf("The ceiling's tree of dataset %s was checked to list the same %d paths with the same sizes and modes as backupfs.", g.Name, len(ours)))
	return nil
}

// target records a goal: measured must be at most limit (or at least it,
// when atLeast).
func (s *Suite) target(goal string, measured, limit float64, atLeast bool, unit string) {
	met := measured <= limit
	if atLeast {
		met = measured >= limit
	}
	var m string
	switch unit {
	case "×":
		m = fmt.Sprintf("%.2f×", measured)
	case "s":
		m = secs(measured)
	default:
		m = fmt.Sprintf("%.0f %s", measured, unit)
	}
	ratio := fmt.Sprintf("%.2f", measured/limit)
	if limit == 0 {
		ratio = "—" // a count that must be zero
	}
	s.Targets = append(s.Targets, Target{Goal: goal, Measured: m, Ratio: ratio, Met: met})
}

// checkTargets adds the goals that combine groups.
func (s *Suite) checkTargets() {
	if s.mountColdMBps > 0 && s.catMBps > 0 {
		s.target("sequential read through the mount at least 80% of backupfs cat", s.mountColdMBps/s.catMBps, 0.8, true, "×")
	}
	if s.catMBps > 0 && s.pipeline > 0 {
		s.target("backupfs cat at least 1.5× the one-core decrypt+verify+decompress limit", s.catMBps/s.pipeline, 1.5, true, "×")
	}
	if len(s.largeRSS) > 0 {
		peak := slices.Max(s.largeRSS)
		bound := s.cfg.CacheSize + 64<<20
		s.Targets = append(s.Targets, Target{
			Goal:     fmt.Sprintf("mount peak RSS at most --cache-size (%s) + 64 MiB, whatever is read", mib(float64(s.cfg.CacheSize))),
			Measured: mib(float64(peak)) + " (largest of every large-file run)",
			Ratio:    fmt.Sprintf("%.2f", float64(peak)/float64(bound)),
			Met:      peak <= bound,
		})
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mbps(v float64) string { return fmt.Sprintf("%.0f", v) }
func secs(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.0f ms", v*1000)
	}
	return fmt.Sprintf("%.2f s", v)
}
func mib(v float64) string { return fmt.Sprintf("%.0f MiB", v/(1<<20)) }
