package query

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The same cases as Bupstash's own tests of query.rs, where the gap
// between arguments is written '•'.
func TestBupstashUnitCases(t *testing.T) {
	it := &Item{Tags: map[string]string{"foo": "123", "bar": ""}, Timestamp: time.Unix(1000, 0)}
	env := Env{Now: time.Unix(1005, 0), Location: time.UTC}
	for _, c := range []struct {
		q    string
		want bool
	}{
		{"foo=123•and•bar=", true},
		{"foo=12*", true},
		{"foo=12?", true},
		{"~foo=xxx", true},
		{"older-than•2s", true},
		{"newer-than•6s", true},
		{"older-than•6s", false},
		{"newer-than•2s", false},
		{"~•[•foo==123•]", false},
		{"older-than•5s", false}, // exactly as old: neither
		{"newer-than•5s", false},
	} {
		q, err := Parse(strings.Split(c.q, "•")...)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		if got := q.Match(it, env); got != c.want {
			t.Errorf("%s: %v, want %v", c.q, got, c.want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"a=1", "or", "b=2", "and", "c=3"}, "[[a=1 or b=2] and c=3]"},
		{[]string{"a=1", "and", "b=2", "or", "c=3"}, "[a=1 and [b=2 or c=3]]"},
		{[]string{"a=1", "and", "b=2", "and", "c=3"}, "[[a=1 and b=2] and c=3]"},
		{[]string{"a=1", "or", "b=2", "or", "c=3"}, "[[a=1 or b=2] or c=3]"},
		{[]string{"[", "a=1", "and", "b=2", "]", "or", "c=3"}, "[[a=1 and b=2] or c=3]"},
		{[]string{"~", "a=1", "or", "b=2"}, "[~a=1 or b=2]"},
		{[]string{"~a=1", "and", "~", "[", "b=2", "or", "c=3", "]"}, "[~a=1 and ~[b=2 or c=3]]"},
		{[]string{"older-than", "1d", "and", "newer-than", "2h 30min"}, "[older-than 86400s and newer-than 9000s]"},
		{[]string{"and=x"}, "and=x"},
		{[]string{"older-than=1"}, "older-than=1"},
		{[]string{"name=a b c"}, "name=a b c"},
		{[]string{"name==x", "", "or", "y=z"}, "[name==x or y=z]"},
	} {
		q, err := Parse(c.args...)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if got := q.structure(); got != c.want {
			t.Errorf("%q parses as %s, want %s", c.args, got, c.want)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"name"}, "expected '=' after tag"},
		{[]string{"name=x", "and"}, "operator 'and' expects a value"},
		{[]string{"[", "name=x"}, "expected ']'"},
		{[]string{"name=x", "y=z"}, "unexpected input at end of query"},
		{[]string{"name=[x"}, "unclosed character class"},
		{[]string{"name={a,{b}}"}, "nested alternate groups are not allowed"},
		{[]string{"name=[z-a]"}, "invalid range; 'z' > 'a'"},
		{[]string{`name=x\`}, `dangling '\'`},
		{[]string{"name==a{b"}, "invalid literal value"},
		{[]string{"older-than", "3"}, "time unit needed, for example 3sec or 3ms"},
		{[]string{"older-than", "3 parsecs"}, `unknown time unit "parsecs"`},
		{[]string{"older-than", "x"}, "expected number at 0"},
		{[]string{"older-than", "1.5h"}, "invalid character at 1"},
		{[]string{"older-than", ""}, "value was empty"},
		{[]string{"older-than", "99999999999999999999s"}, "number is too large"},
		{[]string{"(name=x)"}, "expected a tag character"},
		{[]string{strings.Repeat("a", MaxQueryLen) + "=x"}, "too long"},
	} {
		_, err := Parse(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.msg) || !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: error %v, want one saying %q", c.args, err, c.msg)
		}
	}
}

