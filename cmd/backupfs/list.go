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
)

func runList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "list", "[--repo DIR] [--key FILE] [--json]")
	var rf repoFlags
	rf.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per item")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return helpRequested(fs, err)
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: list takes no arguments", errUsage)
	}
	r, err := rf.open(ctx, e)
	if err != nil {
		return err
	}
	items, listErr := r.Items(ctx)
	enc := json.NewEncoder(e.stdout)
	for _, it := range items {
		if *asJSON {
			if err := enc.Encode(itemJSON(it)); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(e.stdout, "%s  %s  %-4s  %9s  %s\n", it.ID, it.Timestamp.Format(time.RFC3339), kind(it),
			humanBytes(it.DataSize+it.IndexSize), formatTags(it.Tags))
	}
	if bad := itemErrors(listErr); len(bad) > 0 {
		for _, ie := range bad {
			fmt.Fprintf(e.stderr, "backupfs list: %v\n", ie)
		}
		return fmt.Errorf("%d of %d items could not be read", len(bad), len(bad)+len(items))
	}
	return listErr
}

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
