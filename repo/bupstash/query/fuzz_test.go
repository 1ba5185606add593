package query

import (
	"strings"
	"testing"
	"time"
)

// FuzzParse: any argument list parses or fails with a SyntaxError; a
// parsed query evaluates without panicking.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"name=*.tar", "a=1\x00or\x00b=2\x00and\x00c=3", "[\x00a=1\x00]", "~\x00a=1", "older-than\x001 month",
		"newer-than\x001h 30min", "v={a,b}/**/[!x-z]?", `v==a\b`, "v=[é-ÿ]", "id=fdd75e29487490b4ef3eb1792242fc00",
		"\x00", "v=•", "[[[[", "~~~~a=1",
	} {
		f.Add(s)
	}
	items := []*Item{
		{Tags: map[string]string{"name": "x.tar", "v": "a/b/c", "a": "1"}, Timestamp: time.Unix(1e9, 0)},
		{Tags: map[string]string{"v": "café\n", "b": "2"}, Timestamp: time.Unix(2e9, 5)},
		{Timestamp: time.Date(-3000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	env := Env{Now: time.Unix(1.5e9, 0), Location: time.UTC}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(strings.Split(s, "\x00")...)
		if err != nil {
			if _, ok := err.(*SyntaxError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, it := range items {
			q.Match(it, env)
		}
		q.MatchForeign([16]byte{1}, [16]byte{2})
		q.ID()
		_ = q.structure()
	})
}

// FuzzGlob: a pattern compiles or fails cleanly; a value written with ==
// matches itself unless it holds the characters == leaves unescaped.
func FuzzGlob(f *testing.F) {
	for _, s := range []string{"*.tar", "a/**/b", "{a,b}", "[!a-z]", `\*`, "[é]", "**", "x\xffy"} {
		f.Add(s, "value")
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		if g, err := compileGlob(pattern); err == nil {
			g.match(value)
		}
		if strings.ContainsAny(value, `{}\,`) || !isValidUTF8(value) {
			return
		}
		g, err := compileGlob(escapeGlob(value))
		if err != nil {
			t.Fatalf("escaped %q: %v", value, err)
		}
		if !g.match(value) {
			t.Fatalf("escaped %q does not match itself", value)
		}
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
