// Package s3store is a backupy.ObjectStore over a bucket prefix of an S3
// service: AWS, or any S3-compatible one (MinIO, Ceph, Versity, …). Nothing
// in it names a provider: where the service is, who the user is and in
// which region come from the AWS SDK's standard chain (the AWS_* variables,
// AWS_PROFILE with ~/.aws/config and credentials, web identity, instance
// and container roles), or from Options.
//
// It lives under repo/backupy because it is one of Backupy's transports:
// it knows nothing of Backupy's format, but its contract (one listing level
// at a time, reads of one object version) is backupy.ObjectStore's, and
// only Backupy stores objects in buckets. Keeping it out of package backupy
// keeps the AWS SDK out of everything that reads local stores and out of
// backupy's own tests; package location is what picks it, for s3:// URLs.
//
// What is fetched when:
//
//   - Listing: one ListObjectsV2 request per 1,000 keys of a directory
//     level, with "/" as the delimiter, when the Store first lists that
//     level and again once its listing has expired. Nothing is fetched for
//     levels nobody looks at.
//   - Reads: ranged GETs of the listed version only (If-Match on its
//     ETag, and the answer's ETag checked too), so bytes of two versions
//     are never mixed: a replaced or deleted object fails the read with
//     backupy.ErrChanged. Small reads (headers, the end-of-stream marker)
//     fetch a 64 KiB window, kept by the open object, so sorting a new
//     object costs two or three small GETs. The Store sizes the reads of
//     frames and of full passes (ReadTuning) to whole frames.
//
// Failures: throttling (503 SlowDown and the like), 5xx answers,
// connection resets and stalls are retried with exponential backoff and
// jitter, each attempt bounded by Options.StallTimeout without progress
// and all attempts together by Options.Timeout; then the operation fails
// with ErrUnreachable, which the FUSE layer answers with EIO. Answers
// that retrying cannot change (access denied, wrong credentials, no such
// bucket) fail at once with a *ServiceError: one line naming the store
// and what S3 said.
package s3store
