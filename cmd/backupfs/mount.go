package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/mountpoint"
	"github.com/backupfs/backupfs/internal/shellwords"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// unmountGrace is how long open files keep being served after an unmount
// was asked for while they were busy.
const unmountGrace = 5 * time.Second

// A mount runs in four steps, one function each: the command line is
// parsed (mountFlags), the sources are resolved from the flags, the
// configuration file and the environment (resolveMount), opened
// (openSources), and served until unmounted (serve).

// mountFlags are mount's command line.
type mountFlags struct {
	repo, key, name, config string
	allowOther, debug       bool
	uid, gid, xattrs, pprof string
	query                   string // see mount_query.go
	cacheSize, indexMemory  byteSize
	backupy                 backupyMountFlags
	// item is ITEM[:PATH], one item's tree to show at the mount's root.
	item string
	// options are the -o lists (mountopts.go).
	options []string
	// foreground and background say how the command runs: background
	// returns once mounted (daemon.go); foreground, the default of
	// backupfs mount, wins.
	foreground, background bool
	logFile                string
	allowNonEmpty          bool
	// noexec is mount(8)'s -o noexec.
	noexec bool
	remote remoteFlags
	// changed reports a flag given on the command line, which wins over
	// the configuration file.
	changed func(name string) bool
}

// newMountCommand builds mount; global applies the global flags, once
// the -o options (which may set them: -o verbose) are.
func newMountCommand(e *env, global func(*cobra.Command) error) *cobra.Command {
	mf := &mountFlags{cacheSize: bupstash.DefaultCacheSize, indexMemory: fusefs.DefaultIndexMemory}
	c := &cobra.Command{
		Use:   "mount [flags] [ITEM[:PATH]] MOUNTPOINT",
		Short: "Mount repositories and blob stores as a read-only filesystem",
		Long: `Mount Bupstash repositories and Backupy blob stores on MOUNTPOINT as a read-only
filesystem, and serve it in the foreground until Ctrl-C, SIGTERM, umount or
fusermount3 -u (--background: return once mounted, and serve in the
background). Each source is a directory of the mount: ids/<item-id>/, latest,
by-time/ and by-tag/ for a Bupstash repository; the objects' tree of decoded
dumps for a Backupy store. With ITEM (an item id or a unique prefix of one,
or a query that names one item), the mount shows that item's tree at its
root, or the directory PATH in it.

Sources come from --repo (or $BUPSTASH_REPOSITORY), --backupy, and the
configuration file (--config, or $XDG_CONFIG_HOME/backupfs/config.toml,
~/.config/backupfs/config.toml or /etc/backupfs/config.toml, the first that
exists). MOUNTPOINT must be an empty directory unless --allow-non-empty.

` + optionsHelp,
		Annotations: map[string]string{annotationService: "yes"},
		Args:        wantArgs(1, 2, "want MOUNTPOINT, or ITEM[:PATH] MOUNTPOINT"),
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := applyMountOptions(c.Flags(), mf); err != nil {
				return err
			}
			if err := global(c); err != nil {
				return err
			}
			if mf.debug && e.level != nil {
				// --debug traces every request go-fuse sees, at debug
				// level, as they come.
				e.level.Set(slog.LevelDebug)
				e.out.release()
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			mf.changed = c.Flags().Changed
			if len(args) == 2 {
				if mf.item != "" {
					return usageError("ITEM is given twice: as an argument and as --item")
				}
				mf.item = args[0]
			}
			return runMount(c.Context(), e, mf, args[len(args)-1])
		},
	}
	mf.register(c.Flags())
	return c
}

