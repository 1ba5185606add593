package bupstash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/backupfs/backupfs/internal/untrusted"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// This file gives a consistent, read-only view of the repository metadata
// (items/, repo.oplog, meta/) while Bupstash may be writing
// (docs/bupstash-format.md §2.3 to §2.6). Bupstash changes metadata only
// inside transactions guarded by an fcntl lock on tx.lock; readers take it
// shared. A crash can leave a committed but unapplied redo log (schema 8:
// tx.wal) or a half-applied transaction with its undo log (schemas 5–7:
// rollback.journal). Bupstash would repair the files in place; a read-only
// reader instead applies the log in memory, as an overlay over the files on
// disk.

// metaView reads metadata files through an optional overlay.
type metaView struct {
	dir     string
	overlay *overlay // nil when no transaction is pending
}

// overlay holds files whose content differs from the disk: a nil value
// means the file is gone.
type overlay struct {
	files map[string][]byte
	base  string
}

// read returns file p (relative to the repository) as the transaction
// left it, refusing a file on disk larger than limit.
func (o *overlay) read(p string, limit int64) ([]byte, error) {
	if b, ok := o.files[p]; ok {
		if b == nil {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}
		return b, nil
	}
	return untrusted.ReadFile(filepath.Join(o.base, p), limit)
}

// readFile returns metadata file p, refusing one larger than limit.
func (v *metaView) readFile(p string, limit int64) ([]byte, error) {
	if v.overlay != nil {
		return v.overlay.read(p, limit)
	}
	return untrusted.ReadFile(filepath.Join(v.dir, p), limit)
}

