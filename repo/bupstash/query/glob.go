package query

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Bupstash 0.11 and 0.12 match tag values with the Rust globset crate
// (0.4.9 in the 0.12.1 release), default options: `*` and `?` may match
// '/', backslash escapes, case-sensitive. globset turns a glob into a
// byte-oriented regular expression, so `?` matches one byte, not one
// character, and a class like `[é]` is a set of the bytes of 'é'. That
// behaviour is reproduced here, down to its corners: the value's bytes are
// mapped one to one onto the runes U+0000–U+00FF and matched with a
// regular expression written over those runes.

// globToken is one element of a parsed glob.
type globToken struct {
	kind globKind
	lit  rune          // globLiteral
	neg  bool          // globClass
	set  [256]bool     // globClass: the bytes its regex class lists
	alts [][]globToken // globAlternates
}

type globKind uint8

const (
	globLiteral globKind = iota
	globAny
	globZeroOrMore
	globRecursivePrefix
	globRecursiveSuffix
	globRecursiveZeroOrMore
	globClass
	globAlternates
)

// globError is globset's error, worded as globset words it.
type globError struct {
	glob string
	msg  string
}

func (e *globError) Error() string { return fmt.Sprintf("error parsing glob '%s': %s", e.glob, e.msg) }

// glob is a compiled pattern.
type glob struct {
	src string
	re  *regexp.Regexp
}

// match reports whether the whole value matches.
func (g *glob) match(v string) bool { return g.re.MatchString(bytesAsRunes(v)) }

