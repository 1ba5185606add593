package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/backupfs/backupfs/internal/slowlink"
	"github.com/backupfs/backupfs/internal/sshtest"
	"github.com/backupfs/backupfs/internal/testrepo"
)

// The remote group reads the datasets through a real sshd whose
// ForceCommand runs the genuine `bupstash serve`, with internal/slowlink
// between ssh and sshd making the link slow: RemoteDelay each way and
// RemoteRate bytes per second each way. The reference is the genuine
// client over the same link in the same run.

const (
	// RemoteDelay is the link's one-way delay: 25 ms round trips.
	RemoteDelay = 12500 * time.Microsecond
	// RemoteRate is the link's bandwidth each way: 200 Mbit/s.
	RemoteRate = 25_000_000
)

// Remote datasets: mount start on 1,000 items, and the first ls of a
// snapshot of 100,000 entries.
var (
	Items1k = Dataset{
		Name:  "items1k",
		About: "1,000 snapshots of 5 files each",
		Shape: testrepo.Shape{Seed: 17, Files: 5, FilesPerDir: 5, Depth: 1},
		Items: 1000,
	}
	Entries100k = Dataset{
		Name:  "entries100k",
		About: "1 snapshot of 100,000 entries (96,000 small files)",
		Shape: testrepo.Shape{Seed: 18, Files: 96_000, FilesPerDir: 24, Depth: 6, Sizes: testrepo.LogNormal{Median: 512, Sigma: 1, Max: 64 << 10}},
		Items: 1,
	}
)

// remoteSetup is sshd serving the datasets, and a slow link to it.
type remoteSetup struct {
	srv  *sshtest.Server
	link *slowlink.Link
	work string
}

func (s *Suite) startRemote() (*remoteSetup, error) {
	if s.cfg.Bupstash == "" {
		return nil, errors.New("no genuine bupstash binary (-bupstash, or BACKUPFS_BUPSTASH_TOOLS)")
	}
	work, err := os.MkdirTemp(s.cfg.Work, "sshd-")
	if err != nil {
		return nil, err
	}
	// The repository comes from the path the client asks for, as a
	// ForceCommand wrapper would take it: `bupstash serve PATH`.
	script := filepath.Join(work, "serve.sh")
	body := fmt.Sprintf("#!/bin/sh\neval \"set -- $SSH_ORIGINAL_COMMAND\"\nexec %s serve \"$3\"\n", s.cfg.Bupstash)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return nil, err
	}
	srv, err := sshtest.Launch(work, script)
	if err != nil {
		return nil, err
	}
	link, err := slowlink.Listen(fmt.Sprintf("127.0.0.1:%d", srv.Port), RemoteDelay, RemoteRate)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	if err := srv.Trust(link.Port()); err != nil {
		link.Close()
		srv.Stop()
		return nil, err
	}
	return &remoteSetup{srv: srv, link: link, work: work}, nil
}

func (r *remoteSetup) stop() {
	r.link.Close()
	r.srv.Stop()
	os.RemoveAll(r.work)
}

// url is the repository's address, through the slow link or straight to
// sshd.
func (r *remoteSetup) url(repo string, slow bool) string {
	port := r.srv.Port
	if slow {
		port = r.link.Port()
	}
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", r.srv.User, port, repo)
}

// sshCommand is the BUPSTASH_REPOSITORY_COMMAND the genuine client uses
// over the slow link.
func (r *remoteSetup) sshCommand(repo string) string {
	args := []string{"ssh", "-T", "-p", strconv.Itoa(r.link.Port()), "-o", "BatchMode=yes"}
	for _, o := range r.srv.Options {
		args = append(args, "-o", o)
	}
	return strings.Join(append(args, r.srv.User+"@127.0.0.1", "bupstash", "serve", repo), " ")
}

// mountRemote mounts a dataset through ssh, with extra flags.
func (s *Suite) mountRemote(ctx context.Context, r *remoteSetup, g *Generated, slow bool, extra ...string) (*Server, error) {
	argv := []string{s.cfg.Backupfs, "mount", "--repo", r.url(g.Repo, slow), "--key", g.Key, "--name", "repo",
		"--cache-size", strconv.FormatInt(s.cfg.CacheSize, 10)}
	for _, o := range r.srv.Options {
		argv = append(argv, "--ssh-option", o)
	}
	return startServer(ctx, s.cfg.Work, append(argv, extra...)...)
}

var closedRE = regexp.MustCompile(`remote repository closed \(.*requests (\d+), chunks_fetched (\d+), bytes_fetched (\d+)`)

