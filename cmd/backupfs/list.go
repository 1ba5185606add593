package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/spf13/cobra"
)

func newListCommand(e *env) *cobra.Command {
	var (
		rf     repoFlags
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list [flags]",
		Short: "List the items of a Bupstash repository",
		Long:  "List the items of a Bupstash repository, one per line: id, time, kind (tree or raw), size and tags.",
		Args:  wantArgs(0, 0, "list takes no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return runList(c.Context(), e, &rf, asJSON)
		},
	}
	rf.register(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per item")
	return c
}

func runList(ctx context.Context, e *env, rf *repoFlags, asJSON bool) error {
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
	if skipped := l.SkippedError(); skipped != nil && len(l.Items) == 0 && len(bad) == 0 {
		return fmt.Errorf("no item can be read with this key: %w", skipped)
	}
	enc := json.NewEncoder(e.stdout)
	for _, it := range l.Items {
		if asJSON {
			if err := enc.Encode(itemJSON(it)); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(e.stdout, "%s  %s  %-4s  %9s  %s\n", it.ID, it.Timestamp.Format(time.RFC3339), kind(it),
			humanBytes(it.DataSize+it.IndexSize), formatTags(it.Tags))
	}
	total := len(l.Items) + len(l.Skipped) + len(bad)
	if skipped := l.SkippedError(); skipped != nil {
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

type itemRecord struct {
	ID           string            `json:"id"`
	Timestamp    string            `json:"timestamp"`
	Kind         string            `json:"kind"`
	Tags         map[string]string `json:"tags"`
	DataSize     uint64            `json:"data_size"`
	IndexSize    uint64            `json:"index_size"`
	PrimaryKeyID string            `json:"primary_key_id"`
	PutKeyID     string            `json:"put_key_id"`
}

func itemJSON(it *bupstash.Item) itemRecord {
	return itemRecord{
		ID:           it.ID.String(),
		Timestamp:    it.Timestamp.Format(time.RFC3339Nano),
		Kind:         kind(it),
		Tags:         it.Tags,
		DataSize:     it.DataSize,
		IndexSize:    it.IndexSize,
		PrimaryKeyID: it.PrimaryKeyID.String(),
		PutKeyID:     it.SendKeyID.String(),
	}
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
