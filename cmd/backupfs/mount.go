package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/mountpoint"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// unmountGrace is how long open files keep being served after an unmount
// was asked for while they were busy.
const unmountGrace = 5 * time.Second

func runMount(ctx context.Context, e *env, args []string) error {
	fset := newFlagSet(e, "mount", "[flags] MOUNTPOINT")
	var (
		repoDir    = fset.String("repo", "", "Bupstash repository to mount (default $BUPSTASH_REPOSITORY)")
		keyPath    = fset.String("key", "", "its key file (default $BUPSTASH_KEY, or the output of $BUPSTASH_KEY_COMMAND)")
		name       = fset.String("name", "", "directory name for --repo (default: the repository's base name)")
		configPath = fset.String("config", "", "configuration file naming several sources (default $XDG_CONFIG_HOME/backupfs/config.toml if present)")
		allowOther = fset.Bool("allow-other", false, "let other users in (the saved permissions still apply)")
		uid        = fset.String("uid", "", "show every file as owned by this user id")
		gid        = fset.String("gid", "", "show every file as owned by this group id")
		xattrs     = fset.String("xattrs", "", "extended attributes: auto (kernel caches ACL queries), on, or off (fastest ls -l)")
		debug      = fset.Bool("debug", false, "log every FUSE request")
		pprofAddr  = fset.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060)")
		cacheSize  = byteSize(bupstash.DefaultCacheSize)
		indexMem   = byteSize(fusefs.DefaultIndexMemory)
		by         backupyMountFlags
	)
	by.register(fset)
	defer by.wipeKeys() // after the stores' Close, deferred below
	fset.Var(&cacheSize, "cache-size", "decoded chunk cache size (suffixes K, M, G)")
	fset.Var(&indexMem, "index-memory", "memory for decoded file trees; least recently used ones are dropped")
	pos, err := parseInterleaved(fset, args)
	if err != nil {
		return helpRequested(fset, err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one MOUNTPOINT", errUsage)
	}
	// A mount is long-lived: say what it does (and, with --debug, every
	// request go-fuse sees).
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))

	if *pprofAddr != "" {
		stop, err := startProfiling(*pprofAddr, "", e.log)
		defer stop()
		if err != nil {
			return err
		}
	}

	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfgFile, explicit := *configPath, *configPath != ""
	if !explicit {
		cfgFile = defaultConfigPath(e.getenv)
	}
	cfg, err := loadConfig(cfgFile, explicit)
	if err != nil {
		return err
	}
	if !set["cache-size"] && cfg.CacheSize != "" {
		if cacheSize, err = parseConfigSize("cache_size", cfg.CacheSize); err != nil {
			return err
		}
	}
	if !set["index-memory"] && cfg.IndexMemory != "" {
		if indexMem, err = parseConfigSize("index_memory", cfg.IndexMemory); err != nil {
			return err
		}
	}
	if *xattrs == "" {
		*xattrs = cfg.Xattrs
	}
	xmode, err := fusefs.ParseXattrMode(*xattrs)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := fusefs.Options{Logger: e.log, IndexMemory: int64(indexMem), Xattrs: xmode}
	if opts.UID, err = idFlag("uid", *uid, cfg.UID); err != nil {
		return err
	}
	if opts.GID, err = idFlag("gid", *gid, cfg.GID); err != nil {
		return err
	}

	// Sources: the config file's, and the one the flags or the Bupstash
	// environment name.
	sources := cfg.Bupstash
	if dir := firstNonEmpty(*repoDir, e.getenv("BUPSTASH_REPOSITORY")); dir != "" {
		sources = append(sources, bupstashConfig{Name: *name, Repo: dir, Key: *keyPath})
	} else if *keyPath != "" || *name != "" {
		return fmt.Errorf("%w: --key and --name describe --repo, which is not given (nor BUPSTASH_REPOSITORY)", errUsage)
	}
	stores := cfg.Backupy
	for _, dir := range by.dirs {
		stores = append(stores, backupyConfig{Dir: dir, Views: by.views, CacheDir: by.cacheDir})
	}
	if len(sources)+len(stores) == 0 {
		return fmt.Errorf("%w: nothing to mount: use --repo (or set BUPSTASH_REPOSITORY) or --backupy, or list sources in %s", errUsage, cfgFile)
	}

	chunks := cache.New(int64(cacheSize))
	filesystem := fusefs.New(opts)
	var dirs []string
	for _, s := range sources {
		repo, err := openSource(ctx, e, s, chunks)
		if err != nil {
			return err
		}
		n := s.Name
		if n == "" {
			n = filepath.Base(filepath.Clean(s.Repo))
		}
		if err := filesystem.AddBupstash(n, repo); err != nil {
			return fmt.Errorf("%s: %w", s.Repo, err)
		}
		dirs = append(dirs, s.Repo)
	}
	for _, sc := range stores {
		store, err := openStore(ctx, e, sc, &by, chunks)
		if err != nil {
			return err
		}
		defer store.Close() // saves what passes learned (sizes, checksums)
		n := sc.Name
		if n == "" {
			n = filepath.Base(filepath.Clean(sc.Dir))
		}
		if err := filesystem.AddBackupy(n, store); err != nil {
			return fmt.Errorf("%s: %w", sc.Dir, err)
		}
		dirs = append(dirs, sc.Dir, store.CacheDir())
	}

	mnt, err := mountpoint.Prepare(pos[0], dirs)
	if err != nil {
		return err
	}
	m, err := filesystem.Mount(mnt, fusefs.MountOptions{AllowOther: *allowOther || cfg.AllowOther, Debug: *debug})
	if err != nil {
		return err
	}
	govern, stopGoverning := context.WithCancel(ctx)
	defer stopGoverning()
	go governHeap(govern, filesystem)
	e.log.Info("mounted; unmount with Ctrl-C, umount or fusermount3 -u", "mountpoint", mnt, "sources", len(sources)+len(stores))
	select {
	case <-m.Done():
		e.log.Info("unmounted from outside", "mountpoint", mnt)
		return nil
	case <-ctx.Done():
	}
	if err := m.Unmount(unmountGrace); err != nil {
		return err
	}
	e.log.Info("unmounted", "mountpoint", mnt)
	return nil
}

// openSource opens one Bupstash repository with its key.
func openSource(ctx context.Context, e *env, s bupstashConfig, chunks *cache.ChunkCache) (*bupstash.Repository, error) {
	var key *bupstash.Key
	var err error
	switch {
	case s.Key != "":
		key, err = bupstash.LoadKey(s.Key)
	case s.KeyCommand != "":
		key, err = bupstash.KeyFromCommand(ctx, s.KeyCommand)
	default:
		key, err = bupstash.KeyFromEnv(ctx, e.getenv)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Repo, err)
	}
	return bupstash.Open(ctx, s.Repo, key, bupstash.Options{Cache: chunks, Logger: e.log})
}

func idFlag(name, flagValue string, cfgValue *int64) (*uint32, error) {
	if flagValue == "" {
		if cfgValue == nil {
			return nil, nil
		}
		flagValue = strconv.FormatInt(*cfgValue, 10)
	}
	v, err := strconv.ParseUint(flagValue, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s wants a numeric id, not %q", errUsage, name, flagValue)
	}
	id := uint32(v)
	return &id, nil
}

func parseConfigSize(key, s string) (byteSize, error) {
	n, err := parseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("config %s: %w", key, err)
	}
	return byteSize(n), nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
