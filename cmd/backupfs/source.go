package main

import (
	"context"
	"errors"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/pflag"
)

// defaultLockWait is how long list, ls and cat wait for a writer (bupstash
// gc) to release the repository before giving up with exit status 11.
const defaultLockWait = time.Minute

// repoFlags are the flags that name a Bupstash repository and its key.
type repoFlags struct {
	repo, key string
	cacheSize byteSize
	lockWait  time.Duration
	remote    remoteFlags
	flags     *pflag.FlagSet
}

func (f *repoFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	f.remote.register(fs)
	fs.StringVar(&f.repo, "repo", "", "the `REPOSITORY`: a directory, or ssh://[USER@]HOST[:PORT]/PATH (default $BUPSTASH_REPOSITORY, or $BUPSTASH_REPOSITORY_COMMAND)")
	fs.StringVar(&f.key, "key", "", "key `FILE` (default $BUPSTASH_KEY, or the output of $BUPSTASH_KEY_COMMAND)")
	f.cacheSize = bupstash.DefaultCacheSize
	fs.Var(&f.cacheSize, "cache-size", "memory for decoded chunks (suffixes K, M, G)")
	fs.DurationVar(&f.lockWait, "lock-wait", defaultLockWait, "how long to wait (a `DURATION`: 30s, 5m) while a writer such as bupstash gc locks the repository")
}

// open opens the repository the flags (or the environment) name.
func (f *repoFlags) open(ctx context.Context, e *env) (*bupstash.Repository, error) {
	var loc location.Location
	var err error
	if f.repo != "" {
		loc, err = location.Parse(f.repo)
	} else {
		var ok bool
		loc, ok, err = bupstashLocation(e.getenv)
		if !ok {
			return nil, usageError("no repository: use --repo or set BUPSTASH_REPOSITORY (or BUPSTASH_REPOSITORY_COMMAND)")
		}
	}
	if err != nil {
		return nil, err
	}
	remote, err := f.remote.resolve(e, nil, f.flags.Changed)
	if err != nil {
		return nil, err
	}
	key, err := bupstashKey(ctx, e, f.key, "")
	if errors.Is(err, errNoKey) {
		return nil, usageError("%v", err)
	}
	if err != nil {
		return nil, err
	}
	r, err := location.OpenBupstashWith(ctx, loc, key, bupstash.Options{
		Cache: cache.New(int64(f.cacheSize), cache.WithDecoders(decoders)), Logger: e.log, LockWait: f.lockWait,
	}, remote)
	if r != nil {
		// A remote repository's server processes end with the command.
		e.atExit(func() { r.Close() })
	}
	return r, bupstashOpenError(err)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
