package backupy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// DEK is a 32-byte data encryption key. Its printed forms (String,
// GoString, slog) show only the fingerprint, so a DEK that slips into a
// log line or an error message reveals nothing.
type DEK struct {
	b  [gcmframe.KeySize]byte
	fp string
}

// errKeyMaterial deliberately carries no detail: decoder errors quote the
// offending character, which would leak part of a key into a log.
var errKeyMaterial = errors.New("key material is not a 32-byte key in hex: or b64: form")

// newDEK copies b, which must be 32 bytes.
func newDEK(b []byte) (*DEK, error) {
	if len(b) != gcmframe.KeySize {
		return nil, errKeyMaterial
	}
	k := &DEK{}
	copy(k.b[:], b)
	m := hmac.New(sha256.New, k.b[:])
	m.Write([]byte("backupfs-keyid"))
	k.fp = hex.EncodeToString(m.Sum(nil)[:8])
	return k, nil
}

// parseKeyMaterial decodes "hex:<64 hex>" or "b64:<base64>", where base64
// may be standard or URL-safe, padded or not.
func parseKeyMaterial(s string) (*DEK, error) {
	var raw []byte
	switch {
	case strings.HasPrefix(s, "hex:"):
		b, err := hex.DecodeString(s[len("hex:"):])
		if err != nil {
			return nil, errKeyMaterial
		}
		raw = b
	case strings.HasPrefix(s, "b64:"):
		b, ok := decodeAnyBase64(s[len("b64:"):])
		if !ok {
			return nil, errKeyMaterial
		}
		raw = b
	default:
		return nil, errKeyMaterial
	}
	defer clear(raw)
	return newDEK(raw)
}

func decodeAnyBase64(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// Fingerprint returns HMAC-SHA256(DEK, "backupfs-keyid")[:8] in hex: enough
// to tell keys apart, useless for recovering one.
func (k *DEK) Fingerprint() string { return k.fp }

// String and GoString have value receivers so that even a copied DEK
// prints as its fingerprint.
func (k DEK) String() string   { return "DEK(" + k.fp + ")" }
func (k DEK) GoString() string { return k.String() }

// LogValue implements slog.LogValuer.
func (k DEK) LogValue() slog.Value { return slog.StringValue(k.String()) }

// keyringMaterial returns the key in the keyring file syntax.
func (k *DEK) keyringMaterial() string { return "b64:" + base64.StdEncoding.EncodeToString(k.b[:]) }

// wipe zeroes the key bytes.
func (k *DEK) wipe() { clear(k.b[:]) }
