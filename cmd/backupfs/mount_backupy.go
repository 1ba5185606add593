package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/backupy"
)

// backupyMountFlags are mount's flags for Backupy stores. Keys given here
// apply to every store; a config file's store adds its own.
type backupyMountFlags struct {
	dirs, tokens, tokenDirs, keyrings backupyList
	views, cacheDir                   string
	cacheSize                         byteSize
	strictToken                       bool
}

func (b *backupyMountFlags) register(fs *flag.FlagSet) {
	fs.Var(&b.dirs, "backupy", "directory of downloaded Backupy objects to mount (repeatable)")
	fs.Var(&b.tokens, "backupy-token", "backupy-decrypt token file (repeatable; - = stdin)")
	fs.Var(&b.tokenDirs, "backupy-token-dir", "directory of *.jwt / *.token files (repeatable)")
	fs.Var(&b.keyrings, "backupy-keyring", "keyring file of DEKs (repeatable; default $BACKUPFS_BACKUPY_KEYRING)")
	fs.StringVar(&b.views, "backupy-views", "", "extra views of each object: zst, meta (comma-separated)")
	fs.StringVar(&b.cacheDir, "backupy-cache-dir", "", "where decoded dumps are kept (default $XDG_CACHE_HOME/backupfs/backupy)")
	fs.Var(&b.cacheSize, "backupy-cache-size", "disk space for decoded dumps (default 10G)")
	fs.BoolVar(&b.strictToken, "strict-token", false, "refuse expired tokens instead of warning")
}

// parseViews turns "zst,meta" into view flags ("plain" is the default view
// and may be named too).
func parseViews(s string) (backupy.Views, error) {
	var v backupy.Views
	for _, name := range strings.Split(s, ",") {
		switch strings.TrimSpace(name) {
		case "", "plain":
		case "zst":
			v |= backupy.ViewZst
		case "meta":
			v |= backupy.ViewMeta
		case "all":
			v |= backupy.AllViews
		default:
			return 0, fmt.Errorf("%w: unknown Backupy view %q (want plain, zst, meta or all)", errUsage, name)
		}
	}
	return v, nil
}

// openStore opens a Backupy store with the keys the flags and its config
// entry name.
func openStore(ctx context.Context, e *env, sc backupyConfig, by *backupyMountFlags, chunks *cache.ChunkCache) (*backupy.Store, error) {
	views, err := parseViews(sc.Views)
	if err != nil {
		return nil, err
	}
	keys, err := backupy.LoadKeys(backupy.KeySources{
		TokenFiles:   append(append([]string(nil), by.tokens...), sc.Tokens...),
		TokenDirs:    append(append([]string(nil), by.tokenDirs...), sc.TokenDirs...),
		KeyringFiles: append(append([]string(nil), by.keyrings...), sc.Keyrings...),
		Stdin:        os.Stdin,
		StrictToken:  by.strictToken,
		Getenv:       e.getenv,
	}, e.log)
	if err != nil {
		return nil, err
	}
	cacheSize := int64(by.cacheSize)
	if sc.CacheSize != "" {
		if cacheSize, err = parseByteSize(sc.CacheSize); err != nil {
			return nil, fmt.Errorf("config cache_size of %s: %w", sc.Dir, err)
		}
	}
	return backupy.OpenStore(ctx, sc.Dir, backupy.Options{
		Logger:        e.log,
		Keys:          keys,
		Chunks:        chunks,
		CacheDir:      firstNonEmpty(sc.CacheDir, by.cacheDir),
		CacheMaxBytes: cacheSize,
		Views:         views,
	})
}
