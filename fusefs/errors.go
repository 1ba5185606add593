package fusefs

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// status maps an error from the readers to the errno a program sees.
// Anything unexpected is EIO: never a success with wrong bytes.
func status(err error) fuse.Status {
	var errno syscall.Errno
	switch {
	case err == nil:
		return fuse.OK
	case errors.As(err, &errno):
		return fuse.Status(errno)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fuse.EINTR
	case errors.Is(err, bupstash.ErrCannotReadData), errors.Is(err, bupstash.ErrCannotListContents),
		errors.Is(err, bupstash.ErrPermission): // a server that gives this client no data
		return fuse.EACCES
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, backupy.ErrNotFound):
		return fuse.ENOENT
	case errors.Is(err, bupstash.ErrNotRegular):
		return fuse.EINVAL
	case errors.Is(err, backupy.ErrLocked):
		return fuse.Status(syscall.ENOKEY) // no key opens this blob
	case errors.Is(err, backupy.ErrChanged):
		return fuse.Status(syscall.ESTALE)
	default:
		return fuse.EIO
	}
}

// errorLog writes one line per failing file, not one per failing read:
// the kernel retries and reads ahead, and a damaged file would otherwise
// flood the log.
type errorLog struct {
	log *slog.Logger

	mu   sync.Mutex
	last map[string]time.Time
}

const errorLogInterval = time.Minute

func newErrorLog(l *slog.Logger) *errorLog {
	return &errorLog{log: l, last: map[string]time.Time{}}
}

// report logs err for the file named by key unless it was reported within
// the last minute. Interruptions are not failures and are not logged.
func (l *errorLog) report(key, msg string, err error, attrs ...any) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if errors.Is(err, bupstash.ErrPermission) {
		// The server refuses every read alike: one line says so.
		key = "\x00permission"
	}
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.last[key]; ok && now.Sub(t) < errorLogInterval {
		l.mu.Unlock()
		return
	}
	if len(l.last) > 10000 {
		clear(l.last)
	}
	l.last[key] = now
	l.mu.Unlock()
	var ce *bupstash.ChunkError
	if errors.As(err, &ce) {
		attrs = append(attrs, "chunk", ce.Address.String(), "tree", ce.Tree)
		if ce.Leaf >= 0 {
			attrs = append(attrs, "leaf", ce.Leaf)
		}
	}
	l.log.Error(msg, append(attrs, "err", err)...)
}
