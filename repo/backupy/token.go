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
	var claims map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrToken)
	}
	t := &Token{}
	str := func(name string, required bool) (string, error) {
		raw, ok := claims[name]
		if !ok {
			if required {
				return "", fmt.Errorf("%w: missing claim: %s", ErrToken, name)
			}
			return "", nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil || (required && v == "") {
			return "", fmt.Errorf("%w: malformed token: %s (not a non-empty string)", ErrToken, name)
		}
		return v, nil
	}
	num := func(name string, required bool) (json.Number, bool, error) {
		raw, ok := claims[name]
		if !ok {
			if required {
				return "", false, fmt.Errorf("%w: missing claim: %s", ErrToken, name)
			}
			return "", false, nil
		}
		var v json.Number
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return "", false, fmt.Errorf("%w: malformed token: %s (not a number)", ErrToken, name)
		}
		return v, true, nil
	}
	// iss and aud only produce warnings, so any JSON value is kept as text
	// for the warning (an array aud, say) rather than rejected.
	lenient := func(name string) string {
		raw := claims[name]
		var v string
		if json.Unmarshal(raw, &v) == nil {
			return v
		}
		return string(raw)
	}
	t.Issuer, t.Audience = lenient("iss"), lenient("aud")
	for _, c := range []struct {
		name string
		dst  *string
	}{{"sub", &t.Subject}, {"run_id", &t.RunID}, {"company_id", &t.CompanyID}} {
		if *c.dst, err = str(c.name, true); err != nil {
			return nil, err
		}
	}
	exp, _, err := num("exp", true)
	if err != nil {
		return nil, err
	}
	if t.Expiry, err = unixTime(exp); err != nil {
		return nil, fmt.Errorf("%w: malformed token: exp (%v)", ErrToken, err)
	}
	if iat, ok, err := num("iat", false); err != nil {
		return nil, err
	} else if ok {
		if t.IssuedAt, err = unixTime(iat); err != nil {
			return nil, fmt.Errorf("%w: malformed token: iat (%v)", ErrToken, err)
		}
	}
	alg, err := str("alg", true)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(alg, tokenAlg) {
		return nil, fmt.Errorf("%w: unsupported algorithm: %q", ErrToken, alg)
	}
	fv, _, err := num("format_version", true)
	if err != nil {
		return nil, err
	}
	if v, err := fv.Float64(); err != nil || v != 1 {
		return nil, fmt.Errorf("%w: unsupported format version: %s", ErrToken, fv)
	}
	sum, err := str("sha256", false)
	if err != nil {
		return nil, err
	}
	if sum != "" {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
			return nil, fmt.Errorf("%w: sha256 claim is not 64 hex digits", ErrToken)
		}
		t.SHA256 = strings.ToLower(sum)
	}
	dekText, err := str("dek", true)
	if err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(dekText)
	if err != nil {
		return nil, fmt.Errorf("%w: dek not valid base64", ErrToken)
	}
	defer clear(raw)
	if len(raw) != 32 {
		return nil, fmt.Errorf("%w: dek length = %d, want 32", ErrToken, len(raw))
	}
	t.DEK, _ = newDEK(raw)
	return t, nil
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
