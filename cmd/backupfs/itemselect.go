package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/spf13/pflag"
)

// Wherever bupstash takes a query, so does backupfs: list selects with
// one, and ls, cat and diff name their item with one (which must then
// match exactly one item) or, beyond what bupstash takes, with an item id
// or any unique prefix of one.

// queryFlags are the flags of commands that evaluate queries.
type queryFlags struct {
	utc bool
}

func (q *queryFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&q.utc, "utc-timestamps", false, "match the timestamp pseudo-tag in UTC rather than local time, as bupstash does with this flag")
}

// env is what queries are evaluated against: ages from now, the
// timestamp pseudo-tag in local time or UTC.
func (q *queryFlags) env(e *env) query.Env {
	return query.Env{Now: time.Now(), Location: q.location(e)}
}

func (q *queryFlags) location(e *env) *time.Location {
	if q.utc {
		return time.UTC
	}
	return localZone(e.getenv)
}

// localZone is the zone Bupstash calls local: $TZ when it names one (read
// through env, so that a test can set it), else the system's.
func localZone(getenv func(string) string) *time.Location {
	if tz := strings.TrimPrefix(getenv("TZ"), ":"); tz != "" {
		if loc, err := time.LoadLocation(tz); err == nil {
			return loc
		}
	}
	return time.Local
}

// itemSpec is how a command line names one item: an item id or a unique
// prefix of one, or a query that must match exactly one item.
type itemSpec struct {
	prefix string       // lowercase hex, when named by id or prefix
	q      *query.Query // otherwise
}

func (s *itemSpec) String() string {
	if s.q != nil {
		return s.q.String()
	}
	return s.prefix
}

// isIDPrefix reports a word that can only be an item id or a prefix of
// one: a query always has a "=".
func isIDPrefix(w string) bool {
	if w == "" || len(w) > 32 {
		return false
	}
	_, err := hex.DecodeString(w + strings.Repeat("0", len(w)%2))
	return err == nil
}

// parseItemSpec reads the words that name an item. A query that does not
// parse is a usage error, worded as Bupstash words it.
func parseItemSpec(words []string) (*itemSpec, error) {
	if len(words) == 1 && isIDPrefix(words[0]) {
		return &itemSpec{prefix: strings.ToLower(words[0])}, nil
	}
	q, err := query.Parse(words...)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return &itemSpec{q: q}, nil
}

// splitItemPath reads ls's and cat's ITEM [PATH], where ITEM may be a
// query of several words: the words are a query if they all parse as one,
// else the last word is PATH and the words before it must be a query.
// No query can end in a path (a query's words after a complete query must
// begin with "and" or "or"), so the split is never ambiguous.
func splitItemPath(args []string) (*itemSpec, string, error) {
	if isIDPrefix(args[0]) {
		switch len(args) {
		case 1:
			return &itemSpec{prefix: strings.ToLower(args[0])}, "", nil
		case 2:
			return &itemSpec{prefix: strings.ToLower(args[0])}, args[1], nil
		}
		return nil, "", usageError("want ITEM [PATH]: an id names the item alone, and %q is more than one PATH", strings.Join(args[1:], " "))
	}
	spec, err := parseItemSpec(args)
	if err == nil {
		return spec, "", nil
	}
	if len(args) > 1 {
		if spec, err2 := parseItemSpec(args[:len(args)-1]); err2 == nil {
			return spec, args[len(args)-1], nil
		}
	}
	return nil, "", err
}

// findItem opens the repository and finds the one item spec names.
func (f *repoFlags) findItem(ctx context.Context, e *env, spec *itemSpec, qenv query.Env) (*bupstash.Repository, *bupstash.Item, error) {
	r, err := f.open(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	it, err := selectItem(ctx, e, r, spec, qenv)
	if err != nil {
		return nil, nil, err
	}
	return r, it, nil
}

// selectItem finds the one item spec names among r's items. An id or
// prefix is looked up as bupstash.Listing.Find does (an item of another
// primary key is reported as such, naming both keys); so is a query of
// the form id=ID with a whole id, as Bupstash takes it without consulting
// the listing. Any other query must match exactly one item: none, or
// several, is one line naming the query (and, for several, two of the
// items). Damaged items are reported only when the one asked for may be
// among them; the rest of the repository is still usable.
func selectItem(ctx context.Context, e *env, r *bupstash.Repository, spec *itemSpec, qenv query.Env) (*bupstash.Item, error) {
	l, err := r.List(ctx)
	bad := itemErrors(err)
	if err != nil && (l == nil || len(bad) == 0) {
		return nil, err
	}
	prefix := spec.prefix
	if spec.q != nil {
		if id, ok := spec.q.ID(); ok {
			prefix = hex.EncodeToString(id[:])
		}
	}
	if prefix != "" {
		for _, ie := range bad {
			if strings.HasPrefix(ie.ID.String(), prefix) {
				return nil, ie
			}
		}
		return l.Find(prefix)
	}

	var found []*bupstash.Item
	for _, it := range l.Items {
		if spec.q.Match(queryItem(it), qenv) {
			found = append(found, it)
		}
	}
	total := len(l.Items) + len(l.Skipped) + len(bad)
	switch {
	case len(found) == 1:
		if len(bad) > 0 {
			e.warn("%d of %d items could not be read; query %q may match one of them too", len(bad), total, spec)
		}
		return found[0], nil
	case len(found) > 1:
		more := ""
		if len(found) > 2 {
			more = fmt.Sprintf(" and %d more", len(found)-2)
		}
		return nil, fmt.Errorf("query %q %w, it must match one: %s, %s%s", spec, errManyMatches, found[0].ID, found[1].ID, more)
	case len(bad) > 0:
		return nil, fmt.Errorf("%w query %q among the readable items: %w", errNoMatch, spec, badItemsError(bad, total))
	case len(l.Items) == 0 && len(l.Skipped) > 0:
		return nil, fmt.Errorf("%w query %q: %w", errNoMatch, spec, l.SkippedError())
	}
	return nil, fmt.Errorf("%w query %q%s", errNoMatch, spec, noMatchHint(spec.q, len(l.Skipped)))
}

// noMatchHint explains the likely mistakes behind a query that matches
// nothing: an id prefix written as id=PREFIX (Bupstash matches id= as a
// glob against the whole id), or items that another key made.
func noMatchHint(q *query.Query, foreign int) string {
	var hints []string
	if p, ok := strings.CutPrefix(q.String(), "id="); ok && isIDPrefix(p) && len(p) < 32 {
		hints = append(hints, fmt.Sprintf("an id prefix is given alone, as %s, or as the glob id=%s*", p, p))
	}
	if foreign > 0 {
		hints = append(hints, fmt.Sprintf("%d items made under other keys cannot be searched", foreign))
	}
	if len(hints) == 0 {
		return ""
	}
	return " (" + strings.Join(hints, "; ") + ")"
}

// queryItem is what a query sees of an item.
func queryItem(it *bupstash.Item) *query.Item {
	return &query.Item{ID: it.ID, Timestamp: it.Timestamp, Size: it.DataSize + it.IndexSize, Tags: it.Tags}
}

// itemErrors are the damaged items a listing reports, each on its own.
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
