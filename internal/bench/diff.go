package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
)

// The diff group compares `backupfs diff` with genuine `bupstash diff`
// on the same work: a snapshot of the Diff dataset against a live tree
// restored from it by genuine bupstash and then changed ("diff a backup
// against production"). Both index the live tree, hashing every regular
// file, and decode the snapshot's index; neither reads backup data. The
// two outputs are checked to be byte-identical before anything is timed.

// liveChanges are what the live tree gets after being restored: every
// liveChangeEvery-th regular file (in walk order) gets a line appended,
// one file is removed and one added, so that the diff has output.
const liveChangeEvery = 1000

func (s *Suite) runDiff(ctx context.Context) error {
	if s.cfg.Bupstash == "" {
		if len(s.cfg.Only) == 0 {
			s.Notes = append(s.Notes, "The diff group did not run: it needs genuine bupstash 0.12.1 (-bupstash, or BACKUPFS_BUPSTASH_TOOLS).")
			return nil
		}
		return errors.New("needs genuine bupstash 0.12.1 as the reference: give -bupstash or set BACKUPFS_BUPSTASH_TOOLS")
	}
	g, err := s.dataset(ctx, &Diff)
	if err != nil {
		return err
	}
	live, err := s.liveTree(ctx, g)
	if err != nil {
		return err
	}
	if err := warmFiles(live); err != nil {
		return err
	}
	threads := strconv.Itoa(runtime.NumCPU())
	ours := []string{s.cfg.Backupfs, "diff", "--repo", g.Repo, "--key", g.Key, "--relaxed", "--indexer-threads", threads,
		"--cache-size", strconv.FormatInt(s.cfg.CacheSize, 10), "id=" + g.Item, "::", live}
	theirs := []string{s.cfg.Bupstash, "diff", "-r", g.Repo, "-k", g.Key, "--query-cache", filepath.Join(s.cfg.Work, "diff-query-cache"),
		"--relaxed", "--indexer-threads", threads, "id=" + g.Item, "::", live}

	// The same answer first (this also warms both).
	a, err := diffOutput(ctx, ours)
	if err != nil {
		return err
	}
	b, err := diffOutput(ctx, theirs)
	if err != nil {
		return err
	}
	if !bytes.Equal(a, b) || len(a) == 0 {
		return fmt.Errorf("backupfs diff printed %d bytes, bupstash diff %d: the outputs differ", len(a), len(b))
	}
	lines := bytes.Count(a, []byte{'\n'})

	var ourWall, theirWall, ourRSS, theirRSS []float64
	for range s.cfg.Runs {
		for _, side := range []struct {
			argv      []string
			wall, rss *[]float64
		}{{ours, &ourWall, &ourRSS}, {theirs, &theirWall, &theirRSS}} {
			r, err := runDiffTimed(ctx, side.argv)
			if err != nil {
				return err
			}
			*side.wall = append(*side.wall, r.Wall.Seconds())
			*side.rss = append(*side.rss, float64(r.MaxRSS))
		}
	}
	const group = "diff of a snapshot against a live tree"
	what := fmt.Sprintf("diff --relaxed of %d entries (%s of files) against the live tree", g.Entries, mib(float64(g.Bytes)))
	ratio := median(ourWall) / median(theirWall)
	s.add(group, what, fmt.Sprintf("%.2f×", ratio),
		fmt.Sprintf("backupfs %s (peak RSS %s), bupstash 0.12.1 %s (peak RSS %s); %s indexer threads each; identical output, %d lines",
			secs(median(ourWall)), mib(median(ourRSS)), secs(median(theirWall)), mib(median(theirRSS)), threads, lines))
	s.target("backupfs diff against a live tree no slower than bupstash diff", ratio, 1, false, "×")
	return nil
}

// diffOutput runs a diff and returns what it printed; exit status 1 is
// backupfs's "they differ", not a failure.
func diffOutput(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 && stderr.Len() == 0 {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", argv[1], err, firstLine(stderr.String()))
	}
	return out, nil
}

// runDiffTimed is runToNull accepting diff's exit status 1.
func runDiffTimed(ctx context.Context, argv []string) (Run, error) {
	r, err := runToNull(ctx, "", argv...)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		err = nil
	}
	return r, err
}

// liveTree returns the dataset's first item restored by genuine bupstash
// and then changed, creating it on first use (kept for later runs, like
// the dataset).
func (s *Suite) liveTree(ctx context.Context, g *Generated) (string, error) {
	base := filepath.Join(s.cfg.Work, Diff.fingerprint()+"-live")
	live, stamp := filepath.Join(base, "live"), filepath.Join(base, "complete")
	if _, err := os.Stat(stamp); err == nil {
		return live, nil
	}
	if err := os.RemoveAll(base); err != nil {
		return "", err
	}
	if err := os.MkdirAll(live, 0o755); err != nil {
		return "", err
	}
	s.cfg.Logf("restoring the diff dataset's snapshot into %s with genuine bupstash", live)
	restore := exec.CommandContext(ctx, s.cfg.Bupstash, "restore", "-r", g.Repo, "-k", g.Key,
		"--query-cache", filepath.Join(base, "query-cache"), "--into", live, "id="+g.Item)
	if out, err := restore.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bupstash restore: %w: %s", err, firstLine(string(out)))
	}
	n, removed := 0, ""
	err := filepath.WalkDir(live, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n++
		switch {
		case n%liveChangeEvery == 0:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("changed in production\n")
			return errors.Join(err, f.Close())
		case n%liveChangeEvery == liveChangeEvery/2 && removed == "":
			removed = p
		}
		return nil
	})
	if err == nil && removed != "" {
		err = os.Remove(removed)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(live, "added-in-production"), []byte("new\n"), 0o644)
	}
	if err != nil {
		return "", err
	}
	return live, os.WriteFile(stamp, nil, 0o644)
}
