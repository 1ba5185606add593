package treediff

import (
	"bufio"
	"context"
	"io"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash"
)

// Change says how an entry differs.
type Change byte

const (
	Removed Change = '-' // in the left tree only, or changed: the left version
	Added   Change = '+' // in the right tree only, or changed: the right version
)

// Diff walks both indexes in step, as Bupstash's index::diff does, and
// calls fn for each entry that is only on one side, and for both versions
// of an entry that differs (Removed first). It reports whether anything
// differed. Both indexes must be in Bupstash's index order, which
// snapshots and Live sources are.
func Diff(ctx context.Context, left, right *Index, ig Ignore, fn func(Change, *bupstash.IndexEntry) error) (bool, error) {
	ig |= ignoreDataCursors
	lr, rr := left.reader(), right.reader()
	l, lerr := next(ctx, lr)
	r, rerr := next(ctx, rr)
	changed := false
	emit := func(c Change, e *bupstash.IndexEntry) error {
		changed = true
		return fn(c, e)
	}
	for l != nil && r != nil {
		if err := ctx.Err(); err != nil {
			return changed, err
		}
		if oldIndex(l) || oldIndex(r) {
			return changed, ErrOldIndex
		}
		switch c := pathCmp(l.Path, r.Path); {
		case c == 0:
			if !equal(l, r, ig) {
				if err := emit(Removed, l); err != nil {
					return changed, err
				}
				if err := emit(Added, r); err != nil {
					return changed, err
				}
			}
			l, lerr = next(ctx, lr)
			r, rerr = next(ctx, rr)
		case c < 0:
			if err := emit(Removed, l); err != nil {
				return changed, err
			}
			l, lerr = next(ctx, lr)
		default:
			if err := emit(Added, r); err != nil {
				return changed, err
			}
			r, rerr = next(ctx, rr)
		}
	}
	for ; l != nil; l, lerr = next(ctx, lr) {
		if err := emit(Removed, l); err != nil {
			return changed, err
		}
	}
	for ; r != nil; r, rerr = next(ctx, rr) {
		if err := emit(Added, r); err != nil {
			return changed, err
		}
	}
	if lerr != nil {
		return changed, lerr
	}
	return changed, rerr
}

// next returns the next entry, or nil at the end or on an error (kept for
// the caller to report once both sides are done, like Bupstash, which
// stops at the first one).
func next(ctx context.Context, r *reader) (*bupstash.IndexEntry, error) {
	e, err := r.Next(ctx)
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Format is an output format of Write.
type Format int

const (
	// Human is bupstash's default listing: mode, size, ctime, path.
	Human Format = iota
	// JSONL1 is `--format jsonl1`: one JSON object per line.
	JSONL1
)

// Options control Write.
type Options struct {
	Ignore Ignore
	Format Format
	// Location is the zone of the human format's times: time.Local, or
	// time.UTC for --utc-timestamps. Nil means time.Local.
	Location *time.Location
}

// Write prints the differences between left and right as `bupstash diff`
// prints them, each line prefixed "- " or "+ ", and reports whether there
// were any.
func Write(ctx context.Context, w io.Writer, left, right *Index, opts Options) (bool, error) {
	loc := opts.Location
	if loc == nil {
		loc = time.Local
	}
	width := max(left.sizeWidth(), right.sizeWidth())
	bw := bufio.NewWriterSize(w, 64<<10)
	changed, err := Diff(ctx, left, right, opts.Ignore, func(c Change, e *bupstash.IndexEntry) error {
		bw.WriteByte(byte(c))
		bw.WriteByte(' ')
		if opts.Format == JSONL1 {
			bw.WriteString(JSONLine(e))
		} else {
			bw.WriteString(HumanLine(e, width, loc))
		}
		return bw.WriteByte('\n')
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return changed, err
}
