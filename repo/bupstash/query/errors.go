package query

import "errors"

// ErrSyntax is matched (errors.Is) by every *SyntaxError.
var ErrSyntax = errors.New("query syntax error")
