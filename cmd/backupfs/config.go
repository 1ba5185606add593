package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/backupfs/backupfs/internal/untrusted"

	"github.com/BurntSushi/toml"

	"github.com/backupfs/backupfs/repo/location"
)

// config is the mount configuration file: global options and any number
// of sources. Command-line flags override the global options.
//
//	cache_size = "512M"
//	ssh_options = ["Port=2222"]         # remote repositories (remote.go)
//	[[bupstash]]
//	name = "home"                       # default: the repository's base name
//	repo = "/backups/home"              # or ssh://host/path, or
//	                                    # repository_command = "ssh host bupstash serve /path"
//	key = "/etc/backupfs/home.key"      # or key_command = "gpg -d …"
//
//	[[backupy]]
//	name = "databases"                  # default: the directory's base name
//	dir = "/backups/backupy"
//	tokens = ["/secure/run-1.jwt"]      # backupy-decrypt tokens
//	token_dirs = ["/secure/tokens"]
//	keyrings = ["/secure/backupy.keyring"]
//	views = "zst,meta"                  # extra views
//	hide_foreign = true                 # hide files that are not Backupy objects
//
//	[[backupy]]
//	dir = "s3://backups/co_acme"        # a bucket prefix
//	endpoint = "https://minio.example:9000"  # default: the AWS chain's
//	path_style = true
//	region = "eu-west-1"                # default: the AWS chain's
//	profile = "backup"                  # of ~/.aws/config and credentials
//	in_flight = 8                       # ranged GETs of a full read
//	timeout = "30s"                     # retries before a read fails
type config struct {
	CacheSize   string `toml:"cache_size"`
	IndexMemory string `toml:"index_memory"`
	AllowOther  bool   `toml:"allow_other"`
	Xattrs      string `toml:"xattrs"`
	UID         *int64 `toml:"uid"`
	GID         *int64 `toml:"gid"`
	// Remote repositories: ssh_options, remote_refresh, … (remote.go).
	remoteConfig

	Bupstash []bupstashConfig `toml:"bupstash"`
	Backupy  []backupyConfig  `toml:"backupy"`
}

type backupyConfig struct {
	Name      string   `toml:"name"`
	Dir       string   `toml:"dir"`
	Tokens    []string `toml:"tokens"`
	TokenDirs []string `toml:"token_dirs"`
	Keyrings  []string `toml:"keyrings"`
	Views     string   `toml:"views"`
	CacheDir  string   `toml:"cache_dir"`
	CacheSize string   `toml:"cache_size"`
	// HideForeign hides files that are not Backupy objects.
	HideForeign bool `toml:"hide_foreign"`
	// S3 settings, for an s3:// dir.
	Endpoint  string `toml:"endpoint"`
	PathStyle bool   `toml:"path_style"`
	Region    string `toml:"region"`
	Profile   string `toml:"profile"`
	InFlight  int    `toml:"in_flight"`
	Timeout   string `toml:"timeout"`
}

type bupstashConfig struct {
	Name string `toml:"name"`
	Repo string `toml:"repo"`
	// RepositoryCommand starts `bupstash serve`, as
	// BUPSTASH_REPOSITORY_COMMAND does; it replaces repo.
	RepositoryCommand string `toml:"repository_command"`
	Key               string `toml:"key"`
	KeyCommand        string `toml:"key_command"`
}

// systemConfigPath is the configuration file of a system's mounts (an
// fstab line, a systemd service), read when the user has none.
const systemConfigPath = "/etc/backupfs/config.toml"

// defaultConfigPaths are where the configuration file is looked for,
// first found first: the user's, $XDG_CONFIG_HOME/backupfs/config.toml or
// ~/.config/backupfs/config.toml, then the system's. Without
// $XDG_CONFIG_HOME and $HOME (a systemd system service) only the
// system's.
func defaultConfigPaths(getenv func(string) string) []string {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		dir = ""
		if home := getenv("HOME"); home != "" {
			dir = filepath.Join(home, ".config")
		}
	}
	if dir == "" {
		return []string{systemConfigPath}
	}
	return []string{filepath.Join(dir, "backupfs", "config.toml"), systemConfigPath}
}

