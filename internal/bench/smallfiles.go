package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The small-files group times the tools people run over a backup's tree
// (tar, cp -a, rsync -a, diff -r, find, ls -lR) through a freshly mounted
// filesystem and on a local copy of the same tree, extracted from the
// repository with backupfs cat and tar -x and held in the page cache: the
// kernel's own speed, which a FUSE filesystem can approach only by saving
// round trips. It also counts the FUSE requests tar -c costs per file.

// treeTool is one tool run over a tree.
type treeTool struct {
	what string
	// argv is the command reading the tree src (also its working
	// directory); dst is an empty directory for the tools that copy, ref
	// a second copy of the tree for diff.
	argv func(src, dst, ref string) []string
	// copies: the tool writes a copy into dst, which is emptied and
	// synced to disk before every run (outside the timing).
	copies bool
	// same is what must agree between the local and the mounted run:
	// "out" (bytes written), "lines", "none" (nothing is written), or ""
	// (ls -l prints widths that may differ).
	same string
	// goal: the tool is one of those whose ratio has a target.
	goal bool
}

var treeTools = []treeTool{
	{"tar -cf - . (to a pipe)", func(_, _, _ string) []string { return []string{"tar", "-cf", "-", "."} }, false, "out", true},
	{"cp -a to a local directory", func(_, dst, _ string) []string { return []string{"cp", "-a", ".", dst} }, true, "none", true},
	{"rsync -a to a local directory", func(_, dst, _ string) []string { return []string{"rsync", "-a", "./", dst + "/"} }, true, "none", true},
	{"diff -rq against a local copy", func(src, _, ref string) []string { return []string{"diff", "-rq", src, ref} }, false, "none", true},
	{"find . | wc -l", func(_, _, _ string) []string { return []string{"find", "."} }, false, "lines", true},
	{"ls -lR", func(_, _, _ string) []string { return []string{"ls", "-lR"} }, false, "", false},
}

func (s *Suite) runSmallFiles(ctx context.Context) error {
	for _, c := range []struct {
		d      *Dataset
		what   string
		target float64 // the ratio each tool must stay within; 0 for none
	}{
		{&Files100k, "100,000 tiny files", 2},
		{&Files64k, "10,000 files of 64 KiB", 0},
	} {
		if err := s.smallFiles(ctx, c.d, c.what, c.target); err != nil {
			return fmt.Errorf("%s: %w", c.d.Name, err)
		}
	}
	return nil
}

func (s *Suite) smallFiles(ctx context.Context, d *Dataset, what string, target float64) error {
	g, err := s.dataset(ctx, d)
	if err != nil {
		return err
	}
	local, ref, err := s.localCopies(ctx, g)
	if err != nil {
		return err
	}
	dst := s.copyDir(g)
	group := fmt.Sprintf("Trees of %s: through the mount vs. a local copy", what)
	for _, tool := range treeTools {
		var ours, theirs, rss []float64
		var ourRun, localRun Run
		for range s.cfg.Runs {
			// Local and mounted runs alternate, so that a busy spell of
			// the machine costs both.
			if localRun, err = s.treeRun(ctx, tool, local, dst, ref); err != nil {
				return fmt.Errorf("%s on the local copy: %w", tool.what, err)
			}
			theirs = append(theirs, localRun.Wall.Seconds())
			r, err := mounted(ctx, func() (*Server, error) { return s.mount(ctx, g) }, func(srv *Server) error {
				var err error
				ourRun, err = s.treeRun(ctx, tool, g.ItemDir(srv.Dir), dst, local)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s through the mount: %w", tool.what, err)
			}
			ours = append(ours, ourRun.Wall.Seconds())
			rss = append(rss, float64(r.MaxRSS))
		}
		if err := sameResult(tool, localRun, ourRun); err != nil {
			return err
		}
		ratio := median(ours) / median(theirs)
		s.add(group, tool.what, fmt.Sprintf("%.2f×", ratio),
			fmt.Sprintf("mount %s, local %s; mount peak RSS %s", secs(median(ours)), secs(median(theirs)), mib(median(rss))))
		if target > 0 && tool.goal {
			name, _, _ := strings.Cut(tool.what, " (")
			s.target(fmt.Sprintf("%s over %s within %g× of a local copy", name, what, target), ratio, target, false, "×")
		}
	}
	counts, how, err := s.countRequests(ctx, g, treeTools[0], local)
	if err != nil {
		return err
	}
	s.add(group, "FUSE requests per file, tar -c", perFile(counts, d.Shape.Files), requestNotes(counts, d.Shape.Files)+" ("+how+")")
	return nil
}

// copyDir is where cp -a and rsync -a write their copies of g's tree: on
// a tmpfs when /dev/shm is one, so that both sides time reading the tree
// rather than the disk's writes and discards (on this disk they made a
// local cp -a of 13 MB take 60 s one run and 10 s another); otherwise
// beside the dataset.
func (s *Suite) copyDir(g *Generated) string {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		if !s.copyNoted {
			s.copyNoted = true
			s.Notes = append(s.Notes, "cp -a and rsync -a write their copies to a tmpfs (/dev/shm), through the mount and from the local copy alike, so that they time reading rather than the disk's writes.")
		}
		return filepath.Join("/dev/shm", "backupfs-bench-copy-"+g.Name)
	}
	return filepath.Join(filepath.Dir(g.Repo), "copy")
}

