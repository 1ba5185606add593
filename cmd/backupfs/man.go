package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCommand writes the manual pages, generated from the same command
// and flag definitions as --help: backupfs(1), and with --dir one page per
// command (backupfs-mount(1), …) as git and restic ship them.
func newManCommand() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "man [--dir DIR]",
		Short: "Write the manual pages",
		Long: `Write the manual page backupfs(1) to standard output (backupfs man | man -l -),
or with --dir one page per command into DIR, as /usr/share/man/man1 wants them.`,
		Args: wantArgs(0, 0, "man takes no arguments (--dir DIR writes every page)"),
		RunE: func(c *cobra.Command, _ []string) error {
			root := c.Root()
			header := &doc.GenManHeader{Title: "BACKUPFS", Section: "1", Source: "backupfs " + shortVersion(), Manual: "backupfs manual", Date: buildTime()}
			root.DisableAutoGenTag = true
			if dir == "" {
				return doc.GenMan(root, header, c.OutOrStdout())
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("writing manual pages: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "write one page per command into `DIR` (default: backupfs(1) to standard output)")
	return c
}

// buildTime is the commit time the build info records, so that a man page
// is the same whenever it is generated; now when unknown.
func buildTime() *time.Time {
	t := time.Now()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if vt, err := time.Parse(time.RFC3339, s.Value); err == nil {
					t = vt
				}
			}
		}
	}
	return &t
}
