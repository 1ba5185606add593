// Package redact prints values that hold secrets (keys, derived keys) as
// a description that holds none, whatever verb or handler prints them.
package redact

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Format writes desc for every verb and flag, as a fmt.Formatter holding a
// secret must: %v, %+v, %#v, %s, %x alike show the description (a key's
// kind and id, say), never the secret's bytes; %q quotes it like a string.
func Format(f fmt.State, verb rune, desc string) {
	if verb == 'q' {
		desc = strconv.Quote(desc)
	}
	io.WriteString(f, desc)
}

// LeakWindow is how many consecutive bytes of a secret Leaked looks for.
const LeakWindow = 8

// Leaked reports whether out shows any LeakWindow consecutive bytes of
// secret, in any of the ways fmt, slog and encoding/json print bytes:
// raw, hex (either case, or Go's 0x-prefixed %#v), decimal lists (fmt's
// %v of an array, JSON arrays) and base64. It returns the form found, for
// the test's message. It is for tests of types that hold secrets.
func Leaked(out string, secret []byte) (form string, leaked bool) {
	for i := 0; i+LeakWindow <= len(secret); i++ {
		w := secret[i : i+LeakWindow]
		var dec, comma, goHex []string
		for _, b := range w {
			dec = append(dec, strconv.Itoa(int(b)))
			goHex = append(goHex, fmt.Sprintf("0x%02x", b))
		}
		comma = dec
		for _, f := range []string{
			string(w),
			hex.EncodeToString(w),
			strings.ToUpper(hex.EncodeToString(w)),
			strings.Join(dec, " "),
			strings.Join(comma, ","),
			strings.Join(goHex, ", "),
		} {
			if strings.Contains(out, f) {
				return f, true
			}
		}
	}
	// Base64 of the secret from any of the three alignments: every four
	// characters encode three bytes, so any 8-byte window of an encoded
	// secret covers a 12-character run starting at a multiple of four.
	for o := 0; o < 3 && o < len(secret); o++ {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			s := enc.EncodeToString(secret[o:])
			for i := 0; i+12 <= len(s); i += 4 {
				if strings.Contains(out, s[i:i+12]) {
					return s[i : i+12], true
				}
			}
		}
	}
	return "", false
}