// treeRun runs a tool over the tree src once.
func (s *Suite) treeRun(ctx context.Context, tool treeTool, src, dst, ref string) (Run, error) {
	if tool.copies {
		if err := os.RemoveAll(dst); err != nil {
			return Run{}, err
		}
		// The last run's copy is written back now, not while this one runs.
		unix.Sync()
	}
	r, err := runTool(ctx, src, tool.argv(src, dst, ref)...)
	if tool.copies {
		if rerr := os.RemoveAll(dst); err == nil {
			err = rerr
		}
	}
	return r, err
}

// sameResult checks that the tool saw the same tree both ways.
func sameResult(tool treeTool, local, ours Run) error {
	switch tool.same {
	case "out":
		if local.Out != ours.Out {
			return fmt.Errorf("%s wrote %d bytes from the local copy, %d through the mount: the trees differ", tool.what, local.Out, ours.Out)
		}
	case "lines":
		if local.Lines != ours.Lines {
			return fmt.Errorf("%s listed %d entries in the local copy, %d through the mount", tool.what, local.Lines, ours.Lines)
		}
	case "none":
		if local.Out != 0 || ours.Out != 0 {
			return fmt.Errorf("%s printed %d bytes locally, %d through the mount: the trees differ", tool.what, local.Out, ours.Out)
		}
	}
	return nil
}

// localCopies returns two local copies of the dataset's first item (the
// second for diff to compare the first with), extracting them on first
// use, and reads them into the page cache.
func (s *Suite) localCopies(ctx context.Context, g *Generated) (local, ref string, err error) {
	base := filepath.Dir(g.Repo)
	local, ref = filepath.Join(base, "local"), filepath.Join(base, "local-ref")
	stamp := filepath.Join(base, "local-complete")
	if _, err := os.Stat(stamp); err != nil {
		s.cfg.Logf("extracting a local copy of dataset %s with backupfs cat | tar -x", g.Name)
		for _, dir := range []string{local, ref} {
			if err := os.RemoveAll(dir); err != nil {
				return "", "", err
			}
		}
		if err := os.Mkdir(local, 0o755); err != nil {
			return "", "", err
		}
		if err := s.extract(ctx, g, local); err != nil {
			return "", "", err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-a", local, ref).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("cp -a %s %s: %w: %s", local, ref, err, firstLine(string(out)))
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			return "", "", err
		}
	}
	for _, dir := range []string{local, ref} {
		if err := warmFiles(dir); err != nil {
			return "", "", err
		}
	}
	return local, ref, nil
}

// extract writes the first item's tree into dir: backupfs cat's tar
// stream, unpacked by tar.
func (s *Suite) extract(ctx context.Context, g *Generated, dir string) error {
	cat := exec.CommandContext(ctx, s.cfg.Backupfs, "cat", "--repo", g.Repo, "--key", g.Key, g.Item)
	untar := exec.CommandContext(ctx, "tar", "-xf", "-", "-C", dir)
	var catErr, tarErr bytes.Buffer
	cat.Stderr, untar.Stderr = &catErr, &tarErr
	pipe, err := cat.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	if err := cat.Start(); err != nil {
		return err
	}
	if err := untar.Run(); err != nil {
		_ = cat.Process.Kill()
		_ = cat.Wait()
		return fmt.Errorf("tar -x: %w: %s", err, firstLine(tarErr.String()))
	}
	if err := cat.Wait(); err != nil {
		return fmt.Errorf("backupfs cat: %w: %s", err, firstLine(catErr.String()))
	}
	return nil
}

// countRequests runs the tool once through a fresh mount and counts the
// FUSE requests it cost, by kind: from the kernel's own tracepoint
// (fuse:fuse_request_send, counted by perf stat for this mount's
// connection alone) when perf is installed, which costs the mount nothing;
// otherwise from the log of a mount run with --debug, which slows the mount
// down and so may count a few more reads than a normal run makes.
func (s *Suite) countRequests(ctx context.Context, g *Generated, tool treeTool, ref string) (counts map[string]int64, how string, err error) {
	dst := s.copyDir(g)
	if perf, err := exec.LookPath("perf"); err == nil {
		srv, err := s.mount(ctx, g)
		if err != nil {
			return nil, "", err
		}
		counts, err := perfCount(ctx, perf, srv.Dir, func() error {
			_, err := s.treeRun(ctx, tool, g.ItemDir(srv.Dir), dst, ref)
			return err
		})
		if _, serr := srv.Stop(); err == nil {
			err = serr
		}
		if err == nil {
			return counts, "counted by the kernel's fuse_request_send tracepoint", nil
		}
		s.cfg.Logf("   counting requests with perf failed (%v); counting them in a --debug log instead", err)
	}
	c := &opCounter{counts: map[string]int64{}}
	srv, err := startServerLogging(ctx, s.cfg.Work, c, append(s.mountArgv(g), "--debug")...)
	if err != nil {
		return nil, "", err
	}
	_, err = s.treeRun(ctx, tool, g.ItemDir(srv.Dir), dst, ref)
	if _, serr := srv.Stop(); err == nil {
		err = serr
	}
	return c.counts, "counted in the log of a separate run with --debug", err
}