// Cases from the humantime crate's own tests, and the corners of its
// parser.
func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		secs uint64
		nano uint32
	}{
		{"17nsec", 0, 17}, {"17nanos", 0, 17}, {"33ns", 0, 33}, {"3usec", 0, 3000}, {"78us", 0, 78000},
		{"31msec", 0, 31000000}, {"31millis", 0, 31000000}, {"6ms", 0, 6000000},
		{"3000s", 3000, 0}, {"300sec", 300, 0}, {"300secs", 300, 0}, {"50seconds", 50, 0}, {"1second", 1, 0},
		{"100m", 6000, 0}, {"12min", 720, 0}, {"12mins", 720, 0}, {"1minute", 60, 0}, {"7minutes", 420, 0},
		{"2h", 7200, 0}, {"7hr", 25200, 0}, {"7hrs", 25200, 0}, {"1hour", 3600, 0}, {"24hours", 86400, 0},
		{"1day", 86400, 0}, {"2days", 172800, 0}, {"365d", 31536000, 0}, {"1week", 604800, 0},
		{"7weeks", 4233600, 0}, {"52w", 31449600, 0}, {"1month", 2630016, 0}, {"3months", 3 * 2630016, 0},
		{"12M", 31560192, 0}, {"1year", 31557600, 0}, {"7years", 7 * 31557600, 0}, {"17y", 536479200, 0},
		{"2h 37min", 9420, 0}, {"32ms", 0, 32000000}, {"1h30m", 5400, 0}, {"1 2h", 12 * 3600, 0},
		{" 5 s ", 5, 0}, {"999ms 1ms", 1, 0}, {"999ms 2ms", 1, 1000000},
		{"1000000000ns", 1, 0}, {"1000000001ns", 1, 1},
	} {
		d, err := ParseDuration(c.in)
		if err != nil || d != (Duration{c.secs, c.nano}) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %ds %dns", c.in, d, err, c.secs, c.nano)
		}
	}
	for _, c := range []struct{ in, msg string }{
		{"", "value was empty"}, {"  ", "value was empty"}, {"h", "expected number at 0"},
		{"1h x", "expected number at 3"}, {"10", "time unit needed, for example 10sec or 10ms"},
		{"1 hour 2", "time unit needed"}, {"2 sec min", "expected number at 6"},
		{"1 foo", `unknown time unit "foo"`}, {"1ü", "invalid character at 1"}, {"1hü", "invalid character at 2"},
		{"18446744073709551616s", "number is too large"}, {"18446744073709551615m", "number is too large"},
		{"18446744073709551615s 1s", "number is too large"},
	} {
		if _, err := ParseDuration(c.in); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("ParseDuration(%q): error %v, want %q", c.in, err, c.msg)
		}
	}
}

