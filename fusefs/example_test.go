package fusefs_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/fusefs"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Mount a repository read-only and serve it until Ctrl-C. (Not run as a
// test: it needs FUSE and stays mounted until interrupted.)
func Example() {
	key, err := bupstash.ParseKey([]byte(os.Getenv("KEY_FILE_CONTENTS")))
	if err != nil {
		log.Fatal(err)
	}
	chunks := cache.New(256 << 20) // decoded chunks, shared by every source
	repo, err := bupstash.Open(context.Background(), "/backups/repo", key, bupstash.Options{Cache: chunks})
	if err != nil {
		log.Fatal(err)
	}
	fsys := fusefs.New(fusefs.Options{})
	if err := fsys.AddBupstash("repo", repo); err != nil { // /mnt/backups/repo/ids/…
		log.Fatal(err)
	}
	m, err := fsys.Mount("/mnt/backups", fusefs.MountOptions{})
	if err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	select {
	case <-stop:
	case <-m.Done(): // unmounted from outside (umount, fusermount3 -u)
	}
	// Files still open keep being served for 5 s, then fail.
	if err := m.Unmount(5 * time.Second); err != nil {
		log.Fatal(err)
	}
}
