// Package query implements Bupstash's query language
// (bupstash-query-language(7)) as Bupstash 0.11 and 0.12 parse and
// evaluate it (src/query.rs, src/querycache.rs), so that a query selects
// exactly the items `bupstash list` selects.
//
// The language, in short:
//
//	TAG=GLOB            the tag exists and its value matches the glob
//	TAG==VALUE          the tag exists and equals VALUE
//	EXPR and EXPR       both (binds loosest)
//	EXPR or EXPR        either (binds tighter than and)
//	~ EXPR              not
//	[ EXPR ]            grouping
//	older-than DURATION, newer-than DURATION   the item's age
//
// A query is a list of command-line arguments: the gap between two
// arguments is a token of its own, so `and`, `or` and a duration must be
// separate arguments, and a value runs to the end of its argument
// (`name=my files.tar` is one argument from the shell). Globs are Rust
// globset globs (`*`, `?`, `[a-z]`, `[!x]`, `{a,b}`, `\` escapes), matched
// byte by byte against the whole value. Besides an item's own tags a query
// sees the pseudo-tags id, timestamp and size; see Query.Match.
package query