// findConfig returns the first of paths that exists, or "" for none.
func findConfig(paths []string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// defaultBackupyCacheDir is where Backupy's decoded dumps are kept
// without --backupy-cache-dir: $XDG_CACHE_HOME/backupfs/backupy; in a
// systemd service with CacheDirectory=, $CACHE_DIRECTORY/backupy; else
// ~/.cache/backupfs/backupy; for root without a home (a system service),
// /var/cache/backupfs/backupy; for another user without $HOME, the home
// directory of the user database. Otherwise there is none, and the error
// says what to set.
func defaultBackupyCacheDir(getenv func(string) string) (string, error) {
	if x := getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "backupfs", "backupy"), nil
	}
	if x, _, _ := strings.Cut(getenv("CACHE_DIRECTORY"), ":"); filepath.IsAbs(x) {
		return filepath.Join(x, "backupy"), nil
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".cache", "backupfs", "backupy"), nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/backupfs/backupy", nil
	}
	// A user's service without $HOME: the home directory the user
	// database gives, if there is one (nobody's is /nonexistent).
	if u, err := user.Current(); err == nil && filepath.IsAbs(u.HomeDir) && u.HomeDir != "/" {
		if fi, err := os.Stat(u.HomeDir); err == nil && fi.IsDir() {
			return filepath.Join(u.HomeDir, ".cache", "backupfs", "backupy"), nil
		}
	}
	return "", usageError("no directory for Backupy's decoded dumps: $XDG_CACHE_HOME and $HOME are not set; give --backupy-cache-dir (cache_dir in the configuration file)")
}

// loadConfig reads path. A missing default file is no error; a missing
// file named explicitly is.
func loadConfig(path string, explicit bool) (*config, error) {
	var c config
	if path == "" {
		return &c, nil
	}
	// The file is untrusted input like any other: a FIFO, /dev/zero or a
	// huge file is refused before anything is read.
	text, err := untrusted.ReadFile(path, untrusted.Config)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return &c, nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("config %s: %w", path, pe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	md, err := toml.Decode(string(text), &c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return nil, fmt.Errorf("config %s: unknown setting %q", path, undecoded[0].String())
	}
	for i, b := range c.Bupstash {
		switch {
		case b.Repo == "" && b.RepositoryCommand == "":
			return nil, fmt.Errorf("config %s: bupstash source %d has no repo (nor repository_command)", path, i+1)
		case b.Repo != "" && b.RepositoryCommand != "":
			return nil, fmt.Errorf("config %s: bupstash source %d has both repo and repository_command", path, i+1)
		}
		if b.Key != "" && b.KeyCommand != "" {
			return nil, fmt.Errorf("config %s: bupstash source %q has both key and key_command", path, b.Repo)
		}
		// Relative paths are relative to the configuration file.
		if b.Repo != "" {
			c.Bupstash[i].Repo = relativeTo(path, b.Repo)
		}
		if b.Key != "" {
			c.Bupstash[i].Key = relativeTo(path, b.Key)
		}
	}
	if c.RemoteCacheDir != "" {
		c.RemoteCacheDir = relativeTo(path, c.RemoteCacheDir)
	}
	for i, b := range c.Backupy {
		if b.Dir == "" {
			return nil, fmt.Errorf("config %s: backupy source %d has no dir", path, i+1)
		}
		c.Backupy[i].Dir = relativeTo(path, b.Dir)
		c.Backupy[i].CacheDir = relativeTo(path, b.CacheDir)
		for _, list := range [][]string{c.Backupy[i].Tokens, c.Backupy[i].TokenDirs, c.Backupy[i].Keyrings} {
			for j := range list {
				list[j] = relativeTo(path, list[j])
			}
		}
	}
	return &c, nil
}

func relativeTo(configPath, p string) string {
	if p == "" || filepath.IsAbs(p) || location.IsURL(p) {
		return p // a URL (ssh://…) is opened by the location package as written
	}
	return filepath.Join(filepath.Dir(configPath), p)
}
