package s3store

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrUnreachable means the service did not answer (or kept failing in
	// ways worth retrying) within Options.Timeout. It deliberately does
	// not wrap context.DeadlineExceeded: that would read as an
	// interrupted call, not as a failed read.
	ErrUnreachable = errors.New("S3 did not answer in time")
	// ErrBadURL is an s3:// URL without a bucket, or with an invalid one.
	ErrBadURL = errors.New("malformed s3:// URL")
	// ErrService is wrapped by every *ServiceError.
	ErrService = errors.New("S3 refused the request")
	// ErrBadAnswer means an answer did not fit the request: a range that
	// was not asked for, a listing beyond its bounds.
	ErrBadAnswer = errors.New("S3 answer does not fit the request")
)

// ServiceError is an answer of the service that retrying cannot change:
// access denied, wrong credentials, no such bucket. Its message is one
// line naming the store and what the service said.
type ServiceError struct {
	Store   string // s3://bucket/prefix
	Op      string // the S3 operation, e.g. ListObjectsV2
	Status  int    // HTTP status, 0 if none
	Code    string // S3 error code, e.g. AccessDenied
	Message string // the service's message
}

func (e *ServiceError) Error() string {
	msg := fmt.Sprintf("%s: S3 said %s", e.Store, e.Code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d, %s)", e.Status, e.Op)
	}
	if hint := codeHints[e.Code]; hint != "" {
		msg += "; " + hint
	}
	return msg
}

func (e *ServiceError) Unwrap() error { return ErrService }

// codeHints say what to check for the answers users most often meet.
var codeHints = map[string]string{
	"InvalidAccessKeyId":    "check AWS_ACCESS_KEY_ID or the profile's aws_access_key_id",
	"SignatureDoesNotMatch": "check the secret key (AWS_SECRET_ACCESS_KEY or the profile's aws_secret_access_key)",
	"NoSuchBucket":          "check the bucket name and the endpoint",
	"AccessDenied":          "the credentials may not list or read this bucket prefix",
	"ExpiredToken":          "the session token expired; renew the credentials",
	"InvalidToken":          "check AWS_SESSION_TOKEN",
}