func (mf *mountFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&mf.repo, "repo", "", "Bupstash `REPOSITORY` to mount: a directory, or ssh://[USER@]HOST[:PORT]/PATH (default $BUPSTASH_REPOSITORY, or $BUPSTASH_REPOSITORY_COMMAND)")
	fs.StringVar(&mf.key, "key", "", "its key `FILE` (default $BUPSTASH_KEY, or the output of $BUPSTASH_KEY_COMMAND)")
	fs.StringVar(&mf.name, "name", "", "directory `NAME` for --repo in the mount (default: the repository's base name)")
	fs.StringVar(&mf.config, "config", "", "configuration `FILE` naming several sources (default $XDG_CONFIG_HOME/backupfs/config.toml, if present)")
	fs.BoolVar(&mf.allowOther, "allow-other", false, "let other users in (the saved permissions still apply)")
	fs.StringVar(&mf.uid, "uid", "", "show every file as owned by this user `ID` (default: the saved owners)")
	fs.StringVar(&mf.gid, "gid", "", "show every file as owned by this group `ID` (default: the saved groups)")
	fs.StringVar(&mf.xattrs, "xattrs", "auto", "extended attributes, `MODE` auto (the kernel caches ACL queries), on, or off (fastest ls -l)")
	fs.Var(&mf.cacheSize, "cache-size", "memory for decoded chunks (suffixes K, M, G)")
	fs.Var(&mf.indexMemory, "index-memory", "memory for decoded file trees; least recently used ones are dropped")
	fs.BoolVar(&mf.debug, "debug", false, "log every FUSE request")
	fs.StringVar(&mf.pprof, "pprof", "", "serve net/http/pprof on `ADDR`, e.g. 127.0.0.1:6060 (default: off)")
	registerMountQuery(fs, &mf.query)
	fs.StringVar(&mf.item, "item", "", "show one item's tree at the mount's root: `ITEM[:PATH]`, an item id or unique prefix and a directory in it, or a query naming one item (default: every source whole)")
	fs.BoolVar(&mf.allowNonEmpty, "allow-non-empty", false, "mount on a directory that has files (hidden while mounted)")
	fs.StringArrayVarP(&mf.options, "options", "o", nil, "mount `OPTIONS`, comma-separated: the flags' names with _ for -, and mount(8)'s (repeatable)")
	fs.BoolVarP(&mf.foreground, "foreground", "f", false, "serve in the foreground (the default, except in the mount(8) form)")
	fs.BoolVar(&mf.background, "background", false, "return once mounted, and serve in the background")
	fs.StringVar(&mf.logFile, "log-file", "", "in the background, log to `FILE` (default: the journal under systemd, else syslog)")
	mf.backupy.register(fs)
	mf.remote.register(fs)
}

// mountPlan is what to mount, and how, once flags, configuration file and
// environment are reconciled. Every local path in it is absolute, so that
// a mount serving in the background can leave its working directory.
type mountPlan struct {
	mountpoint    string
	bupstash      []bupstashSource
	backupy       []backupyConfig
	cacheSize     int64
	remote        location.Remote
	fs            fusefs.Options
	mount         fusefs.MountOptions
	allowNonEmpty bool
	// item and itemPath: one item's tree (or a directory in it) at the
	// mount's root; itemID is the id item was found to name.
	item             *itemSpec
	itemPath, itemID string
}

// bupstashSource is one Bupstash repository to mount.
type bupstashSource struct {
	name string
	loc  location.Location
	// key and keyCommand, or neither for the Bupstash environment's key.
	key, keyCommand string
}

func runMount(ctx context.Context, e *env, mf *mountFlags, mnt string) error {
	plan, err := resolveMount(e, mf, mnt)
	if err != nil {
		return err
	}
	if mf.background && !mf.foreground && e.daemon == nil {
		// The daemon profiles itself, if asked.
		e.stopProfiling()
		e.stopProfiling = func() {}
		return startDaemon(ctx, e, mnt, mf.logFile)
	}
	if mf.pprof != "" {
		stop, err := startProfiling(mf.pprof, "", e.log)
		defer stop()
		if err != nil {
			return err
		}
	}
	starting := e.startProgress("mounting on "+mnt, false, -1, nil)
	defer starting.finish()
	defer mf.backupy.wipeKeys() // after the stores are closed by openSources' closer
	filesystem, dirs, closeSources, err := openSources(ctx, e, plan, &mf.backupy)
	if err != nil {
		return err
	}
	defer closeSources()
	return serve(ctx, e, filesystem, plan, dirs, func() error {
		// Mounted: what was held back while starting is said, and a
		// mount in the background lets the command that waits return.
		starting.finish()
		starting = nil
		if e.out != nil {
			e.out.release()
		}
		return e.daemon.ready(e.out)
	})
}

