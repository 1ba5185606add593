package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Mounting as mount(8) and /etc/fstab do it.
//
// For `mount -t fuse.backupfs -o OPTIONS SOURCE MOUNTPOINT` (and an fstab
// line of type fuse.backupfs, and systemd's mount units, which run
// mount(8)), mount(8) runs /sbin/mount.fuse.backupfs if there is one, and
// otherwise fuse3's /sbin/mount.fuse, which runs
//
//	/bin/sh -c "'backupfs' 'SOURCE' 'MOUNTPOINT' -o 'OPTIONS'"
//
// with PATH removed from the environment (so the shell's default path
// finds backupfs: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
// /sbin:/bin), HOME set to /root if it was unset, and OPTIONS with
// mount(8)'s own options (rw, dev, suid, noexec…) among ours, and its
// x-*, noauto, nofail, user and _netdev removed. It waits for the command
// and takes its status as the mount's. mountHelperArgs turns that form
// into backupfs mount in the background; every mount flag has an -o
// spelling (its name with _ for -), and mount(8)'s options are accepted
// and ignored, or honoured where they mean something here (noexec).

// mountHelperArgs rewrites `SOURCE MOUNTPOINT [flags]` to
// `mount --repo SOURCE --background MOUNTPOINT [flags]`. A first argument
// is taken as a SOURCE, not a command, when it is no command and looks
// like a repository: a path with a slash, a URL, "none", or something
// that exists here. Anything else is left for the usual error (an
// unknown command, with suggestions).
func mountHelperArgs(root *cobra.Command, args []string) []string {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") || strings.HasPrefix(args[0], "__") {
		return args // a flag, or a shell's completion request
	}
	// help and completion are otherwise added when the command runs.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find(args[:1]); err == nil && c != root {
		return args
	}
	src := args[0]
	if !strings.Contains(src, "/") && src != sourceNone {
		if _, err := os.Stat(src); err != nil {
			return args
		}
	}
	out := []string{"mount", "--background"}
	if src != sourceNone {
		out = append(out, "--repo", src)
	}
	return append(out, args[1:]...)
}

// sourceNone is the SOURCE of an fstab line whose sources all come from
// its options (config=, backupy=).
const sourceNone = "none"

// Options of mount(8) and of FUSE in general that say nothing to
// backupfs: they are accepted so that /etc/fstab's habits work. The mount
// is always read-only, nosuid and nodev, whatever rw, suid or dev ask
// (mount.fuse adds dev and suid to every command line).
var ignoredMountOptions = map[string]bool{
	"rw": true, "ro": true, "defaults": true,
	"auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "diratime": true, "nodiratime": true,
	"lazytime": true, "nolazytime": true, "sync": true, "async": true, "dirsync": true,
	"silent": true, "loud": true, "iversion": true, "noiversion": true,
	"mand": true, "nomand": true,
	"default_permissions": true, // always on: the kernel checks the saved modes
}

// ignoredMountOptionPrefixes are options with values that say nothing to
// backupfs: userspace annotations (x-systemd.automount, x-gvfs-show),
// comments, and who mounted (user=NAME).
var ignoredMountOptionPrefixes = []string{"x-", "X-", "comment=", "user="}

// noOptionSpelling are mount's flags that have no -o spelling: -o
// itself, and how the command runs rather than what it mounts.
var noOptionSpelling = map[string]bool{"options": true, "help": true, "foreground": true, "background": true}

// applyMountOptions sets mount's flags from -o values, after the flags
// given as such (so -o wins over a flag). Each value is a comma-separated
// list of NAME or NAME=VALUE, where NAME is a flag's name with _ for -
// (allow_other, cache_size=512M, key=FILE) or one of mount(8)'s options;
// a value with commas is quoted: backupy_views="zst,meta".
func applyMountOptions(fs *pflag.FlagSet, mf *mountFlags) error {
	for _, list := range mf.options {
		opts, err := splitMountOptions(list)
		if err != nil {
			return err
		}
		for _, o := range opts {
			if err := applyMountOption(fs, mf, o); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyMountOption(fs *pflag.FlagSet, mf *mountFlags, opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case opt == "" || ignoredMountOptions[opt]:
		return nil
	case opt == "noexec":
		mf.noexec = true
		return nil
	case opt == "exec":
		mf.noexec = false
		return nil
	case opt == "nonempty":
		return fs.Set("allow-non-empty", "true")
	}
	for _, p := range ignoredMountOptionPrefixes {
		if strings.HasPrefix(opt, p) {
			return nil
		}
	}
	flagName := strings.ReplaceAll(name, "_", "-")
	f := fs.Lookup(flagName)
	if f == nil || noOptionSpelling[flagName] || f.Hidden {
		return usageError("-o %s: unknown mount option (mount's flags are its options, with _ for -: -o allow_other,uid=1000,cache_size=512M,key=FILE)", name)
	}
	if !hasValue {
		if f.Value.Type() != "bool" {
			varname, _ := pflag.UnquoteUsage(f)
			return usageError("-o %s wants a value: -o %s=%s", name, name, varname)
		}
		value = "true"
	}
	if err := fs.Set(flagName, value); err != nil {
		return usageError("-o %s: %v", opt, err)
	}
	return nil
}

// splitMountOptions splits a comma-separated option list, as mount(8)
// writes it: a double-quoted part of a value keeps its commas (and loses
// its quotes).
func splitMountOptions(s string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		quote bool
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quote = !quote
		case c == ',' && !quote:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if quote {
		return nil, usageError("-o %s: unbalanced quote", s)
	}
	return append(out, cur.String()), nil
}

// optionsHelp documents -o in mount's help.
const optionsHelp = `Every flag has an -o spelling, its name with _ for - (-o allow_other,uid=1000,
cache_size=512M,key=/etc/backupfs/home.key), so that mount(8) and /etc/fstab
can say everything; a value with commas is quoted (backupy_views="zst,meta").
mount(8)'s own options are accepted: noexec is honoured, nonempty is
--allow-non-empty, and the rest (rw, ro, noauto, nofail, _netdev, user,
x-systemd.*, …) say nothing to backupfs: the mount is always read-only,
nosuid and nodev.`
