package main

import (
	"time"

	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/internal/shellwords"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/spf13/pflag"
)

// mount --query mounts only the items a Bupstash query selects, in every
// Bupstash repository of the mount. The query is one flag value, split
// into words as a shell splits them (quotes keep a value with spaces
// together): --query 'name=home.tar and older-than 7d'. It is evaluated
// again as items come and go, and as they age.

const mountQueryUsage = "show only the items this Bupstash `QUERY` selects, e.g. 'name=home.tar and newer-than 30d' (split into words as a shell would; ages count from the moment of looking; default: every item)"

func registerMountQuery(fs *pflag.FlagSet, q *string) {
	fs.StringVar(q, "query", "", mountQueryUsage)
}

// mountSelector parses --query into the mount's item selector; no query
// gives nil, every item. Timestamps are matched in local time, as bupstash
// list matches them.
func mountSelector(e *env, text string) (fusefs.ItemSelector, error) {
	if text == "" {
		return nil, nil
	}
	words, err := shellwords.Split(text)
	if err != nil {
		return nil, usageError("--query: %v", err)
	}
	if len(words) == 0 {
		return nil, usageError("--query is empty")
	}
	q, err := query.Parse(words...)
	if err != nil {
		return nil, usageError("--query: %v", err)
	}
	loc := localZone(e.getenv)
	return func(it *bupstash.Item, now time.Time) bool {
		return q.Match(queryItem(it), query.Env{Now: now, Location: loc})
	}, nil
}
