// Command ceilingfs mounts the in-memory ceiling filesystem of a
// benchmark dataset (package ceiling) and serves it until SIGINT or
// SIGTERM, for the benchmark driver to time tools on:
//
//	ceilingfs -dataset small [-xattrs auto|on|off] MOUNTPOINT
//
// The tree is the dataset's first item, with the same names, modes, sizes
// and times as in its repository. "ready" is printed once it is mounted.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/backupfs/backupfs/internal/bench"
	"github.com/backupfs/backupfs/internal/bench/ceiling"
	"github.com/backupfs/backupfs/internal/mountpoint"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ceilingfs:", err)
		os.Exit(1)
	}
}

func run() error {
	dataset := flag.String("dataset", "", "benchmark dataset whose first item to serve")
	xattrs := flag.String("xattrs", "auto", "auto, on or off, as backupfs mount --xattrs")
	debug := flag.Bool("debug", false, "log every request")
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: ceilingfs -dataset NAME [-xattrs MODE] MOUNTPOINT")
	}
	d, err := bench.DatasetByName(*dataset)
	if err != nil {
		return err
	}
	t, err := ceiling.Build(d.ItemShape(0).Source())
	if err != nil {
		return err
	}
	dir := flag.Arg(0)
	server, err := t.Mount(dir, ceiling.Options{Xattrs: *xattrs, Debug: *debug})
	if err != nil {
		return err
	}
	_ = mountpoint.SetReadahead(dir, mountpoint.KernelReadahead)
	fmt.Println("ready")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-sig:
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		<-done
	case <-done:
	}
	return nil
}