// remoteCounts reads what a stopped mount fetched from its closing line.
func remoteCounts(log string) (requests, chunks, bytes int64, err error) {
	m := closedRE.FindStringSubmatch(log)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("no closing line in the mount's log: %s", firstLine(log))
	}
	requests, _ = strconv.ParseInt(m[1], 10, 64)
	chunks, _ = strconv.ParseInt(m[2], 10, 64)
	bytes, _ = strconv.ParseInt(m[3], 10, 64)
	return requests, chunks, bytes, nil
}

func (s *Suite) runRemote(ctx context.Context) error {
	if s.cfg.Bupstash == "" && len(s.cfg.Only) == 0 {
		s.Notes = append(s.Notes, "The remote group did not run: it needs genuine bupstash 0.12.1 (-bupstash, or BACKUPFS_BUPSTASH_TOOLS).")
		return nil
	}
	large, err := s.dataset(ctx, &Large)
	if err != nil {
		return err
	}
	r, err := s.startRemote()
	if err != nil {
		return err
	}
	defer r.stop()
	const group = "Remote (ssh, 25 ms RTT, 200 Mbit/s)"
	rate := float64(RemoteRate)
	s.Notes = append(s.Notes, "Remote figures: the genuine bupstash 0.12.1 serve behind a real sshd; internal/slowlink between ssh and sshd adds 12.5 ms each way and caps each direction at 25 MB/s (200 Mbit/s). Stored bytes are those that crossed the link towards the client.")

	// Cold cat of huge.bin through a fresh mount (empty disk cache), and
	// the genuine client's `bupstash get --pick` of the same file over the
	// same link; then a second mount on the same disk cache.
	var catWall, catRate, steadyRate, getWall []float64
	var secondChunks int64
	var secondWall float64
	for run := range s.cfg.Runs {
		cacheDir, err := os.MkdirTemp(s.cfg.Work, "remote-cache-")
		if err != nil {
			return err
		}
		_, down0 := r.link.Carried()
		var c Run
		_, err = mounted(ctx, func() (*Server, error) {
			return s.mountRemote(ctx, r, large, true, "--remote-cache-dir", cacheDir)
		}, func(srv *Server) error {
			var err error
			c, err = runTool(ctx, "", "cat", filepath.Join(large.ItemDir(srv.Dir), hugeFile))
			return err
		})
		if err != nil {
			os.RemoveAll(cacheDir)
			return err
		}
		_, down1 := r.link.Carried()
		catWall = append(catWall, c.Wall.Seconds())
		catRate = append(catRate, float64(down1-down0)/c.Wall.Seconds())
		// From the first byte out: the transfer itself, without the
		// connection set up (ssh, the index) before it.
		steadyRate = append(steadyRate, float64(down1-down0)/(c.Wall-c.First).Seconds())

		g, err := runToNull(ctx, "", "env", "-i", "PATH="+os.Getenv("PATH"), "HOME="+r.work,
			"BUPSTASH_REPOSITORY_COMMAND="+r.sshCommand(large.Repo), "BUPSTASH_KEY="+large.Key,
			"BUPSTASH_QUERY_CACHE="+filepath.Join(cacheDir, "bupstash-query-cache"),
			s.cfg.Bupstash, "get", "--pick", hugeFile, "id="+large.Item)
		if err != nil {
			os.RemoveAll(cacheDir)
			return err
		}
		getWall = append(getWall, g.Wall.Seconds())

		if run == 0 {
			var c2 Run
			srv, err := s.mountRemote(ctx, r, large, true, "--remote-cache-dir", cacheDir)
			if err != nil {
				os.RemoveAll(cacheDir)
				return err
			}
			c2, cerr := runToNull(ctx, "", "cat", filepath.Join(large.ItemDir(srv.Dir), hugeFile))
			_, serr := srv.Stop()
			if err := errors.Join(cerr, serr); err != nil {
				os.RemoveAll(cacheDir)
				return err
			}
			if _, secondChunks, _, err = remoteCounts(srv.Log()); err != nil {
				os.RemoveAll(cacheDir)
				return err
			}
			secondWall = c2.Wall.Seconds()
		}
		os.RemoveAll(cacheDir)
	}
	s.add(group, "cold cat of huge.bin (1 GiB) through a fresh mount", secs(median(catWall)),
		fmt.Sprintf("stored bytes crossed at %.1f MB/s (%.0f%% of the link); from the first byte out, %.1f MB/s (%.0f%%)",
			median(catRate)/1e6, 100*median(catRate)/rate, median(steadyRate)/1e6, 100*median(steadyRate)/rate))
	s.add(group, "bupstash get --pick huge.bin (genuine client, same link)", secs(median(getWall)), "the reference")
	s.add(group, "second mount, same disk cache: cat of huge.bin", secs(secondWall), fmt.Sprintf("%d chunks fetched", secondChunks))
	s.target("remote cold read: stored bytes at ≥ 90% of the link's bandwidth (from the first byte out)", median(steadyRate)/rate, 0.9, true, "×")
	s.target("remote cold read finishes no later than bupstash get (ratio: mount / get)", median(catWall)/median(getWall), 1, false, "×")
	s.target("second mount fetches no chunk already cached", float64(secondChunks), 0, false, "chunks")

	if err := s.remoteRandomRead(ctx, r, large, group); err != nil {
		return err
	}
	if err := s.remoteMountStart(ctx, r, group); err != nil {
		return err
	}
	if err := s.remoteFirstLs(ctx, r, group); err != nil {
		return err
	}
	return s.remoteLocalRatio(ctx, r, large)
}