// resolveMount reconciles the flags, the configuration file and the
// Bupstash environment into a plan. Flags win over the file.
func resolveMount(e *env, mf *mountFlags, mnt string) (*mountPlan, error) {
	cfgFile, explicit := mf.config, mf.config != ""
	searched := defaultConfigPaths(e.getenv)
	if !explicit {
		cfgFile = findConfig(searched)
	} else if abs, err := filepath.Abs(cfgFile); err == nil {
		cfgFile = abs // the paths it names are relative to it
	}
	cfg, err := loadConfig(cfgFile, explicit)
	if err != nil {
		return nil, err
	}
	plan := &mountPlan{mountpoint: mnt, cacheSize: int64(mf.cacheSize), allowNonEmpty: mf.allowNonEmpty}
	if !mf.changed("cache-size") && cfg.CacheSize != "" {
		if plan.cacheSize, err = parseConfigSize("cache_size", cfg.CacheSize); err != nil {
			return nil, err
		}
	}
	plan.fs.IndexMemory = int64(mf.indexMemory)
	if !mf.changed("index-memory") && cfg.IndexMemory != "" {
		if plan.fs.IndexMemory, err = parseConfigSize("index_memory", cfg.IndexMemory); err != nil {
			return nil, err
		}
	}
	xattrs := mf.xattrs
	if !mf.changed("xattrs") && cfg.Xattrs != "" {
		xattrs = cfg.Xattrs
	}
	if plan.fs.Xattrs, err = fusefs.ParseXattrMode(xattrs); err != nil {
		return nil, usageError("%v", err)
	}
	if plan.fs.UID, err = idFlag("uid", mf.uid, cfg.UID); err != nil {
		return nil, err
	}
	if plan.fs.GID, err = idFlag("gid", mf.gid, cfg.GID); err != nil {
		return nil, err
	}
	plan.fs.Logger = e.log
	if plan.fs.Select, err = mountSelector(e, mf.query); err != nil {
		return nil, err
	}
	plan.mount = fusefs.MountOptions{AllowOther: mf.allowOther || cfg.AllowOther, Debug: mf.debug, NoExec: mf.noexec}

	// Sources: the config file's, and the one the flags or the Bupstash
	// environment name.
	if plan.remote, err = mf.remote.resolve(e, &cfg.remoteConfig, mf.changed); err != nil {
		return nil, err
	}
	for _, s := range cfg.Bupstash {
		loc, err := bupstashConfigLocation(s)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", cfgFile, err)
		}
		src, err := newBupstashSource(s.Name, loc, s.Key, s.KeyCommand)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", cfgFile, err)
		}
		plan.bupstash = append(plan.bupstash, src)
	}
	var loc location.Location
	ok := mf.repo != ""
	if ok {
		loc, err = location.Parse(mf.repo)
	} else {
		loc, ok, err = bupstashLocation(e.getenv)
	}
	switch {
	case err != nil:
		return nil, err
	case ok:
		src, err := newBupstashSource(mf.name, loc, mf.key, "")
		if err != nil {
			return nil, err
		}
		plan.bupstash = append(plan.bupstash, src)
	case mf.key != "" || mf.name != "":
		return nil, usageError("--key and --name describe --repo, which is not given (nor BUPSTASH_REPOSITORY)")
	}
	plan.backupy = cfg.Backupy
	for _, dir := range mf.backupy.dirs {
		plan.backupy = append(plan.backupy, backupyConfig{Dir: dir, Views: mf.backupy.views, CacheDir: mf.backupy.cacheDir})
	}
	if len(plan.bupstash)+len(plan.backupy) == 0 {
		where := strings.Join(searched, " or ")
		if explicit {
			where = cfgFile
		}
		return nil, usageError("nothing to mount: use --repo (or set BUPSTASH_REPOSITORY) or --backupy, or list sources in %s", where)
	}
	for i := range plan.backupy {
		b := &plan.backupy[i]
		if b.Dir, err = absPath(b.Dir); err != nil {
			return nil, err
		}
		if b.CacheDir == "" {
			b.CacheDir = mf.backupy.cacheDir
		}
		if b.CacheDir == "" {
			if b.CacheDir, err = defaultBackupyCacheDir(e.getenv); err != nil {
				return nil, err
			}
		}
		if b.CacheDir, err = absPath(b.CacheDir); err != nil {
			return nil, err
		}
	}
	if mf.item != "" {
		if len(plan.bupstash) != 1 || len(plan.backupy) != 0 {
			return nil, usageError("ITEM is an item of one repository: mount it with --repo (or BUPSTASH_REPOSITORY, or a configuration file) naming one Bupstash repository alone")
		}
		if mf.query != "" {
			return nil, usageError("ITEM and --query both choose what to mount: give one")
		}
		if plan.item, plan.itemPath, err = parseMountItem(mf.item); err != nil {
			return nil, err
		}
	}
	plan.mount.Source = mountSource(plan)
	return plan, nil
}

