package box

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/backupfs/backupfs/internal/redact"
)

// Openers, Sealers and box keys hold secrets: printed with any verb, or
// logged, they show what they are and at most a public key's first bytes.

var (
	_ fmt.Formatter  = (*Opener)(nil)
	_ slog.LogValuer = (*Opener)(nil)
	_ fmt.Formatter  = (*Sealer)(nil)
	_ slog.LogValuer = (*Sealer)(nil)
	_ fmt.Formatter  = BoxKey{}
	_ slog.LogValuer = BoxKey{}
)

// String names the recipient by the first bytes of its public key.
func (o *Opener) String() string {
	return "box.Opener(recipient " + hex.EncodeToString(o.priv.PublicKey().Bytes()[:4]) + "…)"
}

// GoString is String.
func (o *Opener) GoString() string { return o.String() }

// Format prints String for every verb.
func (o *Opener) Format(f fmt.State, verb rune) { redact.Format(f, verb, o.String()) }

// LogValue logs String.
func (o *Opener) LogValue() slog.Value { return slog.StringValue(o.String()) }

// String names the session by the first bytes of its ephemeral public key.
func (s *Sealer) String() string {
	return "box.Sealer(ephemeral " + hex.EncodeToString(s.epk[:4]) + "…)"
}

// GoString is String.
func (s *Sealer) GoString() string { return s.String() }

// Format prints String for every verb.
func (s *Sealer) Format(f fmt.State, verb rune) { redact.Format(f, verb, s.String()) }

// LogValue logs String.
func (s *Sealer) LogValue() slog.Value { return slog.StringValue(s.String()) }

// String hides the key.
func (BoxKey) String() string { return "box.BoxKey(…)" }

// GoString is String.
func (k BoxKey) GoString() string { return k.String() }

// Format prints String for every verb.
func (k BoxKey) Format(f fmt.State, verb rune) { redact.Format(f, verb, k.String()) }

// LogValue logs String.
func (k BoxKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON writes String: encoding/json would write the bytes.
func (k BoxKey) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }
