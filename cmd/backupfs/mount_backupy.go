package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/pflag"
)

// backupyMountFlags are mount's flags for Backupy stores. Keys given here
// apply to every store; a config file's store adds its own.
type backupyMountFlags struct {
	dirs, tokens, tokenDirs, keyrings backupyList
	views, cacheDir                   string
	cacheSize                         byteSize
	strictToken, hideForeign          bool
	s3                                s3Flags

	// Key material is read once per mount, however many stores use it
	// (a token on standard input can only be read once), and wiped by
	// wipeKeys when the mount ends.
	flagKeys  *backupy.Keyring   // from the flags
	envKeys   *backupy.Keyring   // from $BACKUPFS_BACKUPY_KEYRING
	loaded    []*backupy.Keyring // everything built, for wipeKeys
	stdinUsed bool
}

func (b *backupyMountFlags) register(fs *pflag.FlagSet) {
	stringArray(fs, (*[]string)(&b.dirs), "backupy", "Backupy store to mount: a `DIR` of downloaded objects or an s3://BUCKET/PREFIX (repeatable)")
	stringArray(fs, (*[]string)(&b.tokens), "backupy-token", "backupy-decrypt token `FILE` (repeatable; - reads standard input)")
	stringArray(fs, (*[]string)(&b.tokenDirs), "backupy-token-dir", "`DIR` of *.jwt and *.token files (repeatable)")
	stringArray(fs, (*[]string)(&b.keyrings), "backupy-keyring", "keyring `FILE` of data keys (repeatable; default $"+envBackupyKeyring+")")
	fs.StringVar(&b.views, "backupy-views", "plain", "`VIEWS` of each object besides the decoded dump: zst, meta or all, comma-separated")
	fs.StringVar(&b.cacheDir, "backupy-cache-dir", "", "`DIR` for decoded dumps (default $XDG_CACHE_HOME/backupfs/backupy, ~/.cache/backupfs/backupy, or for root /var/cache/backupfs/backupy)")
	b.cacheSize = defaultBackupyCacheSize
	fs.Var(&b.cacheSize, "backupy-cache-size", "disk space for decoded dumps (suffixes K, M, G, T)")
	fs.BoolVar(&b.hideForeign, "backupy-hide-foreign", false, "hide files in Backupy stores that are not Backupy objects (default: shown byte for byte)")
	fs.BoolVar(&b.strictToken, "strict-token", false, "refuse expired tokens instead of warning")
	b.s3.register(fs)
}

// defaultBackupyCacheSize is the Backupy store's own default, said here so
// that --help shows it.
const defaultBackupyCacheSize = 10 << 30

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
			return 0, usageError("unknown Backupy view %q (want plain, zst, meta or all)", name)
		}
	}
	return v, nil
}

// load reads one set of key sources. The environment's keyring is never
// consulted here (keysFor adds it once); standard input is read at most
// once per mount.
func (b *backupyMountFlags) load(e *env, tokens, tokenDirs, keyrings []string) (*backupy.Keyring, error) {
	var stdin io.Reader
	if slices.Contains(tokens, "-") {
		if b.stdinUsed {
			return nil, usageError("a token on standard input (-) can be given only once")
		}
		b.stdinUsed = true
		stdin = os.Stdin
	}
	k, err := backupy.LoadKeys(backupy.KeySources{
		TokenFiles:   tokens,
		TokenDirs:    tokenDirs,
		KeyringFiles: keyrings,
		Stdin:        stdin,
		StrictToken:  b.strictToken,
	}, e.log)
	if err != nil {
		return nil, err
	}
	b.loaded = append(b.loaded, k)
	return k, nil
}

// keysFor returns the keys of one store: the flags' (read the first time
// any store asks), its config entry's own, and the environment's keyring
// when neither names a keyring file.
func (b *backupyMountFlags) keysFor(e *env, sc backupyConfig) (*backupy.Keyring, error) {
	if b.flagKeys == nil {
		k, err := b.load(e, b.tokens, b.tokenDirs, b.keyrings)
		if err != nil {
			return nil, err
		}
		b.flagKeys = k
	}
	keys := backupy.NewKeyring()
	b.loaded = append(b.loaded, keys)
	keys.Merge(b.flagKeys)
	if len(sc.Tokens)+len(sc.TokenDirs)+len(sc.Keyrings) > 0 {
		own, err := b.load(e, sc.Tokens, sc.TokenDirs, sc.Keyrings)
		if err != nil {
			return nil, err
		}
		keys.Merge(own)
	}
	if len(b.keyrings) == 0 && len(sc.Keyrings) == 0 {
		if b.envKeys == nil {
			k, err := backupy.LoadKeys(backupy.KeySources{KeyringFiles: envKeyrings(e)}, e.log)
			if err != nil {
				return nil, err
			}
			b.envKeys = k
			b.loaded = append(b.loaded, k)
		}
		keys.Merge(b.envKeys)
	}
	return keys, nil
}

// wipeKeys zeroes every key the mount loaded. It runs after the stores
// are closed.
func (b *backupyMountFlags) wipeKeys() {
	for _, k := range b.loaded {
		k.Wipe()
	}
	b.loaded, b.flagKeys, b.envKeys = nil, nil, nil
}

// openStore opens a Backupy store with the keys the flags and its config
// entry name.
func openStore(ctx context.Context, e *env, sc backupyConfig, by *backupyMountFlags, chunks *cache.ChunkCache) (*backupy.Store, error) {
	loc, err := location.Parse(sc.Dir)
	if err != nil {
		return nil, err
	}
	if err := checkS3Settings(loc, sc); err != nil {
		return nil, err
	}
	s3opts, err := by.s3.options(e, sc)
	if err != nil {
		return nil, err
	}
	views, err := parseViews(sc.Views)
	if err != nil {
		return nil, err
	}
	keys, err := by.keysFor(e, sc)
	if err != nil {
		if errors.Is(err, errUsage) {
			return nil, err
		}
		return nil, fmt.Errorf("keys for %s: %w", sc.Dir, err)
	}
	cacheSize := int64(by.cacheSize)
	if sc.CacheSize != "" {
		if cacheSize, err = parseByteSize(sc.CacheSize); err != nil {
			return nil, fmt.Errorf("config cache_size of %s: %w", sc.Dir, err)
		}
	}
	cacheDir := firstNonEmpty(sc.CacheDir, by.cacheDir) // resolveMount gives the default
	if cacheDir == "" {
		if cacheDir, err = defaultBackupyCacheDir(e.getenv); err != nil {
			return nil, err
		}
	}
	s, err := location.OpenBackupy(ctx, loc, backupy.Options{
		Logger:        e.log,
		Keys:          keys,
		Chunks:        chunks,
		CacheDir:      cacheDir,
		CacheMaxBytes: cacheSize,
		Views:         views,
		HideForeign:   by.hideForeign || sc.HideForeign,
	}, s3opts)
	return s, repositoryError(err)
}