// remoteRandomRead reads 4 KiB at a random offset of cold files: a
// small file of the 100,000-entry snapshot, and the 1 GiB huge.bin.
// Each mount first loads the index and opens a pull session (a read of
// another file), so that what is counted is the read alone: round trips
// over the link and bytes received.
func (s *Suite) remoteRandomRead(ctx context.Context, r *remoteSetup, large *Generated, group string) error {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	coldRead := func(g *Generated, warm, target string, size int64) (turns, bytes int64, wall time.Duration, err error) {
		srv, err := s.mountRemote(ctx, r, g, true, "--remote-cache-size", "0")
		if err != nil {
			return 0, 0, 0, err
		}
		defer srv.Stop()
		dir := g.ItemDir(srv.Dir)
		w, err := os.Open(filepath.Join(dir, warm))
		if err != nil {
			return 0, 0, 0, err
		}
		_, err = w.ReadAt(make([]byte, 4096), 0)
		w.Close()
		if err != nil {
			return 0, 0, 0, err
		}
		f, err := os.Open(filepath.Join(dir, target))
		if err != nil {
			return 0, 0, 0, err
		}
		defer f.Close()
		off := rng.Int64N(max(size-4096, 1))
		t0 := r.link.Turns()
		_, d0 := r.link.Carried()
		start := time.Now()
		if _, err := f.ReadAt(make([]byte, min(4096, size)), off); err != nil {
			return 0, 0, 0, err
		}
		wall = time.Since(start)
		_, d1 := r.link.Carried()
		return r.link.Turns() - t0, d1 - d0, wall, nil
	}

	g, err := s.dataset(ctx, &Entries100k)
	if err != nil {
		return err
	}
	files, err := filesOf(g.Dataset)
	if err != nil {
		return err
	}
	var warm string
	var candidates []fileOf
	for _, f := range files {
		switch {
		case warm == "" && f.size >= 4096:
			warm = f.path
		case warm != "" && f.size >= 16<<10:
			candidates = append(candidates, f)
		}
	}
	if len(candidates) == 0 {
		return errors.New("no file of 16 KiB or more in the 100,000-entry snapshot")
	}
	pick := candidates[rng.IntN(len(candidates))]
	target, size := pick.path, pick.size
	turns, bytes, wall, err := coldRead(g, warm, target, size)
	if err != nil {
		return err
	}
	s.add(group, fmt.Sprintf("random 4 KiB read of a cold file (%s)", sizeOf(size)), fmt.Sprintf("%d round trips", turns),
		fmt.Sprintf("%s received, %s", sizeOf(bytes), secs(wall.Seconds())))
	s.target("random 4 KiB read of a cold file: ≤ 3 round trips plus one leaf", float64(turns), 3, false, "round trips")

	others, err := filesOf(large.Dataset)
	if err != nil {
		return err
	}
	for _, f := range others {
		if f.path != hugeFile {
			warm = f.path
			break
		}
	}
	// Round trips are not counted here: ssh's window adjustments during
	// the transfer would count as such.
	_, bytes, wall, err = coldRead(large, warm, hugeFile, 1<<30)
	if err != nil {
		return err
	}
	s.add(group, "random 4 KiB read of cold huge.bin (1 GiB)", secs(wall.Seconds()),
		fmt.Sprintf("%s received: the leaves before the offset come too, their lengths locate it", sizeOf(bytes)))
	return nil
}

type fileOf struct {
	path string
	size int64
}

// filesOf lists the regular files of d's first item, in index order.
func filesOf(d *Dataset) ([]fileOf, error) {
	src := d.ItemShape(0).Source()
	var out []fileOf
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if e.IsRegular() {
			out = append(out, fileOf{e.Path, e.Size()})
		}
	}
}

