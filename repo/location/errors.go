package location

import "errors"

// Errors of Parse and the Open functions. Callers test them with
// errors.Is.
var (
	// ErrEmpty is an empty location.
	ErrEmpty = errors.New("empty repository location")
	// ErrUnknownScheme is a URL whose scheme names no transport.
	ErrUnknownScheme = errors.New("unknown location scheme")
	// ErrBadURL is a URL of a known scheme that lacks what it needs.
	ErrBadURL = errors.New("malformed location")
	// ErrUnsupported is a scheme that this kind of source cannot use.
	ErrUnsupported = errors.New("scheme not supported")
)