// fuseOpcodes are the requests counted by name; the rest are counted as
// OTHER.
var fuseOpcodes = []struct {
	code int
	name string
}{
	{1, "LOOKUP"}, {2, "FORGET"}, {3, "GETATTR"}, {5, "READLINK"}, {14, "OPEN"}, {15, "READ"},
	{17, "STATFS"}, {18, "RELEASE"}, {22, "GETXATTR"}, {23, "LISTXATTR"}, {25, "FLUSH"},
	{27, "OPENDIR"}, {28, "READDIR"}, {29, "RELEASEDIR"}, {34, "ACCESS"}, {36, "INTERRUPT"},
	{42, "BATCH_FORGET"}, {44, "READDIRPLUS"}, {46, "LSEEK"}, {52, "STATX"},
}

// perfCount counts the FUSE requests sent to the mount on dir while fn
// runs, with perf stat on the kernel's fuse_request_send tracepoint
// filtered to the mount's connection.
func perfCount(ctx context.Context, perf, dir string, fn func() error) (map[string]int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, err
	}
	// The connection is the superblock's anonymous device: major 0.
	conn := unix.Minor(st.Dev)
	out, err := os.CreateTemp("", "backupfs-bench-perf-")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	args := []string{"stat", "-a", "-x,", "-o", out.Name()}
	for _, op := range fuseOpcodes {
		args = append(args, "-e", "fuse:fuse_request_send", "--filter", fmt.Sprintf("connection == %d && opcode == %d", conn, op.code))
	}
	args = append(args, "-e", "fuse:fuse_request_send", "--filter", fmt.Sprintf("connection == %d", conn))
	cmd := exec.CommandContext(ctx, perf, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// perf stat counts from when its events are set up; give it time.
	time.Sleep(500 * time.Millisecond)
	ferr := fn()
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait() // perf stat exits by the signal
	if ferr != nil {
		return nil, ferr
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	var values []int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || !strings.HasPrefix(f[2], "fuse:") {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("perf stat: %q: %w (%s)", line, err, firstLine(stderr.String()))
		}
		values = append(values, n)
	}
	if len(values) != len(fuseOpcodes)+1 {
		return nil, fmt.Errorf("perf stat gave %d counts for %d events: %s", len(values), len(fuseOpcodes)+1, firstLine(stderr.String()))
	}
	counts := map[string]int64{}
	other := values[len(fuseOpcodes)]
	for i, op := range fuseOpcodes {
		if values[i] > 0 {
			counts[op.name] = values[i]
		}
		other -= values[i]
	}
	if other > 0 {
		counts["OTHER"] = other
	}
	return counts, nil
}

// opCounter counts go-fuse's request lines ("rx 42: LOOKUP n1 …") by
// opcode in the log written to it. It is used from one goroutine.
type opCounter struct {
	counts  map[string]int64
	partial []byte
}

func (c *opCounter) Write(p []byte) (int, error) {
	data := p
	if len(c.partial) > 0 {
		data = append(c.partial, p...)
	}
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		c.line(data[:i])
		data = data[i+1:]
	}
	c.partial = append(c.partial[:0], data...)
	return len(p), nil
}

func (c *opCounter) line(l []byte) {
	i := bytes.Index(l, []byte("rx "))
	if i < 0 {
		return
	}
	rest := l[i+3:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	if j == 0 || !bytes.HasPrefix(rest[j:], []byte(": ")) {
		return
	}
	rest = rest[j+2:]
	k := 0
	for k < len(rest) && (rest[k] >= 'A' && rest[k] <= 'Z' || rest[k] == '_') {
		k++
	}
	if k > 0 {
		c.counts[string(rest[:k])]++
	}
}

// perFile is the round trips per file: every request but the FORGETs,
// which the kernel sends without waiting for an answer.
func perFile(counts map[string]int64, files int) string {
	var total int64
	for op, n := range counts {
		if op != "FORGET" && op != "BATCH_FORGET" {
			total += n
		}
	}
	return fmt.Sprintf("%.2f", float64(total)/float64(files))
}

// requestNotes lists the kinds of request per file, most frequent first.
func requestNotes(counts map[string]int64, files int) string {
	ops := make([]string, 0, len(counts))
	for op := range counts {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool {
		if counts[ops[i]] != counts[ops[j]] {
			return counts[ops[i]] > counts[ops[j]]
		}
		return ops[i] < ops[j]
	})
	var parts []string
	for _, op := range ops {
		if per := float64(counts[op]) / float64(files); per >= 0.005 {
			parts = append(parts, op+" "+strconv.FormatFloat(per, 'f', 2, 64))
		}
	}
	return "per file: " + strings.Join(parts, ", ")
}
