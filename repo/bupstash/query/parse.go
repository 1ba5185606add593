package query

import (
	"fmt"
	"strings"
)

// sep stands between command-line arguments in a query, as in Bupstash,
// which joins its arguments with this character before parsing. An
// argument containing it splits there too, in Bupstash and here.
const sep = '•'

// MaxQueryLen bounds a query's length in characters. Globs compile to
// regular expressions whose size, and matching time, grow with the
// pattern; a query typed or scripted never comes near this.
const MaxQueryLen = 8 << 10

// Parse parses a query given as command-line arguments, as `bupstash list
// ARGS...` reads them. The gaps between arguments are part of the syntax:
// operators (`and`, `or`, `~`, `[`, `]`, `older-than`, `newer-than`) must
// stand alone or be followed by a gap, and a value runs to the next gap.
func Parse(args ...string) (*Query, error) {
	joined := strings.Join(args, string(sep))
	chars := []rune(joined)
	if len(chars) > MaxQueryLen {
		return nil, &SyntaxError{Query: displayQuery(chars), Msg: fmt.Sprintf("query of %d characters is too long (the limit is %d)", len(chars), MaxQueryLen)}
	}
	// Like Bupstash, end the query with a gap: values and durations end
	// at a gap, and there always is one.
	p := parser{chars: append(chars, sep)}
	n, err := p.parse()
	if err != nil {
		return nil, err
	}
	return &Query{root: n, text: displayQuery(chars)}, nil
}

// displayQuery shows a joined query with spaces for the gaps.
func displayQuery(chars []rune) string {
	return strings.ReplaceAll(string(chars), string(sep), " ")
}

// SyntaxError reports a query Bupstash would refuse (or, for the few
// queries on which it panics, one it cannot run).
type SyntaxError struct {
	Query string // the query, arguments joined by spaces
	Msg   string // what is wrong, worded as Bupstash words it
	Pos   int    // character offset of the problem
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("query %q: syntax error at character %d, %s", e.Query, e.Pos+1, e.Msg)
}

// Is makes errors.Is(err, ErrSyntax) hold.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

type parser struct {
	chars []rune
	off   int
}

func (p *parser) fail(pos int, format string, args ...any) error {
	return &SyntaxError{Query: displayQuery(p.chars[:len(p.chars)-1]), Msg: fmt.Sprintf(format, args...), Pos: pos}
}

func (p *parser) peek() rune {
	if p.off < len(p.chars) {
		return p.chars[p.off]
	}
	return sep
}

func (p *parser) advance(n int) { p.off = min(p.off+n, len(p.chars)) }

func (p *parser) eof() bool { return p.off == len(p.chars) }

func (p *parser) lookahead(s string) bool {
	i := p.off
	for _, c := range s {
		if i >= len(p.chars) || p.chars[i] != c {
			return false
		}
		i++
	}
	return true
}

// lookaheadOp reports whether op comes next, followed by a gap or the end.
func (p *parser) lookaheadOp(op string) bool {
	if !p.lookahead(op) {
		return false
	}
	i := p.off + len([]rune(op))
	return i >= len(p.chars) || p.chars[i] == sep
}

func (p *parser) consume(s string) bool {
	if p.lookahead(s) {
		p.advance(len([]rune(s)))
		return true
	}
	return false
}

func (p *parser) parse() (node, error) {
	n, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	if p.off != len(p.chars) {
		return nil, p.fail(p.off, "unexpected input at end of query")
	}
	return n, nil
}

// Bupstash's precedence: `and` binds loosest, then `or`, then `~`; both
// binary operators associate to the left. So `a=1 or b=2 and c=3` is
// `[a=1 or b=2] and c=3`.
func (p *parser) parseAnd() (node, error) { return p.parseBinop("and", opAnd, p.parseOr) }
func (p *parser) parseOr() (node, error)  { return p.parseBinop("or", opOr, p.parseBase) }

func (p *parser) parseBinop(op string, kind binop, sub func() (node, error)) (node, error) {
	l, err := sub()
	if err != nil {
		return nil, err
	}
	for p.lookaheadOp(op) {
		p.advance(len(op) + 1)
		if p.eof() {
			return nil, p.fail(p.off-1, "operator '%s' expects a value", op)
		}
		r, err := sub()
		if err != nil {
			return nil, err
		}
		l = &binNode{op: kind, l: l, r: r}
	}
	return l, nil
}

func (p *parser) parseBase() (node, error) {
	switch {
	case p.peek() == '[':
		p.advance(1)
		p.consume(string(sep))
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		if !p.consume("]") {
			return nil, p.fail(p.off, "expected ']'")
		}
		p.consume(string(sep))
		return n, nil
	case p.peek() == '~':
		p.advance(1)
		p.consume(string(sep))
		n, err := p.parseBase()
		if err != nil {
			return nil, err
		}
		return &notNode{n: n}, nil
	case p.lookahead("older-than" + string(sep)):
		p.advance(len("older-than") + 1)
		return p.parseAge(true)
	case p.lookahead("newer-than" + string(sep)):
		p.advance(len("newer-than") + 1)
		return p.parseAge(false)
	}
	return p.parseEq()
}

// parseAge reads the duration after older-than/newer-than: everything up
// to the next gap.
func (p *parser) parseAge(older bool) (node, error) {
	start := p.off
	for p.peek() != sep {
		p.advance(1)
	}
	text := string(p.chars[start:p.off])
	p.consume(string(sep))
	d, err := ParseDuration(text)
	if err != nil {
		return nil, p.fail(start, "error parsing duration: %v", err)
	}
	return &ageNode{older: older, d: d}, nil
}

func isTagChar(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func (p *parser) parseEq() (node, error) {
	start := p.off
	if !isTagChar(p.peek()) {
		return nil, p.fail(p.off, "expected a tag character")
	}
	for isTagChar(p.peek()) {
		p.advance(1)
	}
	tag := string(p.chars[start:p.off])
	literal := false
	switch {
	case p.consume("=="):
		literal = true
	case p.consume("="):
	default:
		return nil, p.fail(start, "expected '=' after tag")
	}
	value := p.parseValue()
	pattern := value
	if literal {
		pattern = escapeGlob(value)
	}
	g, err := compileGlob(pattern)
	if err != nil {
		if literal {
			// Bupstash panics on these: `==` leaves braces and
			// backslashes unescaped, and they can make an invalid glob.
			return nil, p.fail(start, "invalid literal value (Bupstash cannot match it either): %v", err)
		}
		return nil, p.fail(start, "invalid glob pattern: %v", err)
	}
	p.consume(string(sep))
	return &globNode{tag: tag, g: g, literal: literal, value: value}, nil
}

// parseValue reads a value: everything up to the next gap, which it
// consumes. An empty value is allowed (it matches an empty tag).
func (p *parser) parseValue() string {
	if p.peek() == sep {
		p.advance(1)
		return ""
	}
	start := p.off
	for p.peek() != sep {
		p.advance(1)
	}
	v := string(p.chars[start:p.off])
	p.consume(string(sep))
	return v
}
