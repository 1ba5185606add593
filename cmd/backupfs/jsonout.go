package main

import (
	"encoding/json"
	"io"
	"strings"

	"github.com/backupfs/backupfs/internal/treediff"
)

// The --json outputs are JSON Lines: one object per line, named as
// Bupstash's jsonl1 formats name the same things (bupstash list
// --format=jsonl1, list-contents --format=jsonl1), and lossless: text
// that is not UTF-8 (file names, link targets, xattrs, object keys) is
// written as an array of its byte values, as Bupstash writes it, never
// with bytes replaced.

// losslessText is text that may not be UTF-8. It marshals as a JSON
// string when it is UTF-8, else as an array of byte values.
type losslessText []byte

func (t losslessText) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	treediff.WriteJSONBytes(&b, t)
	return []byte(b.String()), nil
}

// newJSONLines returns an encoder of one object per line, with <, > and
// & written as they are (they are not HTML).
func newJSONLines(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}
