package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/pflag"
)

// Remote repositories: ssh://[USER@]HOST[:PORT]/PATH, or a command that
// starts `bupstash serve` (BUPSTASH_REPOSITORY_COMMAND), read through
// package serve. These are the flags, configuration settings and
// environment that tune them, shared by every command that opens a
// repository.

// defaultRemoteCacheSize bounds the disk cache of fetched chunks unless
// told otherwise: a few backups' worth of what is typically browsed.
const defaultRemoteCacheSize = 4 << 30

// remoteFlags are the flags of remote repositories.
type remoteFlags struct {
	sshOptions  []string
	refresh     time.Duration
	idleClose   time.Duration
	connections int
	cacheDir    string
	cacheSize   byteSize
	noPull      bool
}

func (f *remoteFlags) register(fs *pflag.FlagSet) {
	stringArray(fs, &f.sshOptions, "ssh-option", "`OPTION` for ssh (as with ssh -o, e.g. Port=2222 or IdentityFile=~/.ssh/backup), for ssh:// repositories (repeatable)")
	fs.DurationVar(&f.refresh, "remote-refresh", location.DefaultRefresh, "how often a remote repository's item list is synced (a `DURATION`)")
	fs.DurationVar(&f.idleClose, "remote-idle-close", location.DefaultIdleClose, "close a remote repository's data connections idle this long (a `DURATION`): a pull session keeps the server's bupstash gc waiting")
	fs.IntVar(&f.connections, "remote-connections", location.DefaultConnections, "data connections to a remote repository's server, of each `KIND` (pull sessions, partial reads, index streams)")
	fs.StringVar(&f.cacheDir, "remote-cache-dir", "", "`DIR` keeping chunks fetched from remote repositories (default $XDG_CACHE_HOME/backupfs/remote)")
	f.cacheSize = defaultRemoteCacheSize
	fs.Var(&f.cacheSize, "remote-cache-size", "bound of --remote-cache-dir (suffixes K, M, G; 0 turns the cache off)")
	fs.BoolVar(&f.noPull, "remote-no-pull", false, "read remote repositories without pull sessions, so that the server's repository lock is never held (slower)")
}

// remoteConfig are the same settings in the configuration file.
type remoteConfig struct {
	SSHOptions        []string `toml:"ssh_options"`
	RemoteRefresh     string   `toml:"remote_refresh"`
	RemoteIdleClose   string   `toml:"remote_idle_close"`
	RemoteConnections *int     `toml:"remote_connections"`
	RemoteCacheDir    string   `toml:"remote_cache_dir"`
	RemoteCacheSize   string   `toml:"remote_cache_size"`
	RemoteNoPull      *bool    `toml:"remote_no_pull"`
}

// resolve reconciles the flags (which win when given) with the
// configuration file (nil: none) and the environment's cache directory.
func (f *remoteFlags) resolve(e *env, cfg *remoteConfig, changed func(string) bool) (location.Remote, error) {
	if cfg == nil {
		cfg = &remoteConfig{}
	}
	r := location.Remote{
		SSHOptions: append(append([]string(nil), cfg.SSHOptions...), f.sshOptions...),
		Refresh:    f.refresh, IdleClose: f.idleClose, Connections: f.connections,
		CacheDir: f.cacheDir, CacheSize: int64(f.cacheSize), NoPull: f.noPull,
	}
	var err error
	if !changed("remote-refresh") && cfg.RemoteRefresh != "" {
		if r.Refresh, err = parseConfigDuration("remote_refresh", cfg.RemoteRefresh); err != nil {
			return r, err
		}
	}
	if !changed("remote-idle-close") && cfg.RemoteIdleClose != "" {
		if r.IdleClose, err = parseConfigDuration("remote_idle_close", cfg.RemoteIdleClose); err != nil {
			return r, err
		}
	}
	if !changed("remote-connections") && cfg.RemoteConnections != nil {
		r.Connections = *cfg.RemoteConnections
	}
	if !changed("remote-cache-dir") && cfg.RemoteCacheDir != "" {
		r.CacheDir = cfg.RemoteCacheDir
	}
	if !changed("remote-cache-size") && cfg.RemoteCacheSize != "" {
		if r.CacheSize, err = parseConfigSize("remote_cache_size", cfg.RemoteCacheSize); err != nil {
			return r, err
		}
	}
	if !changed("remote-no-pull") && cfg.RemoteNoPull != nil {
		r.NoPull = *cfg.RemoteNoPull
	}
	// Zero means the default (package serve's).
	switch {
	case r.Refresh < 0 || r.IdleClose < 0:
		return r, usageError("--remote-refresh and --remote-idle-close want a positive duration")
	case r.Connections < 0 || r.Connections > 16:
		return r, usageError("--remote-connections wants 1 to 16, not %d", r.Connections)
	case r.CacheSize < 0:
		return r, usageError("--remote-cache-size cannot be negative")
	}
	if r.CacheDir == "" && r.CacheSize > 0 {
		r.CacheDir = defaultRemoteCacheDir(e.getenv)
		r.CacheOptional = true
	}
	return r, nil
}

// defaultRemoteCacheDir is $XDG_CACHE_HOME/backupfs/remote, or
// ~/.cache/backupfs/remote; "" (no disk cache) without either.
func defaultRemoteCacheDir(getenv func(string) string) string {
	if dir := getenv("XDG_CACHE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "backupfs", "remote")
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".cache", "backupfs", "remote")
	}
	return ""
}

// bupstashLocation is where the Bupstash environment points, as Bupstash
// reads it: BUPSTASH_REPOSITORY, else BUPSTASH_REPOSITORY_COMMAND. It
// returns "" with no error when neither is set.
func bupstashLocation(getenv func(string) string) (location.Location, bool, error) {
	if repo := getenv("BUPSTASH_REPOSITORY"); repo != "" {
		loc, err := location.Parse(repo)
		return loc, true, err
	}
	if command := getenv("BUPSTASH_REPOSITORY_COMMAND"); command != "" {
		loc, err := location.FromCommand(command)
		return loc, true, err
	}
	return location.Location{}, false, nil
}

func parseConfigDuration(key, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("config %s: %w", key, err)
	}
	return d, nil
}