func sizeOf(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// remoteMountStart times a mount of 1,000 items over the link until ls
// ids/ lists them, against the same mount of the directory.
func (s *Suite) remoteMountStart(ctx context.Context, r *remoteSetup, group string) error {
	g, err := s.dataset(ctx, &Items1k)
	if err != nil {
		return err
	}
	measure := func(start func() (*Server, error)) (float64, error) {
		var walls []float64
		for range s.cfg.Runs {
			srv, err := start()
			if err != nil {
				return 0, err
			}
			t, lerr := runTool(ctx, filepath.Join(srv.Dir, "repo", "ids"), "ls")
			_, serr := srv.Stop()
			if err := errors.Join(lerr, serr); err != nil {
				return 0, err
			}
			if t.Lines != int64(g.Items) {
				return 0, fmt.Errorf("ids/ lists %d items, the repository has %d", t.Lines, g.Items)
			}
			walls = append(walls, (srv.Ready + t.Wall).Seconds())
		}
		return median(walls), nil
	}
	remote, err := measure(func() (*Server, error) { return s.mountRemote(ctx, r, g, true, "--remote-cache-size", "0") })
	if err != nil {
		return err
	}
	local, err := measure(func() (*Server, error) { return s.mount(ctx, g) })
	if err != nil {
		return err
	}
	s.add(group, "mount start on 1,000 items, until ls ids/ has listed them", secs(remote), fmt.Sprintf("local directory: %s", secs(local)))
	return nil
}

// remoteFirstLs times the first ls of a 100,000-entry snapshot's root
// through a fresh mount (its index crosses the link), against the local
// figure.
func (s *Suite) remoteFirstLs(ctx context.Context, r *remoteSetup, group string) error {
	g, err := s.dataset(ctx, &Entries100k)
	if err != nil {
		return err
	}
	measure := func(start func() (*Server, error)) (float64, int64, error) {
		var walls []float64
		var down int64
		for range s.cfg.Runs {
			_, d0 := r.link.Carried()
			var t Run
			_, err := mounted(ctx, start, func(srv *Server) error {
				var err error
				t, err = runTool(ctx, g.ItemDir(srv.Dir), "ls")
				return err
			})
			if err != nil {
				return 0, 0, err
			}
			_, d1 := r.link.Carried()
			walls = append(walls, t.Wall.Seconds())
			down = d1 - d0
		}
		return median(walls), down, nil
	}
	remote, down, err := measure(func() (*Server, error) { return s.mountRemote(ctx, r, g, true, "--remote-cache-size", "0") })
	if err != nil {
		return err
	}
	local, _, err := measure(func() (*Server, error) { return s.mount(ctx, g) })
	if err != nil {
		return err
	}
	s.add(group, fmt.Sprintf("first ls of a %d-entry snapshot's root", g.Entries), secs(remote),
		fmt.Sprintf("%s crossed the link (mount included); local directory: %s", sizeOf(down), secs(local)))
	return nil
}

// remoteLocalRatio compares, with no delay, cat of huge.bin through an
// ssh:// mount straight to sshd with the same through a mount of the
// directory, in the same run.
func (s *Suite) remoteLocalRatio(ctx context.Context, r *remoteSetup, g *Generated) error {
	var viaSSH, local []float64
	for range s.cfg.Runs {
		for _, remote := range []bool{true, false} {
			start := func() (*Server, error) { return s.mount(ctx, g) }
			if remote {
				start = func() (*Server, error) { return s.mountRemote(ctx, r, g, false, "--remote-cache-size", "0") }
			}
			var c Run
			_, err := mounted(ctx, start, func(srv *Server) error {
				var err error
				c, err = runToNull(ctx, "", "cat", filepath.Join(g.ItemDir(srv.Dir), hugeFile))
				return err
			})
			if err != nil {
				return err
			}
			mb := float64(int64(1)<<30) / c.Wall.Seconds() / 1e6
			if remote {
				viaSSH = append(viaSSH, mb)
			} else {
				local = append(local, mb)
			}
		}
	}
	const group = "Remote, no delay (ssh to sshd on this machine)"
	s.add(group, "cold cat of huge.bin through an ssh:// mount", mbps(median(viaSSH)), "MB/s")
	s.add(group, "cold cat of huge.bin through a mount of the directory", mbps(median(local)), "MB/s")
	s.target("cat through an ssh:// mount (no delay) at least 70% of the local figure", median(viaSSH)/median(local), 0.7, true, "×")
	return nil
}