// listDir returns the names in a metadata directory, sorted.
func (v *metaView) listDir(dir string) ([]string, error) {
	f, err := untrusted.OpenDir(filepath.Join(v.dir, dir))
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, err
	}
	if v.overlay != nil {
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		for p, b := range v.overlay.files {
			if path.Dir(p) == dir {
				set[path.Base(p)] = b != nil
			}
		}
		names = names[:0]
		for n, ok := range set {
			if ok {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// readMeta runs fn with a consistent view of the metadata: under the shared
// transaction lock, with any pending transaction applied in memory. The
// lock may be held by another process (bupstash put, rm or gc) for as
// long as its transaction lasts: readMeta waits, saying so once, until
// ctx ends. Callers that serve requests never wait here: the mount
// refreshes its lists in the background.
func (d *Dir) readMeta(ctx context.Context, fn func(*metaView) error) error {
	if !d.noLock {
		lockCtx := ctx
		if d.lockWait > 0 {
			var cancel context.CancelFunc
			lockCtx, cancel = context.WithTimeoutCause(ctx, d.lockWait, ErrLocked)
			defer cancel()
		}
		unlock, err := lockShared(lockCtx, filepath.Join(d.dir, "tx.lock"), func() {
			d.log.Info("waiting for the repository's transaction lock, held by another process (bupstash put, rm or gc?)", "repo", d.dir)
		})
		if err != nil {
			if !errors.Is(err, errLocksUnsupported) {
				return fmt.Errorf("%s: %w", d.dir, err)
			}
			d.notice("nolock", "repository does not support locks; reading without one", "err", err)
		} else {
			defer unlock()
		}
	}
	ov, err := loadOverlay(d.dir, d.schema)
	if err != nil {
		return fmt.Errorf("%s: %w", d.dir, err)
	}
	if ov != nil {
		d.notice("overlay", "repository has an unfinished transaction; reading it as if it were recovered")
	}
	return fn(&metaView{dir: d.dir, overlay: ov})
}

// loadOverlay returns the in-memory repair of a pending transaction, or nil.
func loadOverlay(dir string, schema int) (*overlay, error) {
	name := "rollback.journal"
	if schema >= 8 {
		name = "tx.wal"
	}
	b, err := untrusted.ReadFile(filepath.Join(dir, name), untrusted.TransactionLog)
	if errors.Is(err, untrusted.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrBadJournal, err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !hotJournal(b) {
		// Empty, or torn while being written: the transaction never
		// started changing files, so the files on disk are consistent.
		return nil, nil
	}
	o := &overlay{files: make(map[string][]byte), base: dir}
	body := b[:len(b)-32]
	if schema >= 8 {
		err = o.applyWAL(body)
	} else {
		err = o.applyRollback(body)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrBadJournal, err)
	}
	return o, nil
}

// hotJournal reports whether a transaction log is complete: its last 32
// bytes are the BLAKE3 hash of the rest.
func hotJournal(b []byte) bool {
	if len(b) < 32 {
		return false
	}
	sum := blake3.Sum256(b[:len(b)-32])
	return bytes.Equal(sum[:], b[len(b)-32:])
}

// journalPath validates a path named in a transaction log: relative, clean,
// inside the repository.
func journalPath(p string) (string, error) {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || len(p) > 2 && p[:3] == "../" {
		return "", fmt.Errorf("bad path %q", p)
	}
	return p, nil
}

// applyWAL applies a schema-8 redo log: the state after the transaction.
func (o *overlay) applyWAL(b []byte) error {
	d := bare.NewDecoder(b)
	for first := true; d.Remaining() > 0; first = false {
		op := d.Uint()
		if d.Err() != nil {
			break
		}
		if first != (op == 0) {
			return errors.New("log does not start with Begin")
		}
		switch op {
		case 0: // Begin{sequence_number: u64}
			d.U64()
		case 1: // End
			if d.Remaining() != 0 {
				return errors.New("bytes after End")
			}
			return nil
		case 2: // CreateFile{path, data_size} + data
			p, data := d.String(), d.Data()
			if err := o.set(p, bytes.Clone(data)); err != nil {
				return err
			}
		case 3: // WriteFileAt{path, offset, data_size} + data
			p, off, data := d.String(), d.Uint(), d.Data()
			if d.Err() != nil {
				break
			}
			if err := o.patch(p, off, data); err != nil {
				return err
			}
		case 4: // Remove{path}
			if err := o.set(d.String(), nil); err != nil && d.Err() == nil {
				return err
			}
		case 5: // Rename{path, to}
			from, to := d.String(), d.String()
			if d.Err() != nil {
				break
			}
			if err := o.rename(from, to); err != nil {
				return err
			}
		case 6: // Mkdir{path}: directories need no overlay
			_ = d.String()
		default:
			return fmt.Errorf("unknown operation %d", op)
		}
	}
	if d.Err() != nil {
		return d.Err()
	}
	return errors.New("log does not end with End")
}

// applyRollback applies a schema 5–7 undo log: the state before the
// interrupted transaction.
func (o *overlay) applyRollback(b []byte) error {
	d := bare.NewDecoder(b)
	for d.Remaining() > 0 {
		op := d.Uint()
		if d.Err() != nil {
			break
		}
		switch op {
		case 0: // RollbackComplete
			if d.Remaining() != 0 {
				return errors.New("bytes after RollbackComplete")
			}
			return nil
		case 1: // RemoveFile(path): the file did not exist before
			if err := o.set(d.String(), nil); err != nil && d.Err() == nil {
				return err
			}
		case 2: // WriteFile((path, size)) + previous content
			p, data := d.String(), d.Data()
			if d.Err() != nil {
				break
			}
			if err := o.set(p, bytes.Clone(data)); err != nil {
				return err
			}
		case 3: // TruncateFile((path, size)): undo an append
			p, size := d.String(), d.Uint()
			if d.Err() != nil {
				break
			}
			if err := o.truncate(p, size); err != nil {
				return err
			}
		case 4: // RenameFile{from, to}
			from, to := d.String(), d.String()
			if d.Err() != nil {
				break
			}
			if err := o.rename(from, to); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown operation %d", op)
		}
	}
	if d.Err() != nil {
		return d.Err()
	}
	return errors.New("log does not end with RollbackComplete")
}

func (o *overlay) set(p string, data []byte) error {
	p, err := journalPath(p)
	if err != nil {
		return err
	}
	o.files[p] = data
	return nil
}

func (o *overlay) current(p string) ([]byte, error) {
	b, err := o.read(p, untrusted.TransactionLog)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (o *overlay) patch(p string, off uint64, data []byte) error {
	p, err := journalPath(p)
	if err != nil {
		return err
	}
	cur, err := o.current(p)
	if err != nil {
		return err
	}
	if off > uint64(len(cur)) || off > 1<<40 {
		return fmt.Errorf("write at %d past the end of %s (%d bytes)", off, p, len(cur))
	}
	end := int(off) + len(data)
	out := make([]byte, max(end, len(cur)))
	copy(out, cur)
	copy(out[off:], data)
	o.files[p] = out
	return nil
}

func (o *overlay) truncate(p string, size uint64) error {
	p, err := journalPath(p)
	if err != nil {
		return err
	}
	cur, err := o.current(p)
	if err != nil {
		return err
	}
	if size < uint64(len(cur)) {
		cur = cur[:size:size]
	}
	o.files[p] = bytes.Clone(cur)
	return nil
}

func (o *overlay) rename(from, to string) error {
	from, err := journalPath(from)
	if err != nil {
		return err
	}
	to, err = journalPath(to)
	if err != nil {
		return err
	}
	cur, err := o.current(from)
	if err != nil {
		return err
	}
	if cur == nil {
		// Bupstash tolerates a rename whose source is gone if the target
		// exists: the rename already happened.
		if t, _ := o.current(to); t != nil {
			return nil
		}
		return fmt.Errorf("rename of missing file %s", from)
	}
	o.files[to] = cur
	o.files[from] = nil
	return nil
}

// errLocksUnsupported means the filesystem refuses fcntl locks.
var errLocksUnsupported = errors.New("file locks not supported")

// Locks are per process and per file: closing any descriptor of tx.lock
// drops every lock this process holds on it. So each lock file is opened
// once and lock sections on it are serialised in-process.
var (
	lockFilesMu sync.Mutex
	lockFiles   = map[string]*lockFile{}
)

type lockFile struct {
	held chan struct{} // a token, taken while the fcntl lock is held
	f    *os.File
}

// lockWaitNotice is how long a wait for the lock lasts before it is
// reported.
const lockWaitNotice = 2 * time.Second

// lockShared takes a shared fcntl lock on the whole file, polling so that
// ctx can cancel the wait while a writer holds the exclusive lock. When
// the wait exceeds lockWaitNotice, waiting is called once.
func lockShared(ctx context.Context, name string, waiting func()) (unlock func(), err error) {
	lockFilesMu.Lock()
	lf, ok := lockFiles[name]
	if !ok {
		f, _, err := untrusted.Open(name)
		if err != nil {
			lockFilesMu.Unlock()
			return nil, fmt.Errorf("opening lock file: %w", err)
		}
		lf = &lockFile{held: make(chan struct{}, 1), f: f}
		lockFiles[name] = lf
	}
	lockFilesMu.Unlock()

	select {
	case lf.held <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the repository lock: %w", context.Cause(ctx))
	}
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Whence: 0, Start: 0, Len: 0}
	delay := time.Millisecond
	started, told := time.Now(), false
	for {
		err := syscall.FcntlFlock(lf.f.Fd(), syscall.F_SETLK, &lk)
		if err == nil {
			break
		}
		if err != syscall.EAGAIN && err != syscall.EACCES && err != syscall.EINTR {
			<-lf.held
			return nil, fmt.Errorf("%w: %w", errLocksUnsupported, err)
		}
		if !told && time.Since(started) >= lockWaitNotice && waiting != nil {
			told = true
			waiting()
		}
		select {
		case <-ctx.Done():
			<-lf.held
			return nil, fmt.Errorf("waiting for the repository lock: %w", context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	return func() {
		ul := syscall.Flock_t{Type: syscall.F_UNLCK}
		_ = syscall.FcntlFlock(lf.f.Fd(), syscall.F_SETLK, &ul)
		<-lf.held
	}, nil
}
