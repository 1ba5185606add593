package query

import (
	"encoding/hex"
	"strings"
	"time"
)

// Query is a parsed query. It is immutable and safe for concurrent use.
type Query struct {
	root node
	text string
}

// String returns the query as given, its arguments joined by spaces.
func (q *Query) String() string { return q.text }

// Item is what a query sees of an item whose metadata could be decrypted.
type Item struct {
	ID        [16]byte
	Timestamp time.Time
	// Size is the item's data and index sizes together, which the "size"
	// pseudo-tag shows.
	Size uint64
	Tags map[string]string
}

// Env is the context queries are evaluated in.
type Env struct {
	// Now is the time ages are measured from.
	Now time.Time
	// Location is the time zone of the "timestamp" pseudo-tag: Bupstash
	// uses local time, or UTC with --utc-timestamps. Nil means time.Local.
	Location *time.Location
}

func (e Env) location() *time.Location {
	if e.Location == nil {
		return time.Local
	}
	return e.Location
}

// Match reports whether the item matches, as `bupstash list` decides it.
// The tags a query sees are the item's own plus three pseudo-tags that
// replace any own tag of the same name: "id" (32 lowercase hex digits),
// "timestamp" (YYYY/MM/DD HH:MM:SS in env's zone) and "size" (data plus
// index size as Bupstash prints it, e.g. "16.06MiB"). A tag the item lacks
// matches nothing, not even `tag=*`; `~tag=*` selects items without it.
//
// The age of an item is env.Now minus its timestamp. For an item dated in
// the future Bupstash refuses the whole listing; here its age is negative,
// so it is newer than any duration and older than none.
func (q *Query) Match(it *Item, env Env) bool {
	c := itemContext{it: it, env: env}
	return q.root.eval(&c)
}

// MatchForeign reports whether an item made under another primary key
// matches, as `bupstash list --query-encrypted` decides it: such an item
// shows only the pseudo-tags "id" and "decryption-key-id", and age
// assertions never match it.
func (q *Query) MatchForeign(id, primaryKeyID [16]byte) bool {
	c := foreignContext{id: id, keyID: primaryKeyID}
	return q.root.eval(&c)
}

// ID returns the item id when the whole query is `id=ID` or `id==ID` with
// a full 32-digit id (either case), which Bupstash's get, list-contents,
// diff and rm take as the item directly, without consulting the listing.
func (q *Query) ID() ([16]byte, bool) {
	var id [16]byte
	g, ok := q.root.(*globNode)
	if !ok || g.tag != "id" || len(g.g.src) != 32 {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(g.g.src)); err != nil {
		return id, false
	}
	return id, true
}

// Tags returns the tag set the query matches against, pseudo-tags
// included.
func Tags(it *Item, env Env) map[string]string {
	m := make(map[string]string, len(it.Tags)+3)
	for k, v := range it.Tags {
		m[k] = v
	}
	m["id"] = hex.EncodeToString(it.ID[:])
	m["timestamp"] = FormatTimestamp(it.Timestamp, env.location())
	m["size"] = FormatSize(it.Size)
	return m
}

// context is what nodes evaluate against.
type context interface {
	tag(name string) (string, bool)
	// age returns the item's age, or false when ages cannot be known.
	age() (sign int, d Duration, ok bool)
}

type itemContext struct {
	it  *Item
	env Env
}

func (c *itemContext) tag(name string) (string, bool) {
	switch name {
	case "id":
		return hex.EncodeToString(c.it.ID[:]), true
	case "timestamp":
		return FormatTimestamp(c.it.Timestamp, c.env.location()), true
	case "size":
		return FormatSize(c.it.Size), true
	}
	v, ok := c.it.Tags[name]
	return v, ok
}

// age is Now - Timestamp, computed in seconds and nanoseconds so that no
// timestamp, however far off, overflows it.
func (c *itemContext) age() (int, Duration, bool) {
	now, ts := c.env.Now, c.it.Timestamp
	sign := 1
	if now.Before(ts) {
		now, ts, sign = ts, now, -1
	}
	secs := now.Unix() - ts.Unix()
	nanos := int64(now.Nanosecond()) - int64(ts.Nanosecond())
	if nanos < 0 {
		secs--
		nanos += 1e9
	}
	return sign, Duration{Secs: uint64(secs), Nanos: uint32(nanos)}, true
}

type foreignContext struct{ id, keyID [16]byte }

func (c *foreignContext) tag(name string) (string, bool) {
	switch name {
	case "id":
		return hex.EncodeToString(c.id[:]), true
	case "decryption-key-id":
		return hex.EncodeToString(c.keyID[:]), true
	}
	return "", false
}

func (c *foreignContext) age() (int, Duration, bool) { return 0, Duration{}, false }

type node interface {
	eval(c context) bool
	format(b *strings.Builder)
}

type binop uint8

const (
	opAnd binop = iota
	opOr
)

type binNode struct {
	op   binop
	l, r node
}

func (n *binNode) eval(c context) bool {
	if n.op == opAnd {
		return n.l.eval(c) && n.r.eval(c)
	}
	return n.l.eval(c) || n.r.eval(c)
}

type notNode struct{ n node }

func (n *notNode) eval(c context) bool { return !n.n.eval(c) }

type globNode struct {
	tag     string
	g       *glob
	literal bool   // written with ==
	value   string // as written
}

func (n *globNode) eval(c context) bool {
	v, ok := c.tag(n.tag)
	return ok && n.g.match(v)
}

type ageNode struct {
	older bool
	d     Duration
}

func (n *ageNode) eval(c context) bool {
	sign, age, ok := c.age()
	if !ok {
		return false
	}
	if n.older {
		return sign > 0 && n.d.less(age)
	}
	return sign < 0 || age.less(n.d)
}

// format writes the query's structure with explicit grouping, for tests
// and messages.
func (n *binNode) format(b *strings.Builder) {
	b.WriteString("[")
	n.l.format(b)
	if n.op == opAnd {
		b.WriteString(" and ")
	} else {
		b.WriteString(" or ")
	}
	n.r.format(b)
	b.WriteString("]")
}

func (n *notNode) format(b *strings.Builder) { b.WriteString("~"); n.n.format(b) }

func (n *globNode) format(b *strings.Builder) {
	b.WriteString(n.tag)
	if n.literal {
		b.WriteString("==")
	} else {
		b.WriteString("=")
	}
	b.WriteString(n.value)
}

func (n *ageNode) format(b *strings.Builder) {
	if n.older {
		b.WriteString("older-than ")
	} else {
		b.WriteString("newer-than ")
	}
	b.WriteString(n.d.String())
}

// structure returns the query with every binary operation bracketed.
func (q *Query) structure() string {
	var b strings.Builder
	q.root.format(&b)
	return b.String()
}
