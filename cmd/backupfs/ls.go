package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/backupfs/backupfs/internal/treediff"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/spf13/cobra"
)

func newLsCommand(e *env) *cobra.Command {
	var (
		rf repoFlags
		qf queryFlags
		o  lsOptions
	)
	c := &cobra.Command{
		Use:   "ls [flags] ITEM [PATH]",
		Short: "List the files of an item, like ls -l",
		Long: `List the files of an item, like ls -l: mode, links, owner and group ids, size,
modification time (UTC) and name. PATH is a directory or file inside the
item (default: its top directory); links count the names inside the snapshot,
as the mount shows them.

` + itemHelp + `

--json prints one JSON object per entry, exactly as bupstash list-contents
--format=jsonl1 prints it: mode, size, path (the whole path inside the item),
mtime, mtime_nsec, ctime, ctime_nsec, uid, gid, norm_dev (the device, numbered
per snapshot), nlink (the count saved from the source), ino, dev_major and
dev_minor (null unless a device), xattrs (null when none were saved), sparse,
link_target and data_hash ("blake3:" and the content's hash). Names, link
targets and xattrs that are not UTF-8 are arrays of byte values.`,
		Args: wantArgs(1, -1, "want ITEM [PATH]"),
		RunE: func(c *cobra.Command, args []string) error {
			o.env = qf.env(e)
			return runLs(c.Context(), e, &rf, o, args)
		},
	}
	rf.register(c.Flags())
	qf.register(c.Flags())
	c.Flags().BoolVarP(&o.recursive, "recursive", "R", false, "list subdirectories recursively")
	c.Flags().BoolVar(&o.json, "json", false, "print one JSON object per entry, as bupstash list-contents --format=jsonl1")
	c.Flags().BoolVarP(&o.long, "long", "l", false, "accepted for ls habits: the listing is always long")
	return c
}

// itemHelp says how ls, cat and diff name an item.
const itemHelp = `ITEM is an item id, any unique prefix of one, or a query that matches exactly
one item, as bupstash get takes it: id=ID, name=home.tar, or several words
(name=home.tar and newer-than 1d); a PATH then follows the query's last word.`

type lsOptions struct {
	recursive, json, long bool
	env                   query.Env
}

