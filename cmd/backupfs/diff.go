package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/backupfs/backupfs/internal/treediff"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// diffFlags are diff's command line, bupstash diff's where it has them.
type diffFlags struct {
	rf                  repoFlags
	qf                  queryFlags
	ignore              string
	relaxed, json       bool
	format              string
	leftPick, rightPick string
	xattrs              bool
	indexerThreads      int
}

func newDiffCommand(e *env) *cobra.Command {
	df := &diffFlags{}
	c := &cobra.Command{
		Use:   "diff [flags] QUERY1... :: QUERY2...",
		Short: "Compare two snapshots, or a snapshot and a local directory, as bupstash diff does",
		Long: `Compare two snapshots, or a snapshot and a live directory, as bupstash diff
does: entries are matched by path and compared by their metadata and by the
content hashes saved in the index; no backup data is read. A side whose first
word starts with ./ or / is a local directory (or several), indexed as
bupstash indexes it, each regular file hashed with plain BLAKE3 as Bupstash's
index hashes content (no key is involved). Any other side names one snapshot,
as ls does:

` + itemHelp + `

Each entry only on the left is printed as "- ENTRY", each only on the right
as "+ ENTRY", and one that differs twice, "- old" then "+ new", in bupstash's
listing format (mode, size, change time, path) or, with --json, as bupstash
list-contents --format=jsonl1 lines: byte for byte what bupstash diff prints.

    backupfs diff name=home.tar and newer-than 1d :: ./home
    backupfs diff --relaxed fdd75e29 :: 48a22dd8

Exit status as diff(1): 0 when the trees are the same, 1 when they differ, 2 on
trouble (and the statuses of other failures, listed in backupfs --help).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return diffStatus(runDiff(c.Context(), e, df, args))
		},
	}
	fs := c.Flags()
	df.rf.register(fs)
	df.qf.register(fs)
	fs.Lookup("utc-timestamps").Usage = "show change times, and match the timestamp pseudo-tag, in UTC rather than local time, as bupstash does with this flag"
	df.register(fs)
	return c
}

func (df *diffFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&df.ignore, "ignore", "i", "", "comma-separated `ATTRIBUTES` to leave out of comparisons: content (or file-content), dev, devnos, inode, type, perms, nlink, uid, gid, times, xattrs (default: none)")
	fs.BoolVar(&df.relaxed, "relaxed", false, "ignore what differs between machines more than between contents: dev, inode, nlink, uid, gid, times, xattrs")
	fs.BoolVar(&df.json, "json", false, "print bupstash's jsonl1 lines, as --format=jsonl1 does")
	fs.StringVar(&df.format, "format", "human", "output `FORMAT`, human or jsonl1, as bupstash diff's")
	fs.StringVar(&df.leftPick, "left-pick", "", "compare only this `DIR` of the left side (default: all of it)")
	fs.StringVar(&df.rightPick, "right-pick", "", "compare only this `DIR` of the right side (default: all of it)")
	fs.BoolVar(&df.xattrs, "xattrs", false, "read extended attributes when indexing a local directory")
	fs.IntVar(&df.indexerThreads, "indexer-threads", 0, "`N` threads to stat and hash a local directory with (default 0: one per processor)")
}

// diffStatus gives diff's failures diff(1)'s status for trouble, 2, where
// they would otherwise get 1, which diff keeps for "the trees differ".
func diffStatus(err error) error {
	if err != nil && exitCode(err) == exitFatal {
		return withCode(exitUsage, err)
	}
	return err
}

func runDiff(ctx context.Context, e *env, df *diffFlags, args []string) error {
	opts := treediff.Options{Location: df.qf.location(e)}
	switch df.format {
	case "human":
	case "jsonl1", "jsonl":
		opts.Format = treediff.JSONL1
	default:
		return usageError("--format wants human or jsonl1, not %q", df.format)
	}
	if df.json {
		opts.Format = treediff.JSONL1
	}
	if df.relaxed {
		opts.Ignore |= treediff.Relaxed
	}
	if df.ignore != "" {
		ig, err := treediff.ParseIgnore(df.ignore)
		if err != nil {
			return usageError("--ignore: %v", err)
		}
		opts.Ignore |= ig
	}
	if df.indexerThreads < 0 {
		return usageError("--indexer-threads wants a number of threads, not %d", df.indexerThreads)
	}
	sides, err := diffSides(args)
	if err != nil {
		return err
	}

	var repo *bupstash.Repository // opened for the first side that is an item
	var idx [2]*treediff.Index
	for i, words := range sides {
		if isLocalSide(words) {
			idx[i], err = treediff.Live(ctx, words, treediff.LiveOptions{Xattrs: df.xattrs, Workers: df.indexerThreads})
			if err != nil {
				return fmt.Errorf("indexing %s: %w", strings.Join(words, " "), err)
			}
			continue
		}
		spec, err := parseItemSpec(words)
		if err != nil {
			return err
		}
		if repo == nil {
			if repo, err = df.rf.open(ctx, e); err != nil {
				return err
			}
		}
		it, err := selectItem(ctx, e, repo, spec, df.qf.env(e))
		if err != nil {
			return err
		}
		if idx[i], err = snapshotIndex(ctx, repo, it); err != nil {
			return err
		}
	}
	for i, dir := range []string{df.leftPick, df.rightPick} {
		if dir == "" {
			continue
		}
		if idx[i], err = idx[i].Pick(ctx, dir); err != nil {
			return err
		}
	}
	changed, err := treediff.Write(ctx, e.stdout, idx[0], idx[1], opts)
	if err != nil {
		return err
	}
	if changed {
		return answer(1)
	}
	return nil
}

// diffSides splits the arguments at "::" into two non-empty sides.
func diffSides(args []string) ([2][]string, error) {
	var sides [2][]string
	n := 0
	for _, a := range args {
		if a == "::" {
			n++
			if n > 1 {
				break
			}
			continue
		}
		sides[n] = append(sides[n], a)
	}
	if n != 1 || len(sides[0]) == 0 || len(sides[1]) == 0 {
		return sides, usageError("want two queries (or local directories) separated by '::'")
	}
	return sides, nil
}

// isLocalSide reports a side that names local paths, as bupstash tells
// them from queries: by a first word starting with ./ or /.
func isLocalSide(words []string) bool {
	return strings.HasPrefix(words[0], "./") || strings.HasPrefix(words[0], "/")
}

// snapshotIndex reads an item's index into memory, for diff.
func snapshotIndex(ctx context.Context, r *bupstash.Repository, it *bupstash.Item) (*treediff.Index, error) {
	if !it.HasIndex() {
		return nil, fmt.Errorf("item %s %w", it.ID, errNotSnapshot)
	}
	idx, err := r.OpenItem(it).Index()
	if err != nil {
		return nil, fmt.Errorf("item %s: %w", it.ID, err)
	}
	defer idx.Close()
	x, err := treediff.Collect(ctx, idx)
	if err != nil {
		return nil, fmt.Errorf("item %s: %w", it.ID, err)
	}
	return x, nil
}