// absPath makes a local path absolute; a URL stays as it is.
func absPath(p string) (string, error) {
	if p == "" || location.IsURL(p) {
		return p, nil
	}
	return filepath.Abs(p)
}

// mountSource names what is mounted, for the source field of
// /proc/mounts (backupfs:SOURCE): the repository's or store's location,
// and with several sources their locations joined by ';', cut short. One
// item's tree adds :ITEM-ID[:PATH] (planItemRoot), as the command line
// names it.
func mountSource(plan *mountPlan) string {
	var locs []string
	for _, s := range plan.bupstash {
		locs = append(locs, s.loc.Display())
	}
	for _, b := range plan.backupy {
		locs = append(locs, b.Dir)
	}
	const max = 240
	var b strings.Builder
	for i, l := range locs {
		sep := ""
		if i > 0 {
			sep = ";"
		}
		if b.Len()+len(sep)+len(l) > max {
			fmt.Fprintf(&b, "%s…+%d", sep, len(locs)-i)
			break
		}
		b.WriteString(sep + l)
	}
	return b.String()
}

func newBupstashSource(name string, loc location.Location, key, keyCommand string) (bupstashSource, error) {
	loc, err := loc.Abs()
	if err != nil {
		return bupstashSource{}, err
	}
	if name == "" {
		name = loc.Name()
	}
	return bupstashSource{name: name, loc: loc, key: key, keyCommand: keyCommand}, nil
}

// bupstashConfigLocation is where a [[bupstash]] section points: repo,
// or repository_command.
func bupstashConfigLocation(s bupstashConfig) (location.Location, error) {
	if s.RepositoryCommand != "" {
		return location.FromCommand(s.RepositoryCommand)
	}
	return location.Parse(s.Repo)
}

// openSources opens every source of the plan into one filesystem. It
// returns the directories the mountpoint must stay out of, and a function
// that closes what was opened (Backupy stores save what they learned).
func openSources(ctx context.Context, e *env, plan *mountPlan, by *backupyMountFlags) (_ *fusefs.FS, dirs []string, _ func(), err error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	chunks := cache.New(plan.cacheSize, cache.WithDecoders(decoders))
	filesystem := fusefs.New(plan.fs)
	for _, s := range plan.bupstash {
		repo, err := openBupstashSource(ctx, e, s, chunks, plan.remote)
		if err != nil {
			return nil, nil, nil, err
		}
		closers = append(closers, func() { repo.Close() }) // ends a remote repository's servers
		if plan.item != nil {
			if err := planItemRoot(ctx, e, plan, s, repo); err != nil {
				return nil, nil, nil, err
			}
		}
		if err := filesystem.AddBupstash(s.name, repo); err != nil {
			return nil, nil, nil, naming(s.loc.String(), err)
		}
		if s.loc.Scheme == location.Local {
			dirs = append(dirs, s.loc.Path)
		}
	}
	for _, sc := range plan.backupy {
		store, err := openStore(ctx, e, sc, by, chunks)
		if err != nil {
			return nil, nil, nil, err
		}
		closers = append(closers, func() { store.Close() }) // saves what passes learned (sizes, checksums)
		n := sc.Name
		if n == "" {
			n = backupyName(sc.Dir)
		}
		if err := filesystem.AddBackupy(n, store); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", sc.Dir, err)
		}
		if !location.IsURL(sc.Dir) {
			dirs = append(dirs, sc.Dir)
		}
		dirs = append(dirs, store.CacheDir())
	}
	return filesystem, dirs, closeAll, nil
}

