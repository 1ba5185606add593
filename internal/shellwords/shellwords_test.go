package shellwords

import (
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"gpg --decrypt key.gpg", []string{"gpg", "--decrypt", "key.gpg"}},
		{`cat '/a b/k'`, []string{"cat", "/a b/k"}},
		{`cat "/a \"b\"/k" # comment`, []string{"cat", `/a "b"/k`}},
		{`a\ b c`, []string{"a b", "c"}},
		{`''`, []string{""}},
		{"", nil},
	} {
		got, err := Split(tt.in)
		if err != nil || strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{`'open`, `"open`, `trailing\`} {
		if _, err := Split(bad); err == nil {
			t.Errorf("Split(%q) accepted", bad)
		}
	}
}
