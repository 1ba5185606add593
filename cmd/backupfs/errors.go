package main

import (
	"errors"
	"fmt"
)

// The command line's own sentinels; what the packages below report has
// theirs (bupstash.ErrNoItem and the like), and exitcode.go turns both
// into exit statuses.
var (
	// errUsage marks errors in how the command was called (exit status 2).
	errUsage = errors.New("usage")
	// errUsageShown is a usage error whose explanation (the usage text)
	// has already been printed.
	errUsageShown = fmt.Errorf("%w: shown", errUsage)
	// errReported is a failure whose line was already printed (by a
	// mount's daemon): the command only exits with its status.
	errReported = errors.New("reported")

	// Paths inside an item.
	errNotRegular   = errors.New("not a regular file")
	errNoSuchPath   = errors.New("no such file or directory")
	errNotDirectory = errors.New("not a directory")

	// errNoMatch: a query that must name one item matches none.
	errNoMatch = errors.New("no item matches")
	// errManyMatches: a query that must name one item matches several.
	errManyMatches = errors.New("matches several items")
	// errNotSnapshot: diff wants a file tree, and a raw item has none.
	errNotSnapshot = errors.New("is a raw item, not a snapshot with a file tree")
)
