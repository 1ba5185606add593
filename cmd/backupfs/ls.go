package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/spf13/cobra"
)

func newLsCommand(e *env) *cobra.Command {
	var (
		rf repoFlags
		o  lsOptions
	)
	c := &cobra.Command{
		Use:   "ls [flags] ITEM [PATH]",
		Short: "List the files of an item, like ls -l",
		Long: `List the files of an item, like ls -l: mode, links, owner and group ids, size,
modification time (UTC) and name. PATH is a directory or file inside the
item (default: its top directory). ITEM is an item id or a unique prefix of one.`,
		Args: wantArgs(1, 2, "want ITEM [PATH]"),
		RunE: func(c *cobra.Command, args []string) error {
			return runLs(c.Context(), e, &rf, o, args)
		},
	}
	rf.register(c.Flags())
	c.Flags().BoolVarP(&o.recursive, "recursive", "R", false, "list subdirectories recursively")
	c.Flags().BoolVar(&o.json, "json", false, "print one JSON object per entry")
	c.Flags().BoolVarP(&o.long, "long", "l", false, "accepted for ls habits: the listing is always long")
	return c
}

type lsOptions struct {
	recursive, json, long bool
}

func runLs(ctx context.Context, e *env, rf *repoFlags, opts lsOptions, pos []string) error {
	r, it, err := rf.item(ctx, e, pos[0])
	if err != nil {
		return err
	}
	target := ""
	if len(pos) == 2 {
		target = cleanPath(pos[1])
	}
	out := &entryPrinter{w: e.stdout, json: opts.json}
	o := r.OpenItem(it)
	if !it.HasIndex() {
		if target != "" && target != it.FileName() {
			return fmt.Errorf("item %s: %s: %w", it.ID, target, errNoSuchPath)
		}
		return out.print(&bupstash.IndexEntry{
			Path: []byte(it.FileName()), Mode: bupstash.ModeRegular | 0o444, Size: it.DataSize, Nlink: 1,
			Mtime: it.Timestamp.Unix(), MtimeNsec: uint32(it.Timestamp.Nanosecond()),
		}, it.FileName())
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
	for {
		ent, err := idx.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
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
	w    io.Writer
	json bool
	enc  *json.Encoder
}

type entryRecord struct {
	Path      string            `json:"path"`
	Mode      uint32            `json:"mode"`
	Size      uint64            `json:"size"`
	UID       uint64            `json:"uid"`
	GID       uint64            `json:"gid"`
	Mtime     int64             `json:"mtime"`
	MtimeNsec uint32            `json:"mtime_nsec"`
	Ctime     int64             `json:"ctime"`
	CtimeNsec uint32            `json:"ctime_nsec"`
	Nlink     uint64            `json:"nlink"`
	Ino       uint64            `json:"ino"`
	Link      *string           `json:"link_target,omitempty"`
	DevMajor  uint64            `json:"dev_major,omitempty"`
	DevMinor  uint64            `json:"dev_minor,omitempty"`
	Sparse    bool              `json:"sparse,omitempty"`
	Xattrs    map[string]string `json:"xattrs,omitempty"`
	DataHash  string            `json:"data_hash,omitempty"`
}

// print writes one entry under the given name. JSON strings are UTF-8, so
// names and values that are not are written with invalid bytes replaced;
// the text form writes raw bytes, as ls does.
func (p *entryPrinter) print(ent *bupstash.IndexEntry, name string) error {
	if p.json {
		if p.enc == nil {
			p.enc = json.NewEncoder(p.w)
		}
		rec := entryRecord{
			Path: name, Mode: ent.Mode, Size: ent.Size, UID: ent.UID, GID: ent.GID,
			Mtime: ent.Mtime, MtimeNsec: ent.MtimeNsec, Ctime: ent.Ctime, CtimeNsec: ent.CtimeNsec,
			Nlink: ent.Nlink, Ino: ent.Ino, DevMajor: ent.DevMajor, DevMinor: ent.DevMinor, Sparse: ent.Sparse,
		}
		if ent.Link != nil {
			l := string(ent.Link)
			rec.Link = &l
		}
		if len(ent.Xattrs) > 0 {
			rec.Xattrs = map[string]string{}
			for _, x := range ent.Xattrs {
				rec.Xattrs[x.Name] = string(x.Value)
			}
		}
		if ent.DataHash != nil {
			rec.DataHash = "blake3:" + hex.EncodeToString(ent.DataHash[:])
		}
		return p.enc.Encode(rec)
	}
	var b bytes.Buffer
	size := fmt.Sprint(ent.Size)
	switch ent.Type() {
	case bupstash.ModeCharDev, bupstash.ModeBlockDev:
		size = fmt.Sprintf("%d, %d", ent.DevMajor, ent.DevMinor)
	case bupstash.ModeSymlink:
		size = fmt.Sprint(len(ent.Link)) // as ls -l: the target's length
	}
	fmt.Fprintf(&b, "%s %3d %5d %5d %10s %s %s", modeString(ent.Mode), ent.Nlink, ent.UID, ent.GID, size,
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

var (
	errNotRegular = errors.New("not a regular file")
	errNoSuchPath = errors.New("no such file or directory")
)
