package bupstash_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/backupfs/backupfs/internal/untrusted"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Open a repository, find a snapshot, walk its file tree and read a file
// from it: only the index leaves and the data leaves covering the bytes
// read are fetched, verified and decrypted.
func Example() {
	ctx := context.Background()
	keyFile, err := untrusted.ReadFile("../../testdata/bupstash-0.12.1/keys/primary.key", untrusted.Key)
	if err != nil {
		log.Fatal(err)
	}
	key, err := bupstash.ParseKey(keyFile)
	if err != nil {
		log.Fatal(err)
	}
	repo, err := bupstash.Open(ctx, "../../testdata/bupstash-0.12.1/repo", key, bupstash.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()

	items, err := repo.Items(ctx) // oldest first
	if err != nil {
		log.Fatal(err)
	}
	item, err := bupstash.FindItem(items, "fdd75e29") // an id or a unique prefix
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("item", item.ID, "made", item.Timestamp.Format("2006-01-02"), "tagged", item.Tags["name"])

	open := repo.OpenItem(item)
	tree, err := open.LoadTree(ctx) // the saved file tree, decoded once
	if err != nil {
		log.Fatal(err)
	}
	sub, _ := tree.Lookup(0, []byte("sub")) // record 0 is the root
	for _, rec := range tree.Children(sub) {
		a := tree.Attr(rec)
		fmt.Printf("%s %o %d bytes\n", tree.Path(rec), a.Mode, a.Size)
	}

	rec, _ := tree.Lookup(sub, []byte("s.txt"))
	file, err := tree.File(open, rec)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, file.Size())
	if _, err := file.NewReader().ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(buf)
	// Output:
	// item fdd75e29487490b4ef3eb1792242fc00 made 2026-11-23 tagged tree.tar
	// sub/nested 40755 0 bytes
	// sub/s.txt 100644 9 bytes
	// sub file
}
