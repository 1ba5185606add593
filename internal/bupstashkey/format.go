package bupstashkey

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/backupfs/backupfs/internal/redact"
)

// A Key and its Parts hold secrets: printed with any verb, or logged,
// they show the key's kind and id, or whether a part is present.

var (
	_ fmt.Formatter  = Key{}
	_ slog.LogValuer = Key{}
	_ fmt.Formatter  = Part{}
	_ slog.LogValuer = Part{}
)

// String returns the key's kind and id.
func (k Key) String() string { return "bupstashkey.Key(" + k.Describe() + ")" }

// GoString is String.
func (k Key) GoString() string { return k.String() }

// Format prints String for every verb.
func (k Key) Format(f fmt.State, verb rune) { redact.Format(f, verb, k.String()) }

// LogValue logs the kind and id.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", k.Kind()), slog.String("id", hex.EncodeToString(k.ID[:])))
}

// String says whether the part is present.
func (p Part) String() string {
	if p.OK {
		return "bupstashkey.Part(set)"
	}
	return "bupstashkey.Part(unset)"
}

// GoString is String.
func (p Part) GoString() string { return p.String() }

// Format prints String for every verb.
func (p Part) Format(f fmt.State, verb rune) { redact.Format(f, verb, p.String()) }

// LogValue logs String.
func (p Part) LogValue() slog.Value { return slog.StringValue(p.String()) }

// MarshalJSON writes String: a key is written only by Encode, to a key
// file, never into JSON (a log line, a status report) by accident.
func (k Key) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// MarshalJSON writes String.
func (p Part) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }
