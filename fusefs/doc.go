// Package fusefs presents backup sources as a read-only FUSE filesystem.
//
// It speaks go-fuse's raw protocol API rather than its node API: node IDs
// are computed from what they name (an item's slot and a record number of
// its decoded index), so the filesystem keeps no per-inode state and a
// million-entry snapshot costs nothing beyond its decoded index, however
// many of its files the kernel has looked up. The views above the items
// (sources, ids/, by-time/, by-tag/, latest) are a small table of
// synthetic nodes.
//
// Everything inside an item is immutable, so the kernel is told to cache
// it for long (entries, attributes, file pages, directory listings); the
// lists of items are revalidated every second, since backups come and go.
//
// Walking a tree of small files (tar, cp -a, rsync, diff -r) is made to
// cost almost no round trips: the kernel opens and closes files without
// asking (no-open mode, ops_file.go), so readers are kept per node
// (readers.go), and once a file is read to its end the small files after
// it are given to the kernel's page cache before they are read
// (bupstash_pagecache.go).
package fusefs
