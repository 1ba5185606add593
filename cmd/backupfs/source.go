package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// repoFlags are the flags that name a Bupstash repository and its key.
type repoFlags struct {
	repo, key string
	cacheSize byteSize
}

func (f *repoFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.repo, "repo", "", "repository directory (default $BUPSTASH_REPOSITORY)")
	fs.StringVar(&f.key, "key", "", "key file (default $BUPSTASH_KEY, or the output of $BUPSTASH_KEY_COMMAND)")
	f.cacheSize = bupstash.DefaultCacheSize
	fs.Var(&f.cacheSize, "cache-size", "chunk cache size in bytes (suffixes K, M, G)")
}

// open opens the repository the flags (or the environment) name.
func (f *repoFlags) open(ctx context.Context, e *env) (*bupstash.Repository, error) {
	dir := f.repo
	if dir == "" {
		dir = e.getenv("BUPSTASH_REPOSITORY")
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: no repository: use --repo or set BUPSTASH_REPOSITORY", errUsage)
	}
	var key *bupstash.Key
	var err error
	if f.key != "" {
		key, err = bupstash.LoadKey(f.key)
	} else {
		key, err = bupstash.KeyFromEnv(ctx, e.getenv)
	}
	if errors.Is(err, bupstash.ErrNoKey) {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return nil, err
	}
	return bupstash.Open(ctx, dir, key, bupstash.Options{Cache: cache.New(int64(f.cacheSize)), Logger: e.log})
}

// item opens the repository and finds the item an id or id prefix names.
// An item made under another primary key is reported as such, naming both
// keys, rather than as missing.
func (f *repoFlags) item(ctx context.Context, e *env, id string) (*bupstash.Repository, *bupstash.Item, error) {
	r, err := f.open(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	l, err := r.List(ctx)
	if err != nil {
		// Damaged items are reported only if the one asked for is among
		// them; the rest of the repository is still usable.
		for _, ie := range itemErrors(err) {
			if len(id) <= 32 && hasPrefixFold(ie.ID.String(), id) {
				return nil, nil, ie
			}
		}
		if len(itemErrors(err)) == 0 {
			return nil, nil, err
		}
	}
	it, err := l.Find(id)
	if err != nil {
		return nil, nil, err
	}
	return r, it, nil
}

func itemErrors(err error) []*bupstash.ItemError {
	var out []*bupstash.ItemError
	var walk func(error)
	walk = func(err error) {
		var ie *bupstash.ItemError
		if errors.As(err, &ie) {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			out = append(out, ie)
		}
	}
	walk(err)
	return out
}

func hasPrefixFold(s, prefix string) bool {
	if len(prefix) > len(s) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		a, b := s[i], prefix[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
