package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestSplitMountOptions(t *testing.T) {
	for in, want := range map[string][]string{
		"allow_other":                    {"allow_other"},
		"rw,key=/k,allow_other":          {"rw", "key=/k", "allow_other"},
		`backupy_views="zst,meta",uid=1`: {"backupy_views=zst,meta", "uid=1"},
		`key="/etc/a b.key"`:             {"key=/etc/a b.key"},
		"x-systemd.automount,,comment=a": {"x-systemd.automount", "", "comment=a"},
		`name="a""b"`:                    {"name=ab"},
	} {
		got, err := splitMountOptions(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := splitMountOptions(`key="/k`); !errors.Is(err, errUsage) {
		t.Errorf("unbalanced quote: %v", err)
	}
}

// mountCommand returns mount's command, its flags parsed from args.
func mountCommand(t *testing.T, args ...string) (*cobra.Command, *mountFlags) {
	t.Helper()
	mf := &mountFlags{}
	c := &cobra.Command{Use: "mount"}
	mf.register(c.Flags())
	if err := c.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return c, mf
}

// Every flag of mount has an -o spelling, so that mount(8) and fstab can
// say everything the command line can.
func TestEveryMountFlagHasAnOptionSpelling(t *testing.T) {
	c, _ := mountCommand(t)
	n := 0
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if noOptionSpelling[f.Name] {
			return
		}
		n++
		value := map[string]string{
			"bool": "", "SIZE": "=64M", "stringArray": "=/x", "string": "=/x", "int": "=4", "duration": "=30s",
		}[f.Value.Type()]
		switch f.Name {
		case "xattrs":
			value = "=off"
		case "backupy-views":
			value = `="zst,meta"`
		}
		opt := strings.ReplaceAll(f.Name, "-", "_") + value
		c2, mf := mountCommand(t, "-o", "rw,"+opt+",dev,suid")
		if err := applyMountOptions(c2.Flags(), mf); err != nil {
			t.Errorf("-o %s: %v", opt, err)
			return
		}
		if !c2.Flags().Changed(f.Name) {
			t.Errorf("-o %s did not set --%s", opt, f.Name)
		}
	})
	if n < 24 {
		t.Fatalf("only %d flags", n)
	}
	c, mf := mountCommand(t, "-o", `backupy_views="zst,meta",cache_size=512M`, "-o", "allow_other,uid=1000,nonempty,noexec")
	if err := applyMountOptions(c.Flags(), mf); err != nil {
		t.Fatal(err)
	}
	if mf.backupy.views != "zst,meta" || mf.cacheSize != 512<<20 || !mf.allowOther || mf.uid != "1000" || !mf.allowNonEmpty || !mf.noexec {
		t.Fatalf("%+v", mf)
	}
}

// mount(8)'s own options, which mount.fuse passes on, are accepted; what
// is neither theirs nor a flag is a usage error naming it.
func TestMountOptionsOfMount8(t *testing.T) {
	c, mf := mountCommand(t, "-o", "rw,ro,dev,suid,nodev,nosuid,exec,noauto,auto,nofail,_netdev,user,users,nouser,defaults,"+
		"noatime,relatime,x-systemd.automount,x-systemd.idle-timeout=10min,X-mount.mkdir,comment=backups,user=ann,default_permissions,key=/k")
	if err := applyMountOptions(c.Flags(), mf); err != nil {
		t.Fatal(err)
	}
	if mf.key != "/k" || mf.noexec {
		t.Fatalf("%+v", mf)
	}
	for _, tt := range []struct{ opt, want string }{
		{"allow_root", "-o allow_root: unknown mount option"},
		{"cahce_size=1G", "-o cahce_size: unknown mount option"},
		{"key", "-o key wants a value: -o key=FILE"},
		{"cache_size=lots", "-o cache_size=lots:"},
		{"foreground", "unknown mount option"},
		{"options=x", "unknown mount option"},
	} {
		c, mf := mountCommand(t, "-o", tt.opt)
		err := applyMountOptions(c.Flags(), mf)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("-o %s: %v, want a usage error with %q", tt.opt, err, tt.want)
		}
	}
}

// backupfs SOURCE MOUNTPOINT -o OPTIONS, as mount.fuse runs it, is a mount
// in the background; anything that is a command, or does not look like a
// repository, is left alone.
func TestMountHelperArgs(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "repo"), 0o700)
	t.Chdir(dir)
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }, log: slog.New(slog.DiscardHandler)}
	root := newRootCommand(e, newLogOutput(e.stderr, e.getenv))
	for _, tt := range []struct{ in, want []string }{
		{[]string{"/srv/repo", "/mnt/b", "-o", "rw,key=/k,dev,suid"}, []string{"mount", "--background", "--repo", "/srv/repo", "/mnt/b", "-o", "rw,key=/k,dev,suid"}},
		{[]string{"ssh://host/r", "/mnt/b"}, []string{"mount", "--background", "--repo", "ssh://host/r", "/mnt/b"}},
		{[]string{"none", "/mnt/b", "-o", "config=/etc/c.toml"}, []string{"mount", "--background", "/mnt/b", "-o", "config=/etc/c.toml"}},
		{[]string{"repo", "mnt", "-f"}, []string{"mount", "--background", "--repo", "repo", "mnt", "-f"}},
		{[]string{"list", "--repo", "/r"}, nil},
		{[]string{"mount", "/r", "/m"}, nil},
		{[]string{"help", "mount"}, nil},
		{[]string{"completion", "bash"}, nil},
		{[]string{"lst", "mnt"}, nil},
		{[]string{"--repo", "/r", "list"}, nil},
		{[]string{"/srv/repo"}, nil},
	} {
		got := mountHelperArgs(root, tt.in)
		want := tt.want
		if want == nil {
			want = tt.in
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: %q, want %q", tt.in, got, want)
		}
	}
	// And a typo stays a typo.
	r := runCmd(t, nil, "lst", "mnt")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "lst"`) {
		t.Errorf("lst mnt: %d %q", r.code, r.stderr)
	}
}

// The mount's source names what is mounted.
func TestMountSource(t *testing.T) {
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }, log: slog.New(slog.DiscardHandler)}
	mf := &mountFlags{repo: "../../testdata/bupstash-0.12.1/repo", changed: func(string) bool { return false }, xattrs: "auto"}
	mf.backupy.dirs = backupyList{"/backups/backupy"}
	mf.backupy.cacheDir = "/var/tmp/c"
	plan, err := resolveMount(e, mf, "/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if want := abs(t, repo012) + ";/backups/backupy"; plan.mount.Source != want {
		t.Errorf("source %q, want %q", plan.mount.Source, want)
	}
	long := &mountPlan{}
	for i := range 40 {
		long.backupy = append(long.backupy, backupyConfig{Dir: "/backups/store-number-" + strings.Repeat("x", i)})
	}
	if s := mountSource(long); len(s) > 260 || !strings.HasSuffix(s, "…+"+s[strings.LastIndex(s, "+")+1:]) {
		t.Errorf("many sources: %q", s)
	}
}