func runLs(ctx context.Context, e *env, rf *repoFlags, opts lsOptions, args []string) error {
	spec, target, err := splitItemPath(args)
	if err != nil {
		return err
	}
	r, it, err := rf.findItem(ctx, e, spec, opts.env)
	if err != nil {
		return err
	}
	target = cleanPath(target)
	out := &entryPrinter{w: e.stdout, json: opts.json}
	o := r.OpenItem(it)
	if !it.HasIndex() {
		if target != "" && target != it.FileName() {
			return fmt.Errorf("item %s: %s: %w", it.ID, target, errNoSuchPath)
		}
		return out.print(&bupstash.IndexEntry{
			Path: []byte(it.FileName()), Mode: bupstash.ModeRegular | 0o444, Size: it.DataSize, Nlink: 1,
			Mtime: it.Timestamp.Unix(), MtimeNsec: uint32(it.Timestamp.Nanosecond()),
			Ctime: it.Timestamp.Unix(), CtimeNsec: uint32(it.Timestamp.Nanosecond()),
		}, it.FileName())
	}
	if !opts.json {
		// Links as the snapshot has them: that takes a first pass over
		// the index, whose chunks the second then finds in the cache.
		if out.links, err = o.LinkCounts(ctx); err != nil {
			return fmt.Errorf("item %s: %w", it.ID, err)
		}
	}
	idx, err := o.Index()
	if err != nil {
		return fmt.Errorf("item %s: %w", it.ID, err)
	}
	defer idx.Close()

	// The index is streamed: entries print as they are decoded, so listing
	// a huge snapshot needs no memory for it. Writers emit a directory's
	// entry before its children ("siblings before nephews",
	// docs/bupstash-format.md §10.10).
	found := target == ""
	targetIsDir := target == ""
	// A forged index may repeat a path or put entries below a file: show
	// what the mount shows (the first entry of each path).
	rule := bupstash.NewEntryFilter(target)
	defer o.ReportHidden(rule)
	for {
		ent, err := idx.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if !rule.Keep(ent) {
			continue
		}
		p := string(ent.Path)
		switch {
		case p == ".":
			continue
		case p == target:
			found = true
			if !ent.IsDir() {
				if err := out.print(ent, lastComponent(p)); err != nil {
					return err
				}
			}
			targetIsDir = ent.IsDir()
		case targetIsDir && under(p, target):
			rel := strings.TrimPrefix(p, target+"/")
			if target == "" {
				rel = p
			}
			if opts.recursive || !strings.Contains(rel, "/") {
				if err := out.print(ent, rel); err != nil {
					return err
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("item %s: %s: %w", it.ID, target, errNoSuchPath)
	}
	return nil
}

// cleanPath turns a user's path inside an item into index form, as a
// shell would resolve it from the snapshot root: no leading "/" or "./",
// no trailing "/", no empty, "." or ".." components; "" for the root.
func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func under(p, dir string) bool {
	return dir == "" || strings.HasPrefix(p, dir+"/")
}

func lastComponent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

type entryPrinter struct {
	w     io.Writer
	json  bool
	links *bupstash.LinkCounts // nil: the saved counts
}

// print writes one entry: in the text form under the given name, with
// raw bytes as ls writes them; in JSON as Bupstash's jsonl1 line of the
// entry, which names it by its whole path, losslessly.
func (p *entryPrinter) print(ent *bupstash.IndexEntry, name string) error {
	var b bytes.Buffer
	if p.json {
		b.WriteString(treediff.JSONLine(ent))
		b.WriteByte('\n')
		_, err := p.w.Write(b.Bytes())
		return err
	}
	size := fmt.Sprint(ent.Size)
	switch ent.Type() {
	case bupstash.ModeCharDev, bupstash.ModeBlockDev:
		size = fmt.Sprintf("%d, %d", ent.DevMajor, ent.DevMinor)
	case bupstash.ModeSymlink:
		size = fmt.Sprint(len(ent.Link)) // as ls -l: the target's length
	}
	nlink := ent.Nlink
	if p.links != nil {
		nlink = p.links.Nlink(ent)
	}
	fmt.Fprintf(&b, "%s %3d %5d %5d %10s %s %s", modeString(ent.Mode), nlink, ent.UID, ent.GID, size,
		time.Unix(ent.Mtime, int64(ent.MtimeNsec)).UTC().Format("2006-01-02 15:04"), name)
	if ent.Type() == bupstash.ModeSymlink {
		b.WriteString(" -> ")
		b.Write(ent.Link)
	}
	b.WriteByte('\n')
	_, err := p.w.Write(b.Bytes())
	return err
}

// modeString renders st_mode like ls -l: type, then rwx triplets with
// setuid/setgid/sticky as s/S and t/T.
func modeString(m uint32) string {
	b := []byte("?rwxrwxrwx")
	switch m & bupstash.ModeType {
	case bupstash.ModeRegular:
		b[0] = '-'
	case bupstash.ModeDir:
		b[0] = 'd'
	case bupstash.ModeSymlink:
		b[0] = 'l'
	case bupstash.ModeCharDev:
		b[0] = 'c'
	case bupstash.ModeBlockDev:
		b[0] = 'b'
	case bupstash.ModeFIFO:
		b[0] = 'p'
	case bupstash.ModeSocket:
		b[0] = 's'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(bit uint32, pos int, set, unset byte) {
		if m&bit != 0 {
			if b[pos] == '-' {
				b[pos] = unset
			} else {
				b[pos] = set
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}
