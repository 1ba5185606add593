package s3store

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupfs/backupfs/repo/backupy"
)

// smallWindow is what a small read fetches: sorting a new object reads a
// few 4-byte headers near its start and its end, and one round trip each
// would make listing a directory of new objects slow.
const smallWindow = 64 << 10

// object is one version of an object, read by ranged GETs.
type object struct {
	s    *Store
	info backupy.ObjectInfo

	mu      sync.Mutex
	windows [2]window // the object's head and tail, as small reads fetched them
}

type window struct {
	off  int64
	data []byte
}

var _ backupy.Object = (*object)(nil)

// ReadAt reads len(p) bytes at off, as io.ReaderAt does: io.EOF with
// fewer bytes at the object's end.
func (o *object) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: %s: negative offset", o.s.name, o.info.Key)
	}
	if off >= o.info.Size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), o.info.Size-off)]
	var n int
	var err error
	if len(want) <= smallWindow/16 {
		n, err = o.readSmall(ctx, want, off)
	} else {
		n, err = o.fetch(ctx, want, off)
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// readSmall serves a small read from the window around it, fetching the
// window if needed: the object's last smallWindow bytes for reads near
// its end, smallWindow bytes from off otherwise.
func (o *object) readSmall(ctx context.Context, p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	slot := 0
	if end > o.info.Size-smallWindow {
		slot = 1
	}
	o.mu.Lock()
	windows := o.windows
	o.mu.Unlock()
	for _, w := range windows {
		if w.data != nil && off >= w.off && end <= w.off+int64(len(w.data)) {
			return copy(p, w.data[off-w.off:]), nil
		}
	}
	wOff := off
	if slot == 1 {
		wOff = max(0, o.info.Size-smallWindow)
	}
	buf := make([]byte, min(smallWindow, o.info.Size-wOff))
	n, err := o.fetch(ctx, buf, wOff)
	if err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.windows[slot] = window{off: wOff, data: buf[:n]}
	o.mu.Unlock()
	return copy(p, buf[off-wOff:n]), nil
}

// fetch fills p from off with ranged GETs of the listed version,
// continuing after what earlier attempts delivered. p lies within the
// object.
func (o *object) fetch(ctx context.Context, p []byte, off int64) (int, error) {
	got := 0
	err := o.s.retry(ctx, "GetObject", func(ctx context.Context, alive func()) error {
		n, err := o.get(ctx, p[got:], off+int64(got), alive)
		got += n
		return err
	})
	if err != nil {
		return got, fmt.Errorf("%s: reading %s at %d: %w", o.s.name, o.info.Key, off+int64(got), err)
	}
	return got, nil
}

// get is one ranged GET of len(p) bytes at off. The answer must be that
// version (If-Match, and its ETag checked as well, for services that
// ignore the condition) and that range.
func (o *object) get(ctx context.Context, p []byte, off int64, alive func()) (int, error) {
	last := off + int64(len(p)) - 1
	in := &s3.GetObjectInput{
		Bucket: aws.String(o.s.bucket),
		Key:    aws.String(o.s.prefix + o.info.Key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, last)),
	}
	if o.info.ETag != "" {
		in.IfMatch = aws.String(o.info.ETag)
	}
	out, err := o.s.client.Load().GetObject(ctx, in)
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	alive()
	if etag := aws.ToString(out.ETag); o.info.ETag != "" && etag != "" && etag != o.info.ETag {
		return 0, fmt.Errorf("%s: ETag %s, listed %s: %w", o.info.Key, etag, o.info.ETag, backupy.ErrChanged)
	}
	if err := checkRange(aws.ToString(out.ContentRange), off, last, o.info.Size); err != nil {
		return 0, fmt.Errorf("%s: %w", o.info.Key, err)
	}
	n := 0
	for n < len(p) {
		m, err := out.Body.Read(p[n:])
		n += m
		if m > 0 {
			alive()
		}
		if err == io.EOF && n < len(p) {
			return n, io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return n, err
		}
		if err == io.EOF {
			break
		}
	}
	return n, nil
}

// checkRange checks a Content-Range answer ("bytes FIRST-LAST/SIZE")
// against the request. A service that ignored the Range header answers
// without one: that is acceptable only for a read of the whole object.
func checkRange(cr string, first, last, size int64) error {
	if cr == "" {
		if first == 0 && last == size-1 {
			return nil
		}
		return fmt.Errorf("%w: no Content-Range for bytes %d-%d", ErrBadAnswer, first, last)
	}
	spec, ok := strings.CutPrefix(cr, "bytes ")
	rng, total, ok2 := strings.Cut(spec, "/")
	a, b, ok3 := strings.Cut(rng, "-")
	f, err1 := strconv.ParseInt(a, 10, 64)
	l, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || !ok2 || !ok3 || err1 != nil || err2 != nil || f != first || l != last {
		return fmt.Errorf("%w: Content-Range %q for bytes %d-%d", ErrBadAnswer, cr, first, last)
	}
	if t, err := strconv.ParseInt(total, 10, 64); err == nil && t != size {
		return fmt.Errorf("%w: the object is %d bytes now, %d when listed", backupy.ErrChanged, t, size)
	}
	return nil
}

// Close forgets the windows.
func (o *object) Close() error {
	o.mu.Lock()
	o.windows = [2]window{}
	o.mu.Unlock()
	return nil
}
