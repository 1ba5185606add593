package query

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"unicode"
	"unicode/utf8"
)

// Duration is an age bound of `older-than` and `newer-than`. It is kept as
// Bupstash keeps it (Rust's std::time::Duration: whole seconds and
// nanoseconds), so "500y" or "99999999999d" mean what they mean there
// instead of overflowing a time.Duration.
type Duration struct {
	Secs  uint64
	Nanos uint32 // below one second
}

// less reports whether d < e.
func (d Duration) less(e Duration) bool {
	return d.Secs < e.Secs || d.Secs == e.Secs && d.Nanos < e.Nanos
}

func (d Duration) String() string {
	if d.Nanos == 0 {
		return fmt.Sprintf("%ds", d.Secs)
	}
	return fmt.Sprintf("%d.%09ds", d.Secs, d.Nanos)
}

var errDurationOverflow = errors.New("number is too large")

// ParseDuration reads a duration as Bupstash does (with the humantime
// crate, 2.1): one or more spans, each a number and a unit, spaces
// allowed anywhere between them ("1h 30min", "2d", "1 month"); a month is
// 30.44 days and a year 365.25 days.
func ParseDuration(s string) (Duration, error) {
	p := durationParser{src: s}
	return p.parse()
}

type durationParser struct {
	src   string
	off   int // byte offset of the next character
	secs  uint64
	nanos uint64
}

func (p *durationParser) next() (rune, bool) {
	if p.off >= len(p.src) {
		return 0, false
	}
	c, n := utf8.DecodeRuneInString(p.src[p.off:])
	p.off += n
	return c, true
}

func isDigit(c rune) bool  { return '0' <= c && c <= '9' }
func isLetter(c rune) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// firstDigit skips spaces to the next number's first digit. Like
// humantime, an error names the offset where the skipping began.
func (p *durationParser) firstDigit() (uint64, bool, error) {
	start := p.off
	for {
		c, ok := p.next()
		if !ok {
			return 0, false, nil
		}
		switch {
		case isDigit(c):
			return uint64(c - '0'), true, nil
		case unicode.IsSpace(c):
		default:
			return 0, false, fmt.Errorf("expected number at %d", start)
		}
	}
}

func (p *durationParser) parse() (Duration, error) {
	n, ok, err := p.firstDigit()
	if err != nil {
		return Duration{}, err
	}
	if !ok {
		return Duration{}, errors.New("value was empty")
	}
outer:
	for {
		off := p.off
		for {
			c, ok := p.next()
			if !ok {
				break
			}
			if isLetter(c) {
				break
			}
			switch {
			case isDigit(c):
				hi, lo := bits.Mul64(n, 10)
				sum, carry := bits.Add64(lo, uint64(c-'0'), 0)
				if hi != 0 || carry != 0 {
					return Duration{}, errDurationOverflow
				}
				n = sum
			case unicode.IsSpace(c):
			default:
				return Duration{}, fmt.Errorf("invalid character at %d", off)
			}
			off = p.off
		}
		start := off
		off = p.off
		for {
			c, ok := p.next()
			if !ok {
				break
			}
			switch {
			case isDigit(c):
				if err := p.unit(n, start, off); err != nil {
					return Duration{}, err
				}
				n = uint64(c - '0')
				continue outer
			case unicode.IsSpace(c):
			case isLetter(c):
				off = p.off
				continue
			default:
				return Duration{}, fmt.Errorf("invalid character at %d", off)
			}
			break
		}
		if err := p.unit(n, start, off); err != nil {
			return Duration{}, err
		}
		n, ok, err = p.firstDigit()
		if err != nil {
			return Duration{}, err
		}
		if !ok {
			secs, nanos := p.secs, p.nanos
			if nanos >= 1e9 { // Duration::new carries (and panics on overflow)
				if secs > math.MaxUint64-nanos/1e9 {
					return Duration{}, errDurationOverflow
				}
				secs, nanos = secs+nanos/1e9, nanos%1e9
			}
			return Duration{Secs: secs, Nanos: uint32(nanos)}, nil
		}
	}
}

// unit adds n of the unit at src[start:end].
func (p *durationParser) unit(n uint64, start, end int) error {
	mul := func(a, b uint64) (uint64, error) {
		hi, lo := bits.Mul64(a, b)
		if hi != 0 {
			return 0, errDurationOverflow
		}
		return lo, nil
	}
	var secs, nanos uint64
	var err error
	switch u := p.src[start:end]; u {
	case "nanos", "nsec", "ns":
		nanos = n
	case "usec", "us":
		nanos, err = mul(n, 1000)
	case "millis", "msec", "ms":
		nanos, err = mul(n, 1_000_000)
	case "seconds", "second", "secs", "sec", "s":
		secs = n
	case "minutes", "minute", "min", "mins", "m":
		secs, err = mul(n, 60)
	case "hours", "hour", "hr", "hrs", "h":
		secs, err = mul(n, 3600)
	case "days", "day", "d":
		secs, err = mul(n, 86400)
	case "weeks", "week", "w":
		secs, err = mul(n, 86400*7)
	case "months", "month", "M":
		secs, err = mul(n, 2_630_016) // 30.44 days
	case "years", "year", "y":
		secs, err = mul(n, 31_557_600) // 365.25 days
	case "":
		return fmt.Errorf("time unit needed, for example %dsec or %dms", n, n)
	default:
		return fmt.Errorf("unknown time unit %s, supported units: ns, us, ms, sec, min, hours, days, weeks, months, years (and few variations)", rustDebugString(u))
	}
	if err != nil {
		return err
	}
	total, carry := bits.Add64(p.nanos, nanos, 0)
	if carry != 0 {
		return errDurationOverflow
	}
	if total > 1e9 {
		if secs, carry = bits.Add64(secs, total/1e9, 0); carry != 0 {
			return errDurationOverflow
		}
		total %= 1e9
	}
	if p.secs, carry = bits.Add64(p.secs, secs, 0); carry != 0 {
		return errDurationOverflow
	}
	p.nanos = total
	return nil
}

// rustDebugString quotes an ASCII-letter string as Rust's {:?} does.
func rustDebugString(s string) string { return `"` + s + `"` }
