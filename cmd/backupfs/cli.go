package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command line is cobra's: every command and flag is defined once,
// and help (backupfs help CMD, --help, -h), usage lines, errors for
// unknown flags, shell completion (backupfs completion bash|zsh|fish) and
// the man page (backupfs man) are generated from those definitions. Flags
// are GNU-style (--long, -s) and may come before, between or after the
// arguments.

const rootLong = `backupfs shows backups as ordinary files, without restoring them: it mounts
Bupstash repositories (0.10 to 0.12) and Backupy blob stores as a read-only
FUSE filesystem, and answers list, ls, cat and diff where FUSE is not available.
Only the chunks a read needs are fetched, verified and decrypted.

The repository and key default to $BUPSTASH_REPOSITORY and $BUPSTASH_KEY
(or $BUPSTASH_KEY_COMMAND), as with bupstash; mount also reads
$XDG_CONFIG_HOME/backupfs/config.toml (or /etc/backupfs/config.toml), which
can name several sources.

As mount(8) runs it (mount -t fuse.backupfs, or /etc/fstab),

    backupfs SOURCE MOUNTPOINT [-o OPTIONS] [-f]

is backupfs mount --repo SOURCE -o OPTIONS MOUNTPOINT that returns once
mounted and serves in the background (-f: in the foreground). SOURCE "none"
takes the sources from -o config=FILE or -o backupy=DIR alone.

` + exitStatusHelp

// globalFlags are the flags every command takes.
type globalFlags struct {
	quiet, verbose bool
	progress       *progressMode
}

// newRootCommand builds the whole command tree around e. Log lines and
// the final error go to out.
func newRootCommand(e *env, out *logOutput) *cobra.Command {
	g := globalFlags{progress: &e.progressMode}
	root := &cobra.Command{
		Use:     "backupfs",
		Short:   "Look inside backups without restoring them",
		Long:    rootLong,
		Version: versionString(),
		// Errors are printed once, as one line, by run; usage text only
		// on request.
		SilenceErrors: true,
		SilenceUsage:  true,
		// "lst" suggests list and ls (cobra's default distance only
		// applies to its own unknown-command error).
		SuggestionsMinimumDistance: 1,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(c, args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			// No command: the usage on stderr, and status 2, as a script
			// calling backupfs without arguments has made a mistake.
			fmt.Fprint(e.stderr, c.UsageString())
			fmt.Fprintln(e.stderr, "backupfs: no command given (see the usage above)")
			return errUsageShown
		},
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			return g.apply(c, out)
		},
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetVersionTemplate("backupfs {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print only errors")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "print what is being done, and debugging detail")
	root.PersistentFlags().Var(g.progress, "progress", "show the progress of long work on stderr: auto (on a terminal), always or never")
	root.SetHelpCommand(newHelpCommand())
	root.AddCommand(
		newMountCommand(e, func(c *cobra.Command) error { return g.apply(c, out) }),
		newListCommand(e),
		newLsCommand(e),
		newCatCommand(e),
		newDiffCommand(e),
		newBackupyCommand(e),
		newVersionCommand(),
		newManCommand(),
	)
	return root
}

// apply sets the log's level and format for the command about to run:
// warnings by default, and the mount's notices too, since a mount is a
// long-running service whose log is kept (with timestamps, unless the
// journal keeps them).
func (g *globalFlags) apply(c *cobra.Command, out *logOutput) error {
	if g.quiet && g.verbose {
		return usageError("--quiet and --verbose contradict each other")
	}
	level := slog.LevelWarn
	if c.Annotations[annotationService] != "" {
		level = slog.LevelInfo
		out.stamp = !out.journal
	}
	switch {
	case g.quiet:
		level = slog.LevelError
	case g.verbose:
		level = slog.LevelDebug
	}
	out.level.Set(level)
	if level > slog.LevelDebug {
		// Until the command succeeds (or a mount is mounted): see log.go.
		out.hold()
	}
	return nil
}

// annotationService marks long-running commands (mount): their log says
// what they do, with timestamps.
const annotationService = "backupfs-service"

// flagError makes pflag's errors usage errors, and points a Go-style flag
// (-repo) at its GNU spelling (--repo), which pflag reads as the
// shorthands -r -e -p -o.
func flagError(c *cobra.Command, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "shorthand") {
		if i := strings.LastIndex(msg, " in -"); i >= 0 {
			word := strings.TrimPrefix(msg[i+len(" in "):], "-")
			name, _, _ := strings.Cut(word, "=")
			if c.Flags().Lookup(name) != nil {
				msg += fmt.Sprintf(" (long flags take two dashes: --%s)", name)
			}
		}
	}
	return usageError("%s", msg)
}

// unknownCommand says so in one line, with cobra's suggestion if it has
// one.
func unknownCommand(c *cobra.Command, name string) error {
	if s := c.SuggestionsFor(name); len(s) > 0 {
		return usageError("unknown command %q (did you mean %s?)", name, strings.Join(s, " or "))
	}
	return usageError("unknown command %q", name)
}

// goStyleArgs accepts -version and -help, the one-dash spellings of Go's
// flag package, as the only arguments.
func goStyleArgs(args []string) []string {
	if len(args) == 1 && (args[0] == "-version" || args[0] == "-help") {
		return []string{"-" + args[0]}
	}
	return args
}

// newHelpCommand is cobra's help command, except that a topic that is no
// command is an error rather than the top-level help.
func newHelpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "Help about any command",
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var names []cobra.Completion
			if len(args) == 0 {
				for _, s := range c.Root().Commands() {
					if s.IsAvailableCommand() {
						names = append(names, cobra.CompletionWithDesc(s.Name(), s.Short))
					}
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageError("no help topic %q", strings.Join(args, " "))
			}
			target.InitDefaultHelpFlag()
			target.InitDefaultVersionFlag()
			return target.Help()
		},
	}
}

// stringArray registers a repeatable string flag: each use adds one value,
// commas included (file names may hold them).
func stringArray(fs *pflag.FlagSet, p *[]string, name, usage string) {
	fs.StringArrayVar(p, name, nil, usage)
}

// wantArgs accepts between min and max arguments (max < 0: no bound) and
// otherwise fails with msg as a usage error.
func wantArgs(min, max int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return usageError("%s", msg)
		}
		return nil
	}
}
