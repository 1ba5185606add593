package backupy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Blob is one object version of the store. Its exported fields never
// change; a changed object gets a new Blob when its directory is listed
// again.
//
// What is learnt about a Blob is split by concern: the key that opens it
// and its sniffed payload (keymatch.go, prepare.go), integrity verdicts
// (verdicts.go), and reads of its frames (frames.go).
type Blob struct {
	Path    string    // object key: slash-separated, relative to the store
	Size    int64     // object size S
	ModTime time.Time // object modification time
	Kind    Kind

	store *Store
	obj   ObjectInfo // the version this Blob stands for
	id    string     // identity in the cache directory
	space uint64     // chunk cache key space of the decrypted frames
	// index locates the frames of an encrypted object (of its intact
	// prefix if structErr is set).
	index     *gcmframe.Index
	structErr error
	// stale is set once a listing no longer shows this version.
	stale atomic.Bool

	prep chan struct{} // one-slot semaphore serialising prepare

	mu          sync.Mutex
	prepared    bool
	key         *blobKey // nil: not encrypted, or locked
	pl          payload
	files       []*File
	size        int64  // decoded size of the main view, -1 if unknown
	computedSHA string // ciphertext SHA-256 of this version, from a read of all of it
	zstdOK      bool   // a full pass verified the zstd checksum
	saved       indexEntry

	dmg damage // integrity verdicts; see verdicts.go
}

func (s *Store) newBlob(ctx context.Context, info ObjectInfo) (*Blob, error) {
	b := &Blob{
		Path:    info.Key,
		Size:    info.Size,
		ModTime: info.ModTime,
		store:   s,
		obj:     info,
		space:   cache.NewSpace(),
		prep:    make(chan struct{}, 1),
		size:    -1,
		dmg:     damage{goodDecoded: -1},
	}
	b.id = objectID(s.objects.Name(), info)
	saved, known := s.disk.lookup(b.id)
	if kind, index, ok := savedKind(saved, b.Size); known && ok {
		// Sorted by an earlier listing of this very version.
		b.Kind, b.index = kind, index
	} else {
		obj, err := b.open(ctx)
		if err != nil {
			return nil, err
		}
		b.Kind, b.index, b.structErr = classify(objectReaderAt{ctx, obj}, b.Size, info.Key)
		obj.Close()
		if b.Kind == "" {
			return nil, fmt.Errorf("reading %s: %w", info.Key, b.structErr)
		}
		if b.structErr == nil && (b.index == nil || b.index.Regular()) {
			s.disk.note(b, func(e *indexEntry) { e.Kind = b.Kind })
		}
	}
	if b.structErr != nil {
		// Found without a key, so it holds whatever the key: the intact
		// frames before the damage still read.
		b.dmg.record(&CorruptError{Object: info.Key, Err: b.structErr}, b.damageOffset(b.structErr))
		s.log.Warn("backupy: damaged object", append(frameAttrs(b.structErr), "object", info.Key, "err", b.structErr)...)
	}
	// Facts about the bytes themselves: the hash, and what a clean pass
	// decoded them to. Verdicts that need a key wait for prepare.
	if e, ok := s.disk.lookup(b.id); ok {
		b.saved = e
		b.computedSHA = e.SHA256
		b.zstdOK = e.ZstdOK
		switch {
		case e.Decoded != nil:
			b.size = *e.Decoded
		case e.Sized != nil:
			b.size = *e.Sized
		}
	}
	return b, nil
}

// savedKind returns the kind an index entry saved for an object of the
// given size, with its frame index (the regular layout, the only one
// saved), if the entry has one.
func savedKind(e indexEntry, size int64) (Kind, *gcmframe.Index, bool) {
	switch e.Kind {
	case KindPlainZstd, KindForeign:
		return e.Kind, nil, true
	case KindEmpty:
		if size == 0 {
			return e.Kind, nil, true
		}
	case KindEncrypted:
	default:
		return "", nil, false
	}
	x, err := gcmframe.Layout(size)
	if err != nil || !x.Regular() || (e.Kind == KindEncrypted) != (x.Frames() > 0) {
		return "", nil, false
	}
	return e.Kind, x, true
}

