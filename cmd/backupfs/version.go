package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…" (make
// build does, from git describe). Without it, the module's build info
// says what was built: the module version (v1.2.3 for go install
// …@v1.2.3, a pseudo-version for a build in a checkout) and the commit.
var version = ""

// shortVersion is the version alone: -ldflags', or the module's.
func shortVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return moduleVersion(version, bi)
}

func moduleVersion(ldflagsVersion string, bi *debug.BuildInfo) string {
	if ldflagsVersion != "" {
		return ldflagsVersion
	}
	if bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "(devel)"
}

// versionString is what backupfs --version prints after "backupfs ".
func versionString() string {
	bi, _ := debug.ReadBuildInfo()
	return describeBuild(version, bi)
}

// describeBuild says which backupfs this is: the version, the commit it
// was built from (and whether the tree had changes), and the Go release
// and platform.
func describeBuild(ldflagsVersion string, bi *debug.BuildInfo) string {
	v := moduleVersion(ldflagsVersion, bi)
	var revision, modified string
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	var details []string
	// A pseudo-version or git describe already names the commit; say it
	// in full anyway, since both abbreviate it.
	if revision != "" {
		r := "revision " + revision
		if modified == "true" {
			r += ", modified"
		}
		details = append(details, r)
	}
	details = append(details, fmt.Sprintf("%s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return v + " (" + strings.Join(details, "; ") + ")"
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Long:  "Print the version, the commit it was built from, and the Go release that built it.",
		Args:  wantArgs(0, 0, "version takes no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(c.OutOrStdout(), "backupfs", c.Root().Version)
			return err
		},
	}
}
