// Command bench runs backupfs's end-to-end benchmarks (package bench) and
// writes their results as Markdown:
//
//	bench -backupfs bin/backupfs -ceilingfs bin/ceilingfs -out bench/results.md
//
// It needs root (it mounts FUSE filesystems directly and sets their
// readahead), about 10 GB of free space in -work for the generated
// repositories (kept for later runs), and coreutils, findutils and tar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/bench"
	"github.com/backupfs/backupfs/internal/testrepo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		backupfs  = flag.String("backupfs", "bin/backupfs", "backupfs binary to time")
		ceilingfs = flag.String("ceilingfs", "bin/ceilingfs", "ceiling filesystem binary")
		genuine   = flag.String("bupstash", defaultBupstash(), "genuine bupstash 0.12.1, the reference of the diff and remote groups")
		work      = flag.String("work", defaultWork(), "directory for generated datasets and mountpoints")
		out       = flag.String("out", "bench/results.md", "Markdown file for the results (- for none)")
		runs      = flag.Int("runs", 3, "runs of each measurement (the median is reported)")
		cache     = flag.String("cache-size", "256M", "the mounts' --cache-size")
		only      = flag.String("only", "", "comma-separated groups to run: "+strings.Join(bench.Groups, ","))
		versitygw = flag.String("versitygw", os.Getenv("BACKUPFS_VERSITYGW"), "the S3 server of the s3 group (default $BACKUPFS_VERSITYGW)")
		version   = flag.String("version", "dev", "backupfs version, for the report")
		prepare   = flag.Bool("prepare", false, "only generate the datasets")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	if *prepare {
		for _, d := range bench.Datasets {
			if _, err := bench.Prepare(ctx, d, *work, logf); err != nil {
				return err
			}
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmarks mount FUSE filesystems directly")
	}
	cacheSize, err := testrepo.ParseSize(*cache)
	if err != nil {
		return err
	}
	for _, p := range []*string{backupfs, ceilingfs} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
		if _, err := os.Stat(*p); err != nil {
			return fmt.Errorf("%w (build it first: make bench does)", err)
		}
	}
	cfg := bench.Config{
		Backupfs: *backupfs, Ceilingfs: *ceilingfs, Bupstash: *genuine, Versitygw: *versitygw, Work: *work, Runs: *runs, CacheSize: cacheSize,
		Logf: logf,
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	s, err := bench.NewSuite(cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.Run(ctx); err != nil {
		return err
	}
	fmt.Printf("== done in %v\n\n", time.Since(start).Round(time.Second))
	m := bench.ThisMachine(*version)
	if err := s.WriteMarkdown(os.Stdout, m); err != nil {
		return err
	}
	if *out == "-" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := s.WriteMarkdown(f, m); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// defaultWork is $BACKUPFS_BENCH_DIR, or a directory under /var/tmp
// (kept across reboots, unlike /tmp on many systems).
func defaultWork() string {
	if d := os.Getenv("BACKUPFS_BENCH_DIR"); d != "" {
		return d
	}
	return "/var/tmp/backupfs-bench"
}

// defaultBupstash is bupstash-0.12.1 in $BACKUPFS_BUPSTASH_TOOLS, where
// the tests find genuine binaries too, if it is there.
func defaultBupstash() string {
	if d := os.Getenv("BACKUPFS_BUPSTASH_TOOLS"); d != "" {
		p := filepath.Join(d, "bupstash-0.12.1")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
