// Package backupy presents Backupy backup objects as read-only files: each
// run's database dump, decrypted and decompressed, plus views for the
// compressed stream, the raw ciphertext and what is known about the object.
//
// Objects come from an ObjectStore: a directory of downloaded objects
// (LocalDir) or a bucket prefix of an S3 service. A Store lists it one
// directory level at a time, when asked (Store.Dir), and lists a level
// again once its listing is older than a short TTL; reads are ranged reads
// of one object version, never mixing the bytes of two.
//
// A Backupy object is a zstd stream, usually cut into AES-256-GCM frames
// (package gcmframe). The two layers behave very differently:
//
//   - The frame layer is random-access: frame offsets follow from the object
//     size, and each frame decrypts on its own. The ".zst" view is served
//     frame by frame through the mount's shared in-memory chunk cache.
//   - The zstd layer is sequential only: one frame with an up to 8 MiB window
//     and entropy state carried across blocks, and the agent records no
//     decoded size. Reading the dump at random therefore needs a decoded copy.
//     One background job per object decodes into an on-disk cache file and
//     publishes how far it got; reads below that mark are plain preads and
//     reads above it wait. A handle that reads from the start forwards (cat,
//     pg_restore, mongorestore) is instead served by a private decoder and
//     never waits for the disk.
//
// The decoded size is known only after one full pass unless the zstd header
// carries it. Sizes, the zstd checksum result and the ciphertext SHA-256
// found by a full pass go into a small persistent index in the cache
// directory, so later mounts list exact sizes without decoding anything.
// All the stores of a process that use one cache directory share it, and
// its index.
//
// Integrity: a frame's GCM tag does not bind it to its position, so a
// reordered or shortened object can decrypt cleanly frame by frame. Every
// full pass (a decode, or a handle's reads of a whole compressed view from
// start to end) therefore checks the end-of-stream marker, the zstd content
// checksum (decodes), and the ciphertext SHA-256 when a token or keyring
// entry binds one to the object. Damage at a frame (a failed tag, a bad
// length, truncation, trailing bytes) fails the reads that touch it and
// everything after; reads before it still work. Damage only a full pass
// sees (reordering, a bad zstd stream, a wrong hash) fails every read of
// the decoded views. A corrupt object keeps a raw view of its bytes. Random
// reads before the first full pass cannot detect reordering; that is a
// property of the format. Verdicts that depend on a token's claim (a hash
// mismatch) are never saved: the computed hash is, and compared again with
// each mount's keys.
//
// Keys come from decryption tokens (the JWTs the Backupy server hands out)
// and keyring files; see Keyring. They are matched to objects by path, run
// id, ciphertext hash and finally by trial decryption of frame 0. A key
// chosen for an object that does not open frame 0 means damage, not a
// locked object. Keys never appear in logs, errors or views; only a
// fingerprint does.
//
// Views live here, not in the FUSE layer. A Backupy object has no name,
// mode or metadata of its own worth showing: what it is called depends on
// what decrypting and sniffing it finds (".pgdump", ".sql", or ".enc" while
// no key opens it), and which views exist depends on its key and its
// integrity verdicts. So this package says which files an object shows as
// (File: name, mode, size, content, xattrs, the .meta.json document), and
// "backupfs backupy ls" and "cat" show the same names as the mount. The
// rule is the same for both formats: a repository package gives a backup's
// own files (a Bupstash snapshot's tree, a Backupy object's views); the
// FUSE layer only arranges sources and backups into directories (Bupstash's
// ids/, by-time/, by-tag/ and latest, Backupy's mirrored key directories)
// and speaks FUSE.
package backupy