// bytesAsRunes maps each byte of s to the rune of the same number.
func bytesAsRunes(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

// compileGlob parses a glob as globset.Glob::new does and compiles it.
func compileGlob(src string) (*glob, error) {
	p := globParser{src: src, chars: []rune(src), stack: [][]globToken{nil}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	if len(p.stack) > 1 {
		return nil, p.fail("unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)")
	}
	tokens := p.stack[0]
	var re strings.Builder
	re.WriteString(`(?s)^`)
	if len(tokens) == 1 && tokens[0].kind == globRecursivePrefix {
		re.WriteString(`.*`)
	} else {
		writeTokens(&re, tokens)
	}
	re.WriteString(`$`)
	r, err := regexp.Compile(re.String())
	if err != nil {
		// globset panics here ("regex compilation shouldn't fail"); only
		// sizes beyond Go's limits can get here.
		return nil, &globError{glob: src, msg: err.Error()}
	}
	return &glob{src: src, re: r}, nil
}

func writeByte(re *strings.Builder, b byte) { fmt.Fprintf(re, `\x{%02x}`, b) }

func writeLiteral(re *strings.Builder, c rune) {
	var buf [utf8.UTFMax]byte
	for _, b := range buf[:utf8.EncodeRune(buf[:], c)] {
		writeByte(re, b)
	}
}

func writeTokens(re *strings.Builder, tokens []globToken) {
	for _, t := range tokens {
		switch t.kind {
		case globLiteral:
			writeLiteral(re, t.lit)
		case globAny:
			re.WriteString(`.`)
		case globZeroOrMore:
			// `**` that is not a path component is two stars; a run of
			// stars means what one means, and one keeps the regex small.
			if !strings.HasSuffix(re.String(), `.*`) {
				re.WriteString(`.*`)
			}
		case globRecursivePrefix:
			re.WriteString(`(?:/?|.*/)`)
		case globRecursiveSuffix:
			re.WriteString(`/.*`)
		case globRecursiveZeroOrMore:
			re.WriteString(`(?:/|/.*/)`)
		case globClass:
			re.WriteString(`[`)
			if t.neg {
				re.WriteString(`^`)
			}
			for b := 0; b < 256; b++ {
				if t.set[b] {
					writeByte(re, byte(b))
				}
			}
			re.WriteString(`]`)
		case globAlternates:
			// Empty alternatives are dropped, and a group of nothing but
			// empty ones writes nothing at all: `{a,}` does not match "".
			var parts []string
			for _, alt := range t.alts {
				var sub strings.Builder
				writeTokens(&sub, alt)
				if sub.Len() > 0 {
					parts = append(parts, sub.String())
				}
			}
			if len(parts) > 0 {
				re.WriteString(`(?:` + strings.Join(parts, `|`) + `)`)
			}
		}
	}
}

// addRange adds to a class the bytes the regex crate reads from globset's
// rendering of the range lo-hi: each character is written as its UTF-8
// bytes, so a range between multi-byte characters becomes their outer
// bytes as single members and their inner bytes as a byte range.
func addRange(set *[256]bool, lo, hi rune) {
	var a, b [utf8.UTFMax]byte
	la := a[:utf8.EncodeRune(a[:], lo)]
	if lo == hi {
		for _, x := range la {
			set[x] = true
		}
		return
	}
	lb := b[:utf8.EncodeRune(b[:], hi)]
	for _, x := range la[:len(la)-1] {
		set[x] = true
	}
	for x := int(la[len(la)-1]); x <= int(lb[0]); x++ {
		set[x] = true
	}
	for _, x := range lb[1:] {
		set[x] = true
	}
}

// globParser follows globset's parser step by step.
type globParser struct {
	src   string
	chars []rune
	pos   int
	prev  rune // the character before cur, or -1
	cur   rune // the last character bumped, or -1
	stack [][]globToken
}

func (p *globParser) fail(msg string) error { return &globError{glob: p.src, msg: msg} }

func (p *globParser) bump() (rune, bool) {
	p.prev = p.cur
	if p.pos >= len(p.chars) {
		p.cur = -1
		return 0, false
	}
	p.cur = p.chars[p.pos]
	p.pos++
	return p.cur, true
}

func (p *globParser) peek() (rune, bool) {
	if p.pos >= len(p.chars) {
		return 0, false
	}
	return p.chars[p.pos], true
}

func (p *globParser) push(t globToken) { top := &p.stack[len(p.stack)-1]; *top = append(*top, t) }

func (p *globParser) pop() globToken {
	top := &p.stack[len(p.stack)-1]
	t := (*top)[len(*top)-1]
	*top = (*top)[:len(*top)-1]
	return t
}

func (p *globParser) parse() error {
	p.prev, p.cur = -1, -1
	for {
		c, ok := p.bump()
		if !ok {
			return nil
		}
		var err error
		switch c {
		case '?':
			p.push(globToken{kind: globAny})
		case '*':
			p.parseStar()
		case '[':
			err = p.parseClass()
		case '{':
			if len(p.stack) > 1 {
				return p.fail("nested alternate groups are not allowed")
			}
			p.stack = append(p.stack, nil)
		case '}':
			err = p.popAlternate()
		case ',':
			if len(p.stack) <= 1 {
				p.push(globToken{kind: globLiteral, lit: ','})
			} else {
				p.stack = append(p.stack, nil)
			}
		case '\\':
			e, ok := p.bump()
			if !ok {
				return p.fail(`dangling '\'`)
			}
			p.push(globToken{kind: globLiteral, lit: e})
		default:
			p.push(globToken{kind: globLiteral, lit: c})
		}
		if err != nil {
			return err
		}
	}
}

// popAlternate closes a group. A '}' without a '{' closes an empty group
// (matching nothing extra), as globset lets it.
func (p *globParser) popAlternate() error {
	var alts [][]globToken
	for len(p.stack) >= 2 {
		alts = append(alts, p.stack[len(p.stack)-1])
		p.stack = p.stack[:len(p.stack)-1]
	}
	p.push(globToken{kind: globAlternates, alts: alts})
	return nil
}

func (p *globParser) parseStar() {
	prev := p.prev
	if c, ok := p.peek(); !ok || c != '*' {
		p.push(globToken{kind: globZeroOrMore})
		return
	}
	p.bump()
	twoStars := func() {
		p.push(globToken{kind: globZeroOrMore})
		p.push(globToken{kind: globZeroOrMore})
	}
	if len(p.stack[len(p.stack)-1]) == 0 {
		if c, ok := p.peek(); ok && c != '/' {
			twoStars()
		} else {
			p.push(globToken{kind: globRecursivePrefix})
			p.bump()
		}
		return
	}
	if prev != '/' {
		if len(p.stack) <= 1 || (prev != ',' && prev != '{') {
			twoStars()
			return
		}
	}
	var suffix bool
	c, ok := p.peek()
	switch {
	case !ok:
		p.bump()
		suffix = true
	case (c == ',' || c == '}') && len(p.stack) >= 2:
		suffix = true
	case c == '/':
		p.bump()
		suffix = false
	default:
		twoStars()
		return
	}
	switch last := p.pop(); last.kind {
	case globRecursivePrefix, globRecursiveSuffix:
		p.push(last)
	default:
		if suffix {
			p.push(globToken{kind: globRecursiveSuffix})
		} else {
			p.push(globToken{kind: globRecursiveZeroOrMore})
		}
	}
}

func (p *globParser) parseClass() error {
	type rng struct{ lo, hi rune }
	var ranges []rng
	neg := false
	if c, ok := p.peek(); ok && (c == '!' || c == '^') {
		p.bump()
		neg = true
	}
	first, inRange := true, false
	extend := func(c rune) error {
		r := &ranges[len(ranges)-1]
		r.hi = c
		if r.hi < r.lo {
			return p.fail(fmt.Sprintf("invalid range; '%c' > '%c'", r.lo, r.hi))
		}
		return nil
	}
loop:
	for {
		c, ok := p.bump()
		if !ok {
			return p.fail("unclosed character class; missing ']'")
		}
		switch c {
		case ']':
			if !first {
				break loop
			}
			ranges = append(ranges, rng{']', ']'})
		case '-':
			switch {
			case first:
				ranges = append(ranges, rng{'-', '-'})
			case inRange:
				if err := extend('-'); err != nil {
					return err
				}
				inRange = false
			default:
				inRange = true
			}
		default:
			if inRange {
				if err := extend(c); err != nil {
					return err
				}
			} else {
				ranges = append(ranges, rng{c, c})
			}
			inRange = false
		}
		first = false
	}
	if inRange {
		ranges = append(ranges, rng{'-', '-'})
	}
	t := globToken{kind: globClass, neg: neg}
	for _, r := range ranges {
		addRange(&t.set, r.lo, r.hi)
	}
	p.push(t)
	return nil
}

// escapeGlob makes a value literal the way Bupstash's `==` does: `?`, `*`,
// `[` and `]` are put in brackets. Braces, commas and backslashes are left
// as they are, so they keep their glob meaning even after `==`.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '?', '*', '[', ']':
			b.WriteByte('[')
			b.WriteRune(c)
			b.WriteByte(']')
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
