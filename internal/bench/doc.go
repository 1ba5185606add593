// Package bench measures backupfs end to end against the limits of the
// machine it runs on, for `make bench`.
//
// It generates repositories of known shapes with package testrepo (once;
// they are kept in a work directory and reused), then times whole
// processes: `backupfs cat`, tools such as cat, ls, find and tar through a
// real `backupfs mount`, and the same tools through a trivial in-memory
// go-fuse filesystem with the same names and sizes (package ceiling), the
// fastest any FUSE filesystem can be on this machine. The limits of the
// primitives a read needs (secretbox, keyed BLAKE3, zstd, lz4,
// AES-256-GCM) are measured in-process on one core. Every figure is the
// median of several runs, and each run mounts afresh, so its peak RSS is
// the mount process's own for that run.
//
// The product never imports this package.
package bench