// Bupstash's two decimals are n%unit / (unit/100) with integer division:
// 1536 bytes is "1.51KiB", and the largest sizes show "100" hundredths.
func TestFormatSize(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want string
	}{
		{0, "0B"}, {17, "17B"}, {1024, "1024B"}, {1025, "1.00KiB"}, {1536, "1.51KiB"}, {16842989 + 1131, "16.06MiB"},
		{1 << 20, "1024.00KiB"}, {1<<20 + 1, "1.00MiB"}, {5 << 30, "5.00GiB"}, {3<<40 + 1, "3.00TiB"},
		{1<<64 - 1, "16383.100PiB"},
	} {
		if got := FormatSize(c.n); got != c.want {
			t.Errorf("FormatSize(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestFormatTimestamp(t *testing.T) {
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2020, 6, 15, 23, 30, 0, 999e6, time.UTC)
	for _, c := range []struct {
		ts   time.Time
		loc  *time.Location
		want string
	}{
		{ts, time.UTC, "2020/06/15 23:30:00"},
		{ts, kolkata, "2020/06/16 05:00:00"},
		{time.Date(12345, 1, 2, 3, 4, 5, 0, time.UTC), time.UTC, "+12345/01/02 03:04:05"},
		{time.Date(-1, 1, 2, 3, 4, 5, 0, time.UTC), time.UTC, "-0001/01/02 03:04:05"},
		{time.Date(99, 1, 2, 3, 4, 5, 0, time.UTC), time.UTC, "0099/01/02 03:04:05"},
	} {
		if got := FormatTimestamp(c.ts, c.loc); got != c.want {
			t.Errorf("FormatTimestamp(%v) = %q, want %q", c.ts, got, c.want)
		}
	}
}

func TestPseudoTags(t *testing.T) {
	id := [16]byte{0xfd, 0xd7, 0x5e, 0x29}
	it := &Item{ID: id, Timestamp: time.Date(2026, 11, 23, 4, 29, 51, 0, time.UTC), Size: 16842989 + 1131,
		Tags: map[string]string{"name": "tree.tar", "size": "mine", "id": "mine"}}
	env := Env{Now: it.Timestamp.Add(time.Hour), Location: time.UTC}
	tags := Tags(it, env)
	if tags["id"] != "fdd75e29000000000000000000000000" || tags["size"] != "16.06MiB" ||
		tags["timestamp"] != "2026/11/23 04:29:51" || tags["name"] != "tree.tar" || len(tags) != 4 {
		t.Fatalf("Tags = %v", tags)
	}
	for q, want := range map[string]bool{
		"id=fdd75e29*": true, "id=FDD75E29*": false, "size=mine": false, "size=16.06MiB": true,
		"timestamp=2026/11/23*": true, "name=tree.*": true,
	} {
		if got := mustParse(t, q).Match(it, env); got != want {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
}

// An item dated in the future (Bupstash refuses to list at all) is newer
// than any age and older than none; far-off dates do not overflow.
func TestAges(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	env := Env{Now: now, Location: time.UTC}
	future := &Item{Timestamp: now.Add(time.Hour)}
	ancient := &Item{Timestamp: time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, c := range []struct {
		it   *Item
		q    []string
		want bool
	}{
		{future, []string{"older-than", "1s"}, false},
		{future, []string{"newer-than", "1s"}, true},
		{ancient, []string{"older-than", "1000y"}, true},
		{ancient, []string{"older-than", "8000y"}, false},
		{ancient, []string{"newer-than", "8000y"}, true},
	} {
		if got := mustParse(t, c.q...).Match(c.it, env); got != c.want {
			t.Errorf("%v %q: %v, want %v", c.it.Timestamp, c.q, got, c.want)
		}
	}
}

func TestID(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"id=fdd75e29487490b4ef3eb1792242fc00"}, true},
		{[]string{"id==FDD75E29487490B4EF3EB1792242FC00"}, true},
		{[]string{"id=fdd75e29*"}, false},
		{[]string{"id=fdd75e29487490b4ef3eb1792242fc0"}, false},
		{[]string{"id=fdd75e29487490b4ef3eb1792242fc0g"}, false},
		{[]string{"name=fdd75e29487490b4ef3eb1792242fc00"}, false},
		{[]string{"~id=fdd75e29487490b4ef3eb1792242fc00"}, false},
		{[]string{"id=fdd75e29487490b4ef3eb1792242fc00", "or", "id=x"}, false},
	} {
		id, ok := mustParse(t, c.args...).ID()
		if ok != c.ok || ok && id != [16]byte{0xfd, 0xd7, 0x5e, 0x29, 0x48, 0x74, 0x90, 0xb4, 0xef, 0x3e, 0xb1, 0x79, 0x22, 0x42, 0xfc, 0x00} {
			t.Errorf("%q: ID() = %x, %v", c.args, id, ok)
		}
	}
}

func TestMatchForeign(t *testing.T) {
	id, key := [16]byte{1}, [16]byte{2}
	for q, want := range map[string]bool{
		"id=01*": true, "decryption-key-id=02*": true, "name=*": false, "~name=*": true, "timestamp=*": false,
	} {
		if got := mustParse(t, q).MatchForeign(id, key); got != want {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
	if mustParse(t, "newer-than", "100y").MatchForeign(id, key) || mustParse(t, "older-than", "1s").MatchForeign(id, key) {
		t.Error("an age matched an item whose age is unknown")
	}
}

func mustParse(t *testing.T, args ...string) *Query {
	t.Helper()
	q, err := Parse(args...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestQueryString(t *testing.T) {
	if s := mustParse(t, "name=a b", "and", "older-than", "1d").String(); s != "name=a b and older-than 1d" {
		t.Fatalf("String() = %q", s)
	}
}
