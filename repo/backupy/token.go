package backupy

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token is a parsed Backupy decryption token: the JWT the server issues
// from POST /runs/:id/decryption-token. Its payload carries the run's DEK
// in the clear; the HS256 signature cannot be checked without the server's
// secret and is ignored, exactly as the upstream decrypt tool does.
type Token struct {
	Issuer    string
	Audience  string
	Subject   string
	RunID     string
	CompanyID string
	Expiry    time.Time
	IssuedAt  time.Time // zero if absent
	// SHA256 is the lowercase hex SHA-256 of the whole uploaded object, or
	// "" if the token does not carry one.
	SHA256 string
	DEK    *DEK
}

// Token claim values the upstream tool requires.
const (
	tokenIssuer   = "backupy-server"
	tokenAudience = "backupy-decrypt"
	tokenAlg      = "AES-256-GCM"
)

// ParseToken parses a token the way backupy-decrypt does, with one
// deliberate difference: expiry and a wrong issuer or audience are not
// errors (the DEK inside never expires) but are reported by Warnings.
// Errors never quote the key.
func ParseToken(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: malformed token: want 3 segments, got %d", ErrToken, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: decode payload: not base64url", ErrToken)
	}
	defer clear(payload)
	var p claimParser
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&p.claims); err != nil || p.claims == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrToken)
	}

	t := &Token{}
	// iss and aud only produce warnings, so any JSON value is kept as text
	// for the warning (an array aud, say) rather than rejected.
	t.Issuer, t.Audience = p.text("iss"), p.text("aud")
	t.Subject = p.str("sub", true)
	t.RunID = p.str("run_id", true)
	t.CompanyID = p.str("company_id", true)
	t.Expiry = p.time("exp", true)
	t.IssuedAt = p.time("iat", false)
	if alg := p.str("alg", true); p.err == nil && !strings.EqualFold(alg, tokenAlg) {
		p.fail("unsupported algorithm: %q", alg)
	}
	if fv, _ := p.number("format_version", true); p.err == nil {
		if v, err := fv.Float64(); err != nil || v != 1 {
			p.fail("unsupported format version: %s", fv)
		}
	}
	if sum := p.str("sha256", false); p.err == nil && sum != "" {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
			p.fail("sha256 claim is not 64 hex digits")
		}
		t.SHA256 = strings.ToLower(sum)
	}
	t.DEK = p.dek("dek")
	if p.err != nil {
		return nil, p.err
	}
	return t, nil
}

// claimParser reads a token's claims in order. The first error sticks:
// every later read is a no-op, and ParseToken returns that error once at
// the end (as archive/tar's parser does).
type claimParser struct {
	claims map[string]json.RawMessage
	err    error
}

// fail records an error unless one is recorded already.
func (p *claimParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: "+format, append([]any{ErrToken}, args...)...)
	}
}

// raw returns a claim's JSON, failing if a required one is absent.
func (p *claimParser) raw(name string, required bool) (json.RawMessage, bool) {
	if p.err != nil {
		return nil, false
	}
	raw, ok := p.claims[name]
	if !ok && required {
		p.fail("missing claim: %s", name)
	}
	return raw, ok
}

// str reads a string claim; a required one must not be empty.
func (p *claimParser) str(name string, required bool) string {
	raw, ok := p.raw(name, required)
	if !ok {
		return ""
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil || (required && v == "") {
		p.fail("malformed token: %s (not a non-empty string)", name)
	}
	return v
}

// text reads a claim of any type as text, never failing.
func (p *claimParser) text(name string) string {
	raw := p.claims[name]
	var v string
	if json.Unmarshal(raw, &v) == nil {
		return v
	}
	return string(raw)
}

// number reads a numeric claim, keeping its text.
func (p *claimParser) number(name string, required bool) (json.Number, bool) {
	raw, ok := p.raw(name, required)
	if !ok {
		return "", false
	}
	var v json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		p.fail("malformed token: %s (not a number)", name)
		return "", false
	}
	return v, true
}

// time reads a claim of Unix seconds; the zero time if it is absent.
func (p *claimParser) time(name string, required bool) time.Time {
	n, ok := p.number(name, required)
	if !ok {
		return time.Time{}
	}
	t, err := unixTime(n)
	if err != nil {
		p.fail("malformed token: %s (%v)", name, err)
	}
	return t
}

// dek reads the key: standard base64 of exactly 32 bytes. Errors say
// what is wrong with it, never what it is.
func (p *claimParser) dek(name string) *DEK {
	text := p.str(name, true)
	if p.err != nil {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	defer clear(raw)
	if err != nil {
		p.fail("dek not valid base64")
		return nil
	}
	if len(raw) != 32 {
		p.fail("dek length = %d, want 32", len(raw))
		return nil
	}
	k, _ := newDEK(raw)
	return k
}

func unixTime(n json.Number) (time.Time, error) {
	f, err := n.Float64()
	if err != nil || f < -1e15 || f > 1e15 {
		return time.Time{}, errors.New("not a Unix time")
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
}

// Expired reports whether the token's exp is before now. An expired token
// still carries a valid key.
func (t *Token) Expired(now time.Time) bool { return now.After(t.Expiry) }

// Warnings lists what backupy-decrypt would reject but backupfs accepts.
func (t *Token) Warnings(now time.Time) []string {
	var w []string
	if t.Expired(now) {
		w = append(w, fmt.Sprintf("token expired at %s (its key still works)", t.Expiry.Format(time.RFC3339)))
	}
	if t.Issuer != tokenIssuer {
		w = append(w, fmt.Sprintf("wrong issuer: got %q, want %q", t.Issuer, tokenIssuer))
	}
	if t.Audience != tokenAudience {
		w = append(w, fmt.Sprintf("wrong audience: got %q, want %q", t.Audience, tokenAudience))
	}
	return w
}
