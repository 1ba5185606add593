// Package treediff compares two file trees the way `bupstash diff`
// compares them (Bupstash's src/index.rs and src/main.rs): a snapshot's
// index against another's, or against a live local directory indexed as
// Bupstash's indexer indexes it (src/indexer.rs). Entries are matched by
// path in Bupstash's index order and compared by metadata and by content
// hash; no backup data is read. A changed entry is printed twice, "- old"
// then "+ new", in Bupstash's human or jsonl1 listing format, byte for
// byte what bupstash prints.
//
// The content hash in a Bupstash index is the plain (unkeyed) BLAKE3 of
// the file's bytes, so a live file is hashed the same way, without any
// key.
package treediff
