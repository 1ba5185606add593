package treediff

import "errors"

var (
	// ErrIgnore reports an --ignore value Bupstash does not know.
	ErrIgnore = errors.New("not a valid ignore value")
	// ErrOldIndex reports an index whose entries lack relative data
	// cursors (Bupstash before 0.7 wrote them), which Bupstash refuses to
	// diff.
	ErrOldIndex = errors.New("index was created by an older version of bupstash and we longer supports diff operations on it due to an unfortunate bug")
	// ErrPick reports a --left-pick/--right-pick path that is missing or
	// not a directory.
	ErrPick = errors.New("cannot pick")
)
