package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/query"
	"github.com/spf13/cobra"
)

func newListCommand(e *env) *cobra.Command {
	var (
		rf        repoFlags
		qf        queryFlags
		asJSON    bool
		encrypted bool
	)
	c := &cobra.Command{
		Use:   "list [flags] [QUERY...]",
		Short: "List the items of a Bupstash repository, or those a query selects",
		Long: `List the items of a Bupstash repository, one per line: id, time (UTC), kind
(tree or raw), size and tags; with a QUERY, only the items it selects, as
bupstash list QUERY... selects them (see bupstash-query-language(7) and the
README): for example

    backupfs list name=tree.tar
    backupfs list 'name=*.tar' and newer-than 7d
    backupfs list ~ [ fixture=stdin or fixture=empty-stdin ]

The words of a query are separate arguments, as for bupstash: a value runs to
the end of its argument, and "and", "or", "~", "[", "]", "older-than" and
"newer-than" stand alone. Besides an item's tags a query sees the pseudo-tags
id, size (as bupstash prints it, 16.06MiB) and timestamp (2026/11/23 04:29:51,
in local time, or UTC with --utc-timestamps).

--json prints one JSON object per item, named as bupstash list
--format=jsonl1 names the same things: id, decryption_key_id, data_tree and
index_tree (address, height, data_chunk_count; index_tree only for a
snapshot), data_size, index_size, put_key_id, unix_timestamp_millis, and tags,
which holds the item's own tags only (bupstash adds the pseudo-tags id, size
and timestamp there). backupfs adds timestamp (RFC 3339, UTC, to the
nanosecond) and kind ("tree" or "raw"). The hash key parts bupstash prints are
key material and left out.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runList(c.Context(), e, &rf, listOptions{query: args, env: qf.env(e), json: asJSON, encrypted: encrypted})
		},
	}
	rf.register(c.Flags())
	qf.register(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per item")
	c.Flags().BoolVar(&encrypted, "query-encrypted", false, "match as bupstash --query-encrypted does, seeing only the tags id and decryption-key-id of every item; items of other keys are listed too, by id and key id")
	return c
}

type listOptions struct {
	query           []string
	env             query.Env
	json, encrypted bool
}

func runList(ctx context.Context, e *env, rf *repoFlags, opts listOptions) error {
	var q *query.Query
	if len(opts.query) > 0 {
		var err error
		if q, err = query.Parse(opts.query...); err != nil {
			return usageError("%v", err)
		}
	}
	r, err := rf.open(ctx, e)
	if err != nil {
		return err
	}
	l, listErr := r.List(ctx)
	if l == nil {
		return listErr
	}
	bad := itemErrors(listErr)
	if len(bad) == 0 && listErr != nil {
		return listErr
	}
	// Nothing readable at all: the one line says why.
	if skipped := l.SkippedError(); skipped != nil && len(l.Items) == 0 && len(bad) == 0 && !opts.encrypted {
		return fmt.Errorf("no item can be read with this key: %w", skipped)
	}
	enc := newJSONLines(e.stdout)
	for _, it := range l.Items {
		switch {
		case q == nil:
		case opts.encrypted:
			if !q.MatchForeign(it.ID, it.PrimaryKeyID) {
				continue
			}
		case !q.Match(queryItem(it), opts.env):
			continue
		}
		if opts.json {
			if err := enc.Encode(itemJSON(it)); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(e.stdout, "%s  %s  %-4s  %9s  %s\n", it.ID, it.Timestamp.UTC().Format(time.RFC3339), kind(it),
			humanBytes(it.DataSize+it.IndexSize), formatTags(it.Tags))
	}
	if opts.encrypted {
		// Items of other keys: only their ids and key ids can be known.
		for _, s := range l.Skipped {
			if q != nil && !q.MatchForeign(s.ID, s.PrimaryKeyID) {
				continue
			}
			if opts.json {
				if err := enc.Encode(encryptedRecord{ID: s.ID.String(), DecryptionKeyID: s.PrimaryKeyID.String()}); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(e.stdout, "%s  %-20s  %-4s  %9s  decryption-key-id=%s\n", s.ID, "-", "-", "-", s.PrimaryKeyID)
		}
	}
	total := len(l.Items) + len(l.Skipped) + len(bad)
	if skipped := l.SkippedError(); skipped != nil && !opts.encrypted {
		e.warn("skipped %d of %d items: %s", len(l.Skipped), total, skipped.Reason())
	}
	if len(bad) > 0 {
		return badItemsError(bad, total)
	}
	return nil
}

// badItemsError says, in one line, which items could not be read and why;
// errors.Is sees each item's error.
func badItemsError(bad []*bupstash.ItemError, total int) error {
	e := &itemsError{total: total}
	for _, ie := range bad {
		e.items = append(e.items, ie)
	}
	return e
}

type itemsError struct {
	items []error
	total int
}

func (e *itemsError) Error() string {
	msgs := make([]string, len(e.items))
	for i, ie := range e.items {
		msgs[i] = ie.Error()
	}
	return fmt.Sprintf("%d of %d items could not be read: %s", len(e.items), e.total, strings.Join(msgs, "; "))
}

func (e *itemsError) Unwrap() []error { return e.items }

func kind(it *bupstash.Item) string {
	if it.HasIndex() {
		return "tree"
	}
	return "raw"
}

// itemRecord is list --json's object for an item the key can read.
type itemRecord struct {
	ID                  string                  `json:"id"`
	DecryptionKeyID     string                  `json:"decryption_key_id"`
	DataTree            treeRecord              `json:"data_tree"`
	IndexTree           *treeRecord             `json:"index_tree,omitempty"`
	DataSize            uint64                  `json:"data_size"`
	IndexSize           uint64                  `json:"index_size"`
	PutKeyID            string                  `json:"put_key_id"`
	UnixTimestampMillis int64                   `json:"unix_timestamp_millis"`
	Tags                map[string]losslessText `json:"tags"`
	Timestamp           string                  `json:"timestamp"`
	Kind                string                  `json:"kind"`
}

// treeRecord describes one of an item's hash trees, as bupstash does.
type treeRecord struct {
	Address        string `json:"address"`
	Height         uint64 `json:"height"`
	DataChunkCount uint64 `json:"data_chunk_count"`
}

// encryptedRecord is list --json --query-encrypted's object for an item
// of another key: all that can be read of it.
type encryptedRecord struct {
	ID              string `json:"id"`
	DecryptionKeyID string `json:"decryption_key_id"`
}

func itemJSON(it *bupstash.Item) itemRecord {
	tree := func(t *bupstash.HTreeMeta) treeRecord {
		return treeRecord{Address: t.Address.String(), Height: t.Height, DataChunkCount: t.DataChunkCount}
	}
	rec := itemRecord{
		ID:                  it.ID.String(),
		DecryptionKeyID:     it.PrimaryKeyID.String(),
		DataTree:            tree(&it.DataHTree),
		DataSize:            it.DataSize,
		IndexSize:           it.IndexSize,
		PutKeyID:            it.SendKeyID.String(),
		UnixTimestampMillis: it.Timestamp.UnixMilli(),
		Tags:                make(map[string]losslessText, len(it.Tags)),
		Timestamp:           it.Timestamp.UTC().Format(time.RFC3339Nano),
		Kind:                kind(it),
	}
	if it.IndexHTree != nil {
		t := tree(it.IndexHTree)
		rec.IndexTree = &t
	}
	for k, v := range it.Tags {
		rec.Tags[k] = losslessText(v)
	}
	return rec
}

// formatTags prints tags as key=value in key order, quoting values that
// would otherwise be ambiguous.
func formatTags(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := tags[k]
		if v == "" || strings.ContainsAny(v, " \t\n\"'=\\") || !strconv.CanBackquote(v) {
			v = strconv.Quote(v)
		}
		b.WriteString(k + "=" + v)
	}
	return b.String()
}
