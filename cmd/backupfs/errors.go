package main

import "errors"

// The command line's own sentinels; what the packages below report has
// theirs (bupstash.ErrNoItem and the like), and exitcode.go turns both
// into exit statuses.
var (
	errNotRegular = errors.New("not a regular file")
	errNoSuchPath = errors.New("no such file or directory")

	// errNoMatch: a query that must name one item matches none.
	errNoMatch = errors.New("no item matches")
	// errManyMatches: a query that must name one item matches several.
	errManyMatches = errors.New("matches several items")
	// errNotSnapshot: diff wants a file tree, and a raw item has none.
	errNotSnapshot = errors.New("is a raw item, not a snapshot with a file tree")
)
