package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testrepo"
)

// waitForIDs polls a mount's ids/ until it lists want (sorted), or fails.
func waitForIDs(t *testing.T, p *mountProcess, dir string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s lists %v, want %v; log:\n%s", dir, got, want, p.stderr)
}

// mount --query shows only the items the query selects, and follows items
// as they come and go.
func TestMountQuery(t *testing.T) {
	repo := copyRepo(t, repo012)
	aside := filepath.Join(t.TempDir(), "48a2")
	items := filepath.Join(repo, "items")
	const xattrs, stdin, multi = "fdd75e29487490b4ef3eb1792242fc00", "d5dbf2447bdcf7807b25732d40a02b35", "48a22dd86a5d60520ab4a0f6f1c07bef"
	if err := os.Rename(filepath.Join(items, multi), aside); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	p := startMount(t, nil, "--repo", repo, "--key", abs(t, primary012), "--name", "r",
		"--query", "name=tree.tar or 'fixture=std*' and ~size=0B", mnt)
	ids := filepath.Join(mnt, "r", "ids")
	waitForIDs(t, p, ids, xattrs, stdin)
	if ents, err := os.ReadDir(filepath.Join(mnt, "r", "by-tag", "fixture")); err != nil || len(ents) != 2 {
		t.Errorf("by-tag/fixture: %v %v", ents, err)
	}
	// Open a file of the item that will leave the repository.
	if b, err := os.ReadFile(filepath.Join(ids, stdin, "data")); err != nil || string(b) != "hello from stdin\n" {
		t.Fatalf("%q %v", b, err)
	}
	// An item that matches arrives, one leaves.
	if err := os.Rename(aside, filepath.Join(items, multi)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(items, stdin), filepath.Join(items, stdin+".removed")); err != nil {
		t.Fatal(err)
	}
	waitForIDs(t, p, ids, xattrs, multi)
	if !strings.Contains(p.stderr.String(), "item removed from the repository") {
		t.Errorf("no removal logged:\n%s", p.stderr)
	}
}

// Ages count from the moment of looking: an item becomes "older than 1d"
// while the mount runs, and shows up then, never before.
func TestMountQueryByAge(t *testing.T) {
	backupfsBinary(t) // built before the clock starts
	dir := t.TempDir()
	r, err := testrepo.Create(filepath.Join(dir, "repo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key")
	if err := r.WriteKey(key); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ripe := now.Add(4 * time.Second) // when the second item turns 1 day old
	var ids []string
	for i, ts := range []time.Time{now.Add(-48 * time.Hour), ripe.Add(-24 * time.Hour), now.Add(-time.Hour)} {
		info, err := r.AddRaw(context.Background(), strings.NewReader("item"), testrepo.ItemMeta{Timestamp: ts, Tags: map[string]string{"n": string(rune('a' + i))}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID.String())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	p := startMount(t, nil, "--repo", filepath.Join(dir, "repo"), "--key", key, "--name", "r", "--query", "older-than 1d", mnt)
	idsDir := filepath.Join(mnt, "r", "ids")
	// Until it is a day old the item must not show; after, it must (how
	// much of the wait a slow machine spends mounting does not matter).
	deadline := ripe.Add(15 * time.Second)
	for {
		ents, err := os.ReadDir(idsDir)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		looked := time.Now()
		switch {
		case slices.Contains(got, ids[1]) && looked.Before(ripe.Add(-50*time.Millisecond)): // timestamps are kept to the millisecond
			t.Fatalf("%s listed %v before it was a day old; log:\n%s", idsDir, got, p.stderr)
		case slices.Contains(got, ids[1]):
			if want := []string{ids[0], ids[1]}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Fatalf("%s lists %v, want %v", idsDir, got, want)
			}
			return
		case !slices.Equal(got, []string{ids[0]}):
			t.Fatalf("%s lists %v, want only %v until %v", idsDir, got, ids[0], ripe)
		case looked.After(deadline):
			t.Fatalf("%s still lists %v long after %s turned a day old; log:\n%s", idsDir, got, ids[1], p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A query that does not parse is a usage error before anything is mounted.
func TestMountQueryRefused(t *testing.T) {
	for _, q := range []string{"name=[", "name=a and", "'unclosed", " "} {
		r := runCmd(t, nil, "mount", "--repo", repo012, "--key", primary012, "--query", q, t.TempDir())
		if r.code != exitUsage || !strings.Contains(r.stderr, "--query") {
			t.Errorf("--query %q: %d %q", q, r.code, r.stderr)
		}
	}
}
