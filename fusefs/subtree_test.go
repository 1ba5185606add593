package fusefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/backupfs/backupfs/repo/bupstash/bupstashtest"

	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/fusetest"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// MountOptions.Root shows one directory of the filesystem at the mount's
// root: an item's tree, or a directory inside it. Below it everything is
// as in the whole mount: names, bytes, attributes, xattrs, links.
func TestMountRootIsAnItemsDirectory(t *testing.T) {
	const item = "fdd75e29487490b4ef3eb1792242fc00"
	whole := mountSources(t, fsOptions(), source{"repo", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	for _, root := range []string{"", "sub"} {
		t.Run("item:"+root, func(t *testing.T) {
			m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{Root: "repo/ids/" + item + "/" + root}, nil,
				source{"repo", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
			want := filepath.Join(whole.dir, "repo", "ids", item, root)
			if got, exp := names(t, m.dir), names(t, want); !slices.Equal(got, exp) {
				t.Fatalf("root lists %v, want %v", got, exp)
			}
			var st, wst syscall.Stat_t
			if err := syscall.Stat(m.dir, &st); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Stat(want, &wst); err != nil {
				t.Fatal(err)
			}
			if st.Mode != wst.Mode || st.Mtim != wst.Mtim || st.Uid != wst.Uid {
				t.Errorf("root: mode %o mtime %v uid %d, want %o %v %d", st.Mode, st.Mtim, st.Uid, wst.Mode, wst.Mtim, wst.Uid)
			}
			err := filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(want, p)
				mine := filepath.Join(m.dir, rel)
				if d.Type().IsRegular() {
					a, err1 := os.ReadFile(p)
					b, err2 := os.ReadFile(mine)
					if err1 != nil || err2 != nil || string(a) != string(b) {
						t.Errorf("%s: %d bytes (%v), want %d (%v)", rel, len(b), err2, len(a), err1)
					}
				}
				if d.Type()&os.ModeSymlink != 0 {
					a, _ := os.Readlink(p)
					b, err := os.Readlink(mine)
					if err != nil || a != b {
						t.Errorf("%s: link %q %v, want %q", rel, b, err, a)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// The saved root's extended attributes are the mount root's.
	m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{Root: "repo/ids/" + item + "/sub"}, nil,
		source{"repo", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(m.dir, "user.dirattr", buf)
	if err != nil || string(buf[:n]) != "\x00\x01binary" {
		t.Errorf("xattr of the root: %q %v", buf[:n], err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	}
}

// A raw item's directory as the root: its one file.
func TestMountRootIsARawItem(t *testing.T) {
	m := mountSourcesWith(t, fsOptions(), fusefs.MountOptions{Root: "repo/ids/d5dbf2447bdcf7807b25732d40a02b35"}, nil,
		source{"repo", "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key"})
	b, err := os.ReadFile(filepath.Join(m.dir, "data"))
	if err != nil || string(b) != "hello from stdin\n" {
		t.Fatalf("%q %v", b, err)
	}
}

// A root that is missing or not a directory is refused before mounting.
func TestMountRootMustBeADirectory(t *testing.T) {
	k, err := bupstashtest.LoadKey(filepath.Join(testdata, "bupstash-0.12.1/keys/primary.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := bupstash.Open(t.Context(), filepath.Join(testdata, "bupstash-0.12.1/repo"), k, bupstash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := fusefs.New(fsOptions())
	if err := f.AddBupstash("repo", r); err != nil {
		t.Fatal(err)
	}
	fusetest.RequireFUSE(t)
	for root, want := range map[string]error{
		"repo/ids/fdd75e29487490b4ef3eb1792242fc00/nope":  syscall.ENOENT,
		"repo/ids/fdd75e29487490b4ef3eb1792242fc00/a.txt": syscall.ENOTDIR,
		"nosuchsource/ids":        syscall.ENOENT,
		"repo/ids/00000000000000": syscall.ENOENT,
	} {
		dir := t.TempDir()
		m, err := f.Mount(dir, fusefs.MountOptions{Root: root})
		if err == nil {
			m.Unmount(0)
			t.Errorf("%s: mounted", root)
			continue
		}
		if !errors.Is(err, want) || !strings.Contains(err.Error(), root) {
			t.Errorf("%s: %v, want %v naming it", root, err, want)
		}
		if fusetest.Mounted(dir) {
			t.Errorf("%s: left mounted", root)
		}
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