// objectID names an object version in the cache directory: the store,
// the key, and the version (size and ETag, or size and modification time
// where there is no ETag).
func objectID(store string, info ObjectInfo) string {
	parts := []string{store, info.Key, strconv.FormatInt(info.Size, 10), strconv.FormatInt(info.ModTime.UnixNano(), 10)}
	if info.ETag != "" {
		parts[3] = "etag:" + info.ETag
	}
	h := sha256.New()
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// open opens the object version the Blob stands for. A version that is
// gone (removed, replaced) fails with ErrChanged.
func (b *Blob) open(ctx context.Context) (Object, error) {
	if b.stale.Load() {
		return nil, fmt.Errorf("backupy: %s: %w", b.Path, ErrChanged)
	}
	obj, err := b.store.objects.Open(ctx, b.obj)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("backupy: %s: removed: %w", b.Path, ErrChanged)
	}
	if err != nil {
		return nil, err
	}
	return versionObject{obj, b.Path}, nil
}

// versionObject is an open object version. On stores where each read is
// a request (S3), the version can go between two reads: a read that finds
// the object gone reports the version changed, as a replaced one does,
// not a missing file.
type versionObject struct {
	Object
	key string
}

func (o versionObject) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := o.Object.ReadAt(ctx, p, off)
	if errors.Is(err, ErrNotFound) {
		// Not wrapped: the read is of a version that went, not of a
		// missing file.
		err = fmt.Errorf("backupy: %s: removed: %w (%v)", o.key, ErrChanged, err)
	}
	return n, err
}

// sequential returns a reader of the whole object, reading ahead on
// stores where each read costs a round trip, and the object to close
// after it.
func (b *Blob) sequential(ctx context.Context) (*seqReader, Object, error) {
	obj, err := b.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	block, inFlight := b.store.readTuning()
	if inFlight > 1 && b.index != nil && b.index.Regular() {
		// Whole frames per read: frame i starts at i × FullFrameSize.
		block = max(1, block/gcmframe.FullFrameSize) * gcmframe.FullFrameSize
	}
	return newSeqReader(ctx, obj, b.Size, block, inFlight), obj, nil
}

// base is the object's base name without ".enc" (and, for unencrypted
// objects, without a ".zst" the uploader may have added).
func (b *Blob) base() string {
	name := path.Base(b.Path)
	trimmed := strings.TrimSuffix(name, ".enc")
	if b.Kind == KindPlainZstd {
		trimmed = strings.TrimSuffix(strings.TrimSuffix(trimmed, ".zst"), ".zstd")
	}
	if trimmed == "" {
		return name
	}
	return trimmed
}

// RunID returns the run id from the matched token or keyring entry, or from
// a "run_<id>" base name; "" if neither says.
func (b *Blob) RunID() string {
	b.mu.Lock()
	k := b.key
	b.mu.Unlock()
	if k != nil && k.runID != "" {
		return k.runID
	}
	if id, ok := strings.CutPrefix(b.base(), "run_"); ok {
		return id
	}
	return ""
}

// KeyMatch says how the object's key was found: "path", "run", "sha256"
// or "trial"; "" if it has none.
func (b *Blob) KeyMatch() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.key == nil {
		return ""
	}
	return b.key.how
}

// Locked reports whether the object is encrypted and no key opened it. It
// is meaningful after Store.Files.
func (b *Blob) Locked() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Kind == KindEncrypted && b.key == nil
}

// State returns the user.backupy.state value: locked, encrypted,
// unencrypted, verified or corrupt.
func (b *Blob) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked()
}

func (b *Blob) stateLocked() string {
	switch {
	case b.dmg.found() != nil:
		return "corrupt"
	case b.Kind == KindEncrypted && b.key == nil:
		return "locked"
	case b.verifiedLocked():
		return "verified"
	case b.Kind == KindEncrypted || b.Kind == KindEmpty && b.index != nil:
		return "encrypted"
	}
	return "unencrypted"
}

// verifiedLocked reports whether the object's ciphertext hash, computed by
// a read of all of it, is the one bound to its key. The caller holds b.mu.
func (b *Blob) verifiedLocked() bool {
	return b.key != nil && b.key.sha != "" && b.computedSHA == b.key.sha
}

// usable returns why no decoded view of the object can be read at all:
// the store is closed, or no key opens the object. Corruption is checked
// per read (see verdicts.go), as reads before the damage work.
func (b *Blob) usable() error {
	if err := b.store.errIfClosed(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Kind == KindEncrypted && b.key == nil {
		return fmt.Errorf("backupy: %s: %w", b.Path, ErrLocked)
	}
	return nil
}

func (b *Blob) decodedSize() (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size, b.size >= 0
}