// parseMountItem reads ITEM[:PATH]: an item id or a unique prefix of one,
// and a directory in it; or a query that must match one item, split into
// words as a shell would (a query may hold colons: timestamp=… 04:29:*),
// for which the item's whole tree is mounted.
func parseMountItem(s string) (*itemSpec, string, error) {
	if id, p, _ := strings.Cut(s, ":"); isIDPrefix(id) {
		return &itemSpec{prefix: strings.ToLower(id)}, cleanPath(p), nil
	}
	words, err := shellwords.Split(s)
	if err != nil || len(words) == 0 {
		return nil, "", usageError("want ITEM[:PATH] (an item id or a unique prefix of one, then a directory in it) or a query naming one item, not %q", s)
	}
	spec, err := parseItemSpec(words)
	return spec, "", err
}

// planItemRoot finds the item the plan names and sets the mount's root to
// its tree, or to the directory in it. The repository remembers the items
// it decoded: the filesystem's own listing reads nothing twice.
func planItemRoot(ctx context.Context, e *env, plan *mountPlan, s bupstashSource, repo *bupstash.Repository) error {
	it, err := selectItem(ctx, e, repo, plan.item, query.Env{Now: time.Now(), Location: localZone(e.getenv)})
	if err != nil {
		return err
	}
	id := it.ID.String()
	plan.mount.Root = s.name + "/ids/" + id
	plan.mount.Source += ":" + id
	if plan.itemPath != "" {
		if !it.HasIndex() {
			return fmt.Errorf("item %s: %s: %w (a raw item is one file, shown in a directory of its own)", id, plan.itemPath, errNotDirectory)
		}
		plan.mount.Root += "/" + plan.itemPath
		plan.mount.Source += ":" + plan.itemPath
	}
	plan.itemID = id
	return nil
}

// openBupstashSource opens one Bupstash repository with its key.
func openBupstashSource(ctx context.Context, e *env, s bupstashSource, chunks *cache.ChunkCache, remote location.Remote) (*bupstash.Repository, error) {
	key, err := bupstashKey(ctx, e, s.key, s.keyCommand)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.loc, err)
	}
	// A mount is read soon after it starts: the first read finds a
	// connection ready.
	remote.Warm = true
	repo, err := location.OpenBupstashWith(ctx, s.loc, key, bupstash.Options{Cache: chunks, Logger: e.log}, remote)
	return repo, bupstashOpenError(err)
}

// serve mounts the filesystem, calls ready, and serves it until it is
// unmounted from outside or ctx ends (SIGINT, SIGTERM), then unmounts it.
func serve(ctx context.Context, e *env, filesystem *fusefs.FS, plan *mountPlan, sourceDirs []string, ready func() error) error {
	mnt, err := mountpoint.Prepare(plan.mountpoint, sourceDirs, plan.allowNonEmpty)
	if err != nil {
		return err
	}
	m, err := filesystem.Mount(mnt, plan.mount)
	if plan.itemID != "" && errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("item %s: %s: %w", plan.itemID, plan.itemPath, errNoSuchPath)
	}
	if plan.itemID != "" && errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("item %s: %s: %w", plan.itemID, plan.itemPath, errNotDirectory)
	}
	if err != nil {
		return err
	}
	govern, stopGoverning := context.WithCancel(ctx)
	defer stopGoverning()
	go governHeap(govern, filesystem)
	if err := ready(); err != nil {
		e.log.Warn("mounted, but", "err", err)
	}
	e.log.Info("mounted; unmount with Ctrl-C, umount or fusermount3 -u", "mountpoint", mnt, "sources", len(plan.bupstash)+len(plan.backupy))
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

func idFlag(name, flagValue string, cfgValue *int64) (*uint32, error) {
	if flagValue == "" {
		if cfgValue == nil {
			return nil, nil
		}
		flagValue = strconv.FormatInt(*cfgValue, 10)
	}
	v, err := strconv.ParseUint(flagValue, 10, 32)
	if err != nil {
		return nil, usageError("--%s wants a numeric id, not %q", name, flagValue)
	}
	id := uint32(v)
	return &id, nil
}

func parseConfigSize(key, s string) (int64, error) {
	n, err := parseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("config %s: %w", key, err)
	}
	return n, nil
}

// naming prefixes err with the source it concerns, unless it names it
// already: a repository's own errors start with its directory, and the
// mount used to say "backupfs mount: /r: /r: tx.wal: …".
func naming(where string, err error) error {
	if strings.HasPrefix(err.Error(), where+": ") {
		return err
	}
	return fmt.Errorf("%s: %w", where, err)
}
