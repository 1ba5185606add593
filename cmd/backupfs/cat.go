package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/backupfs/backupfs/internal/dump"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/spf13/cobra"
)

func newCatCommand(e *env) *cobra.Command {
	var (
		rf repoFlags
		qf queryFlags
	)
	c := &cobra.Command{
		Use:   "cat [flags] ITEM [PATH]",
		Short: "Write an item's data, or a file inside it, to standard output",
		Long: `Write to standard output a raw item's data, one file of a snapshot (PATH), or a
whole snapshot as the tar stream bupstash get writes.

` + itemHelp,
		Args: wantArgs(1, -1, "want ITEM [PATH]"),
		RunE: func(c *cobra.Command, args []string) error {
			return runCat(c.Context(), e, &rf, qf.env(e), args)
		},
	}
	rf.register(c.Flags())
	qf.register(c.Flags())
	return c
}

func runCat(ctx context.Context, e *env, rf *repoFlags, qenv query.Env, args []string) error {
	spec, target, err := splitItemPath(args)
	if err != nil {
		return err
	}
	r, it, err := rf.findItem(ctx, e, spec, qenv)
	if err != nil {
		return err
	}
	o := r.OpenItem(it)
	asked := target
	target = cleanPath(target)
	// "file/" names a directory, as it does for the kernel.
	wantDir := target != "" && strings.HasSuffix(asked, "/")

	// Progress, for a large item written to a file or a pipe.
	what := "cat " + it.ID.String()[:8]
	if target != "" {
		what += " " + target
	}
	switch {
	case !it.HasIndex():
		if target != "" && target != it.FileName() {
			return fmt.Errorf("item %s: %s: %w", it.ID, target, errNoSuchPath)
		}
		if wantDir {
			return fmt.Errorf("item %s: %s: %w", it.ID, asked, bupstash.ErrNotDir)
		}
		f, err := o.Data()
		if err != nil {
			return err // names the item
		}
		p := e.startProgress(what, true, int64(it.DataSize), e.stdout)
		defer p.finish()
		_, err = f.NewReader().WriteToContext(ctx, p.writer(e.stdout))
		return err
	case target == "":
		// A whole snapshot: the same tar stream `bupstash get` writes,
		// whose size is known only once written.
		p := e.startProgress(what, true, -1, e.stdout)
		defer p.finish()
		return dump.Tar(ctx, o, p.writer(e.stdout))
	}

	ent, err := findEntry(ctx, o, target)
	if err != nil {
		return err
	}
	if wantDir && !ent.IsDir() {
		return fmt.Errorf("item %s: %s: %w", it.ID, asked, bupstash.ErrNotDir)
	}
	switch ent.Type() {
	case bupstash.ModeRegular:
	case bupstash.ModeDir:
		return fmt.Errorf("item %s: %s: is a directory", it.ID, target)
	case bupstash.ModeSymlink:
		return fmt.Errorf("item %s: %s: is a symbolic link to %q", it.ID, target, ent.Link)
	default:
		return fmt.Errorf("item %s: %s: %w", it.ID, target, errNotRegular)
	}
	// The reader's errors name the item and the file.
	f, err := o.File(ent)
	if err != nil {
		return err
	}
	p := e.startProgress(what, true, f.Size(), e.stdout)
	defer p.finish()
	_, err = f.NewReader().WriteToContext(ctx, p.writer(e.stdout))
	return err
}

// findEntry finds path in the index as the mount shows it: the first
// entry of a path counts, and nothing lies below a file (see
// bupstash.OpenItem.Lookup).
func findEntry(ctx context.Context, o *bupstash.OpenItem, path string) (*bupstash.IndexEntry, error) {
	ent, err := o.Lookup(ctx, path)
	switch {
	case errors.Is(err, bupstash.ErrNoEntry):
		return nil, fmt.Errorf("item %s: %s: %w", o.Item().ID, path, errNoSuchPath)
	case errors.Is(err, bupstash.ErrNotDir):
		return nil, fmt.Errorf("item %s: %s: %w", o.Item().ID, path, err)
	}
	return ent, err // names the item
}
