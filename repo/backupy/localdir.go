package backupy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/backupfs/backupfs/internal/untrusted"
)

// LocalDir is a directory of downloaded objects. Symbolic links to files
// are followed, links to directories are not (a loop would never end).
// Objects are opened through package untrusted: a FIFO or a device in the
// directory is skipped by List and refused by Open, never waited on.
type LocalDir struct {
	root string // absolute, cleaned
}

var _ ObjectStore = (*LocalDir)(nil)

// NewLocalDir returns the directory dir as an object store.
func NewLocalDir(dir string) (*LocalDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("backupy: store %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("backupy: store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("backupy: store %s: not a directory", dir)
	}
	return &LocalDir{root: abs}, nil
}

// Name returns the absolute directory.
func (d *LocalDir) Name() string { return d.root }

// path returns the file name of a key or directory.
func (d *LocalDir) path(key string) string {
	return filepath.Join(d.root, filepath.FromSlash(key))
}

// List reads one directory. Entries that cannot be examined (gone
// meanwhile, a dangling link) and files that are not regular are left out.
func (d *LocalDir) List(ctx context.Context, dir string) (Listing, error) {
	ents, err := os.ReadDir(d.path(dir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Listing{}, fmt.Errorf("backupy: %w: %w", ErrNotFound, err)
		}
		return Listing{}, err
	}
	var l Listing
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return Listing{}, err
		}
		key := path.Join(dir, e.Name())
		if e.IsDir() {
			l.Dirs = append(l.Dirs, e.Name())
			continue
		}
		fi, err := os.Stat(d.path(key)) // follows symbolic links to files
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		l.Objects = append(l.Objects, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	}
	return l, nil
}

// Open opens the object's file and checks that it is still the version
// described.
func (d *LocalDir) Open(_ context.Context, obj ObjectInfo) (Object, error) {
	f, fi, err := untrusted.Open(d.path(obj.Key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("backupy: %s: %w", obj.Key, ErrNotFound)
		}
		return nil, fmt.Errorf("backupy: %w", err)
	}
	if !obj.sameVersion(ObjectInfo{Key: obj.Key, Size: fi.Size(), ModTime: fi.ModTime()}) {
		f.Close()
		return nil, fmt.Errorf("backupy: %s: %w", obj.Key, ErrChanged)
	}
	return localObject{f}, nil
}

// holds reports the key prefix under which the directory dir lies inside
// the store, if it does: the Store never lists its own cache directory.
func (d *LocalDir) holds(dir string) (string, bool) {
	rel, err := filepath.Rel(d.root, dir)
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

type localObject struct{ f *os.File }

func (o localObject) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return o.f.ReadAt(p, off)
}

func (o localObject) Close() error { return o.f.Close() }
