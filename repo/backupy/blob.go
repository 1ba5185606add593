package backupy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Blob is one object of the store. Its exported fields never change; a
// changed object gets a new Blob on Refresh.
type Blob struct {
	Path    string    // object key: slash-separated, relative to the store
	Size    int64     // object size S
	ModTime time.Time // object modification time
	Kind    Kind

	store *Store
	abs   string // file name
	id    string // identity in the cache directory
	space uint64 // chunk cache key space of the decrypted frames
	// index locates the frames of an encrypted object (of its intact
	// prefix if structErr is set).
	index     *gcmframe.Index
	structErr error

	prepMu sync.Mutex // serialises prepare

	mu       sync.Mutex
	prepared bool
	key      *blobKey // nil: not encrypted, or locked
	pl       payload
	files    []*File
	dec      decodedState
	saved    indexEntry // what the index said when the object was listed
}

// blobKey is the key that opened an object and what it is bound to. A
// blobKey is never changed once published; learning the expected hash
// replaces it.
type blobKey struct {
	dek    *DEK
	cipher *gcmframe.Cipher
	how    string // path, run, sha256, trial or given
	source string
	sha    string // expected ciphertext SHA-256, "" if unknown
	runID  string
}

// decodedState is what reads and full passes have established.
type decodedState struct {
	size        int64  // decoded size of the main view, -1 if unknown
	computedSHA string // ciphertext SHA-256 of this object version, from a read of all of it
	zstdOK      bool   // a full pass verified the zstd checksum
	corrupt     *CorruptError
	// corruptAt is the offset in the compressed layer where the damage
	// starts: reads of the layer (and decoded bytes a pass produced) before
	// it are still served. 0 means nothing can be trusted.
	corruptAt int64
	// goodDecoded is, for damage at corruptAt > 0, how many decoded bytes
	// a pass produced before failing; -1 if no pass got there yet.
	goodDecoded int64
}

func (s *Store) newBlob(rel string, fi fs.FileInfo) (*Blob, error) {
	b := &Blob{
		Path:    rel,
		Size:    fi.Size(),
		ModTime: fi.ModTime(),
		store:   s,
		abs:     filepath.Join(s.root, filepath.FromSlash(rel)),
		space:   cache.NewSpace(),
		dec:     decodedState{size: -1, goodDecoded: -1},
	}
	b.id = objectID(s.root, rel, b.Size, b.ModTime)
	f, err := b.openObject()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b.Kind, b.index, b.structErr = classify(f, b.Size, rel)
	if b.Kind == "" {
		return nil, fmt.Errorf("reading %s: %w", rel, b.structErr)
	}
	if b.structErr != nil {
		// Found without a key, so it holds whatever the key: the intact
		// frames before the damage still read.
		b.dec.corrupt = &CorruptError{Object: rel, Err: b.structErr}
		b.dec.corruptAt = b.damageOffset(b.structErr)
		s.log.Warn("backupy: damaged object", append(frameAttrs(b.structErr), "object", rel, "err", b.structErr)...)
	}
	// Facts about the bytes themselves: the hash, and what a clean pass
	// decoded them to. Verdicts that need a key wait for prepare.
	if e, ok := s.disk.lookup(b.id); ok {
		b.saved = e
		b.dec.computedSHA = e.SHA256
		b.dec.zstdOK = e.ZstdOK
		if e.Decoded != nil {
			b.dec.size = *e.Decoded
		}
	}
	return b, nil
}

// frameAttrs are log attributes locating damage in a frame: "frame i at
// offset X", X being the frame's ciphertext offset.
func frameAttrs(err error) []any {
	var fe *gcmframe.FrameError
	if !errors.As(err, &fe) {
		return nil
	}
	return []any{"where", fmt.Sprintf("frame %d at offset %d", fe.Frame, fe.Offset)}
}

// objectID names an object version in the cache directory.
func objectID(root, rel string, size int64, mtime time.Time) string {
	h := sha256.New()
	for _, s := range []string{root, rel, strconv.FormatInt(size, 10), strconv.FormatInt(mtime.UnixNano(), 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// openObject opens the object and checks it is still the listed version.
func (b *Blob) openObject() (*os.File, error) {
	f, err := os.Open(b.abs)
	if err != nil {
		return nil, fmt.Errorf("backupy: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backupy: %w", err)
	}
	if fi.Size() != b.Size || !fi.ModTime().Equal(b.ModTime) {
		f.Close()
		return nil, fmt.Errorf("backupy: %s: %w", b.Path, ErrChanged)
	}
	return f, nil
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
	case b.dec.corrupt != nil:
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
	return b.key != nil && b.key.sha != "" && b.dec.computedSHA == b.key.sha
}

// Corrupt returns the corruption found in the object, or nil.
func (b *Blob) Corrupt() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dec.corrupt == nil {
		return nil // not a typed nil
	}
	return b.dec.corrupt
}

// damageOffset returns where in the compressed layer the damage an error
// reports begins: the start of the frame it names, or 0 when it taints the
// whole object (a bad zstd stream, a wrong hash).
func (b *Blob) damageOffset(cause error) int64 {
	var fe *gcmframe.FrameError
	if !errors.As(cause, &fe) || b.index == nil {
		return 0
	}
	if fe.Frame < b.index.Frames() {
		return b.index.Frame(fe.Frame).PlainOffset
	}
	return b.compressedSize()
}

// persistable says under which key fingerprint a verdict may be saved in
// the index for later mounts, or ok false if it must be found again each
// time. The structure of the frames holds whatever the key; a bad frame
// beyond frame 0 or a bad zstd stream hold for the key that opened frame 0
// (no other key can); a hash mismatch is never saved, as it depends on the
// hash a token claims (the computed hash is saved instead, and compared
// again with whatever a later mount's keys claim); a frame 0 that the
// bound key cannot open is found again by every key match.
func (b *Blob) persistable(cause error, key *blobKey) (keyID string, ok bool) {
	var fe *gcmframe.FrameError
	switch {
	case errors.Is(cause, errHashMismatch):
		return "", false
	case errors.Is(cause, gcmframe.ErrAuth):
		if !errors.As(cause, &fe) || fe.Frame == 0 {
			return "", false
		}
	case errors.Is(cause, errZstd):
	default: // structural: truncation, frame sizes, trailing bytes, layout
		return "", true
	}
	if key != nil && key.dek != nil {
		return key.dek.Fingerprint(), true
	}
	return "", b.index == nil // unencrypted: no key involved
}

// markCorrupt records an integrity failure, persists it if it does not
// depend on a token's claims, and returns the *CorruptError that reads
// touching the damage fail with from now on. The object keeps a raw view
// of its bytes.
func (b *Blob) markCorrupt(cause error) error {
	return b.corruptWith(cause, b.damageOffset(cause), true)
}

func (b *Blob) corruptWith(cause error, at int64, persist bool) error {
	err := &CorruptError{Object: b.Path, Err: cause}
	b.mu.Lock()
	first := b.dec.corrupt == nil
	earlier := first || at < b.dec.corruptAt
	if earlier {
		// The earliest damage is what reads run into first.
		b.dec.corrupt = err
		b.dec.corruptAt = at
		b.dec.goodDecoded = -1
	}
	key := b.key
	if first && b.prepared {
		b.files = b.rebuildFiles()
	}
	b.mu.Unlock()
	if !earlier {
		return err // already known, and no worse
	}
	attrs := append(frameAttrs(cause), "object", b.Path, "err", cause)
	switch {
	case persist && at == 0:
		b.store.log.Error("backupy: object is corrupt; reads of its decoded views fail", attrs...)
	case persist:
		b.store.log.Error("backupy: object is corrupt; reads from the damaged frame on fail", attrs...)
	default:
		b.store.log.Warn("backupy: object was found corrupt by an earlier full pass", attrs...)
	}
	if keyID, ok := b.persistable(cause, key); ok && persist {
		b.store.disk.update(b, func(e *indexEntry) {
			e.Corrupt, e.CorruptKey, e.CorruptAt = cause.Error(), keyID, &at
		})
	}
	return err
}

// damageBefore returns the corruption if reads of the compressed layer up
// to end touch the damage.
func (b *Blob) damageBefore(end int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dec.corrupt != nil && end > b.dec.corruptAt {
		return b.dec.corrupt
	}
	return nil
}

// wholeDamage returns the corruption if it taints every byte of the
// object's decoded views.
func (b *Blob) wholeDamage() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dec.corrupt != nil && b.dec.corruptAt == 0 {
		return b.dec.corrupt
	}
	return nil
}

// pastGoodDecoded returns the corruption if decoded bytes up to end are
// known to lie past what a pass could decode before the damage.
func (b *Blob) pastGoodDecoded(end int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dec.corrupt != nil && b.dec.goodDecoded >= 0 && end > b.dec.goodDecoded {
		return b.dec.corrupt
	}
	return nil
}

// noteGoodDecoded records how far a pass over a damaged object got.
func (b *Blob) noteGoodDecoded(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dec.corrupt != nil && b.dec.corruptAt > 0 && n > b.dec.goodDecoded {
		b.dec.goodDecoded = n
	}
}

// isIntegrityError reports whether err proves the object bytes are wrong
// (as opposed to an I/O failure or a cancellation).
func isIntegrityError(err error) bool {
	for _, target := range []error{gcmframe.ErrAuth, gcmframe.ErrTruncated, gcmframe.ErrFrameSize, gcmframe.ErrTrailingData, gcmframe.ErrLayout, errZstd, errHashMismatch} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// usable returns why no decoded view of the object can be read at all:
// the store is closed, or no key opens the object. Corruption is checked
// per read (damageBefore, wholeDamage), as reads before the damage work.
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

func (b *Blob) currentKey() *blobKey {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.key
}

// prepare matches a key and sniffs the payload, once. It reads at most
// frame 0 (or the first MiB) and never waits for a decode pass.
func (b *Blob) prepare(ctx context.Context) error {
	b.prepMu.Lock()
	defer b.prepMu.Unlock()
	b.mu.Lock()
	done := b.prepared
	b.mu.Unlock()
	if done {
		return nil
	}
	if err := b.store.errIfClosed(); err != nil {
		return err
	}
	var (
		key      *blobKey
		pl       = payload{ext: ".bin", fcs: -1}
		badHead  bool // the key bound to the object does not open frame 0
		emptySHA string
	)
	switch b.Kind {
	case KindEncrypted:
		k, frame0, err := b.matchKey(ctx)
		if err != nil {
			return err
		}
		key = k
		switch {
		case key != nil && frame0 != nil:
			pl = sniffPayload(frame0)
		case key != nil:
			badHead = true
			if b.saved.Ext != "" {
				pl.ext = b.saved.Ext // named as when it last opened
			}
		}
	case KindEmpty:
		k, sha, err := b.checkEmpty()
		if err != nil {
			return err
		}
		key, emptySHA = k, sha
	case KindPlainZstd:
		prefix, err := b.readPrefix(gcmframe.PlainSize)
		if err != nil {
			return err
		}
		pl = sniffPayload(prefix)
	}
	b.mu.Lock()
	b.key, b.pl = key, pl
	b.mu.Unlock()

	b.applySaved(key)
	switch {
	case badHead:
		b.markCorrupt(&gcmframe.FrameError{Frame: 0, Offset: 0, Err: gcmframe.ErrAuth})
	case b.Kind == KindEmpty:
		if err := b.learnSHA(emptySHA); err == nil {
			b.recordPass(0)
		}
	case key != nil:
		b.mu.Lock()
		known := b.dec.computedSHA
		b.mu.Unlock()
		if known != "" {
			// Hashed by an earlier mount: compare with what this mount's
			// keys claim, with no read at all.
			b.learnSHA(known)
		} else if !pl.zstd && key.sha != "" {
			// The agent always compresses, so an encrypted payload
			// that is not zstd is suspect: frames reordered so that
			// another one comes first still decrypt (GCM does not bind
			// a frame to its place). Such a view is never decoded, so
			// no pass would catch it; check the object hash now.
			if err := b.checkObjectSHA(ctx); err != nil {
				return err
			}
		}
	}
	if (key != nil && !badHead) || b.Kind == KindPlainZstd {
		b.learnSizeFromPayload(ctx)
	}
	b.mu.Lock()
	b.prepared = true
	b.files = b.rebuildFiles()
	b.mu.Unlock()
	if (key != nil && !badHead) || b.Kind == KindPlainZstd {
		b.store.disk.update(b, func(e *indexEntry) {
			e.Ext = pl.ext
			if key != nil && key.dek != nil {
				e.KeyID = key.dek.Fingerprint()
			}
		})
	}
	return nil
}

// applySaved applies a verdict an earlier mount saved, if it holds for
// the key the object now has (see persistable).
func (b *Blob) applySaved(key *blobKey) {
	e := b.saved
	if e.Corrupt == "" || e.CorruptAt == nil {
		return
	}
	if e.CorruptKey != "" && (key == nil || key.dek == nil || key.dek.Fingerprint() != e.CorruptKey) {
		return
	}
	b.corruptWith(errors.New(e.Corrupt+" (found by an earlier full pass)"), *e.CorruptAt, false)
}

// learnSHA records the ciphertext hash computed by a read of the whole
// object, binds it to the key if an entry of the key selects an object of
// that hash, and compares it with the hash bound to the key: a mismatch
// marks the object corrupt and is returned.
func (b *Blob) learnSHA(sha string) error {
	kr := b.store.keyring()
	b.mu.Lock()
	b.dec.computedSHA = sha
	k := b.key
	if k != nil && k.sha == "" && k.dek != nil {
		if bound, run := kr.binding(k.dek, b.Path, sha, k.how == "given"); bound != "" {
			nk := *k
			nk.sha = bound
			if nk.runID == "" {
				nk.runID = run
			}
			b.key, k = &nk, &nk
		}
	}
	damaged := b.dec.corrupt != nil
	b.mu.Unlock()
	if b.saved.SHA256 != sha {
		b.store.disk.update(b, func(e *indexEntry) { e.SHA256 = sha })
	}
	// Damage already found explains a mismatch; it must not turn damage
	// at a frame into damage of the whole.
	if k != nil && k.sha != "" && !damaged && !strings.EqualFold(k.sha, sha) {
		return b.markCorrupt(fmt.Errorf("%w: object sha256 %s, expected %s", errHashMismatch, sha, k.sha))
	}
	return nil
}

// checkObjectSHA hashes the whole object and checks the hash (learnSHA).
// A mismatch marks the object corrupt; only I/O errors are returned.
func (b *Blob) checkObjectSHA(ctx context.Context) error {
	f, err := b.openObject()
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, readerWithContext{ctx, f}); err != nil {
		return fmt.Errorf("backupy: %s: %w", b.Path, err)
	}
	b.learnSHA(hex.EncodeToString(h.Sum(nil)))
	return nil
}

// readerWithContext stops a long read when its context ends.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// learnSizeFromPayload sets the decoded size when it is known without a
// decode pass: the compressed layer itself for non-zstd payloads, 0 for
// empty objects, or the zstd Frame_Content_Size when the layer is exactly
// that one frame.
func (b *Blob) learnSizeFromPayload(ctx context.Context) {
	b.mu.Lock()
	pl, known, corrupt := b.pl, b.dec.size >= 0, b.dec.corrupt != nil
	b.mu.Unlock()
	var size int64 = -1
	switch {
	case known || corrupt:
		return
	case b.Kind == KindEmpty:
		size = 0
	case !pl.zstd:
		size = b.compressedSize()
	case pl.fcs >= 0 && b.compressedSize() <= fcsWalkLimit:
		end, err := singleFrameEnd(func(p []byte, off int64) error {
			_, err := b.readCompressedFull(ctx, p, off)
			return err
		}, pl, b.compressedSize())
		if err == nil && end == b.compressedSize() {
			size = pl.fcs
		}
	}
	if size >= 0 {
		b.mu.Lock()
		if b.dec.size < 0 {
			b.dec.size = size
		}
		b.mu.Unlock()
	}
}

// fcsWalkLimit bounds the compressed size for which the block headers are
// walked to confirm a Frame_Content_Size. The agent writes one only for
// dumps under 128 KiB, so the walk touches one or two frames.
const fcsWalkLimit = 4 << 20

// readPrefix reads up to n bytes from the start of the object.
func (b *Blob) readPrefix(n int64) ([]byte, error) {
	f, err := b.openObject()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, min(n, b.Size))
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("backupy: reading %s: %w", b.Path, err)
	}
	return buf, nil
}

// checkEmpty is the full pass of an empty object: hashing its at most
// four bytes. An encrypted one has no frame to try keys on, so a key entry
// is bound by selectors alone (path, run id, or this very hash), only to
// learn the expected hash. It returns the key and the computed hash.
func (b *Blob) checkEmpty() (*blobKey, string, error) {
	data, err := b.readPrefix(b.Size)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	var key *blobKey
	if b.index != nil {
		kr := b.store.keyring()
		given := b.store.opts.KeysGiven
		if cands := kr.candidates(b.Path, got, "", given); len(cands) > 0 && cands[0].bound() {
			c := cands[0]
			sha, run := kr.binding(c.entry.dek, b.Path, got, c.how == "given")
			key = &blobKey{how: c.how, source: c.entry.source, sha: sha, runID: run}
		}
	}
	return key, got, nil
}

// matchKey finds the key of an encrypted object
// (docs/backupy-format.md §6.4): keys selected by path, run id and known
// hash first, then every other key, each confirmed by decrypting frame 0,
// whose GCM tag makes a false match practically impossible. It returns
// frame 0's plaintext with the key.
//
// When no key opens frame 0 but one was selected for the object (by its
// path, run or hash, or given for it), that key is returned with a nil
// frame 0: the object is damaged, not locked. Only an object no key was
// bound to stays locked.
func (b *Blob) matchKey(ctx context.Context) (*blobKey, []byte, error) {
	kr := b.store.keyring()
	b.mu.Lock()
	knownSHA := b.dec.computedSHA
	b.mu.Unlock()
	given := b.store.opts.KeysGiven
	cands := kr.candidates(b.Path, knownSHA, b.saved.KeyID, given)
	if len(cands) == 0 || b.index.Frames() == 0 {
		return nil, nil, nil
	}
	f, err := b.openObject()
	if err != nil {
		return nil, nil, err
	}
	fr := b.index.Frame(0)
	body := make([]byte, fr.Len)
	_, err = f.ReadAt(body, fr.Offset+gcmframe.HeaderSize)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("backupy: reading frame 0 of %s: %w", b.Path, err)
	}
	scratch := make([]byte, len(body))
	newKey := func(c keyCandidate, ciph *gcmframe.Cipher) *blobKey {
		sha, run := kr.binding(c.entry.dek, b.Path, knownSHA, c.how == "given")
		return &blobKey{dek: c.entry.dek, cipher: ciph, how: c.how, source: c.entry.source, sha: sha, runID: run}
	}
	var failed []keyCandidate // bound keys that did not open frame 0
	var firstCipher *gcmframe.Cipher
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return nil, nil, context.Cause(ctx)
		}
		ciph, err := gcmframe.NewCipher(c.entry.dek.b[:])
		if err != nil {
			return nil, nil, err
		}
		copy(scratch, body)
		pt, err := ciph.Open(scratch)
		if err != nil {
			if c.bound() {
				if failed == nil {
					firstCipher = ciph
				}
				failed = append(failed, c)
			}
			continue
		}
		for _, w := range failed {
			b.store.log.Warn("backupy: key selected for object does not open it", "object", b.Path, "selected_by", w.how, "source", w.entry.source, "key", w.entry.dek)
		}
		frame0 := append([]byte(nil), pt...)
		// Frame 0 is needed again for sniffing and by the first reads.
		if ch, err := b.store.chunks.Get(ctx, b.frameKey(0), func(context.Context) ([]byte, []byte, error) { return frame0, nil, nil }); err == nil {
			ch.Release()
		}
		b.store.log.Debug("backupy: key matched", "object", b.Path, "by", c.how, "key", c.entry.dek)
		return newKey(c, ciph), frame0, nil
	}
	if len(failed) > 0 {
		return newKey(failed[0], firstCipher), nil, nil
	}
	return nil, nil, nil
}

func (b *Blob) frameKey(i int64) cache.Key {
	k := cache.Key{Space: b.space}
	binary.BigEndian.PutUint64(k.Addr[:8], uint64(i))
	return k
}

// compressedSize returns the size of the compressed layer: N for an
// encrypted object, S for an unencrypted one.
func (b *Blob) compressedSize() int64 {
	if b.index != nil {
		return b.index.PlainSize()
	}
	return b.Size
}

// frame returns the plaintext of frame i through the shared chunk cache;
// the caller must release it.
func (b *Blob) frame(ctx context.Context, key *blobKey, i int64) (*cache.Chunk, error) {
	return b.store.chunks.Get(ctx, b.frameKey(i), b.frameFill(key, i))
}

// frameFill reads and opens a frame in a buffer from the cache's pool.
func (b *Blob) frameFill(key *blobKey, i int64) cache.FillFunc {
	return func(context.Context) ([]byte, []byte, error) {
		f, err := b.openObject()
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		pool := b.store.chunks.Buffers()
		buf := pool.Get(gcmframe.FullFrameSize)
		pt, err := b.index.ReadFrame(f, key.cipher, i, buf)
		if err != nil {
			pool.Put(buf)
			// Frame 0 opened with this key, so a failing frame is damage,
			// not a wrong key.
			if isIntegrityError(err) {
				return nil, nil, b.markCorrupt(err)
			}
			return nil, nil, fmt.Errorf("backupy: %s: %w", b.Path, err)
		}
		if len(pt) == 0 || &pt[0] != &buf[:cap(buf)][gcmframe.HeaderSize+gcmframe.NonceSize] {
			// The plaintext is not where ReadFrame decrypts in place: do
			// not tie the buffer to it.
			pool.Put(buf)
			buf = nil
		}
		return pt, buf, nil
	}
}

// readCompressedFull fills p from offset off of the compressed layer, or
// fails; reads past the end fail with io.ErrUnexpectedEOF.
func (b *Blob) readCompressedFull(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := b.readCompressed(ctx, nil, p, off)
	if err == io.EOF && n < len(p) {
		err = io.ErrUnexpectedEOF
	}
	if n == len(p) {
		err = nil
	}
	return n, err
}

// readCompressed reads the compressed layer at off: decrypted frames for an
// encrypted object, the file itself (through raw, if given) otherwise.
func (b *Blob) readCompressed(ctx context.Context, raw io.ReaderAt, p []byte, off int64) (int, error) {
	size := b.compressedSize()
	if off >= size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	want := min(int64(len(p)), size-off)
	if b.index == nil {
		if raw == nil {
			f, err := b.openObject()
			if err != nil {
				return 0, err
			}
			defer f.Close()
			raw = f
		}
		n, err := raw.ReadAt(p[:want], off)
		if err == nil && int64(n) < int64(len(p)) {
			err = io.EOF
		}
		return n, err
	}
	key := b.currentKey()
	if key == nil {
		return 0, fmt.Errorf("backupy: %s: %w", b.Path, ErrLocked)
	}
	n := 0
	for int64(n) < want {
		pos := off + int64(n)
		i := b.index.FrameAt(pos)
		fr := b.index.Frame(i)
		ch, err := b.frame(ctx, key, i)
		if err != nil {
			return n, err
		}
		c := copy(p[n:want], ch.Bytes()[pos-fr.PlainOffset:])
		ch.Release()
		n += c
		// Reading into the second half of a frame: decrypt the next one
		// in the background, as sequential readers will want it.
		if next := i + 1; next < b.index.Frames() && pos+int64(c)-fr.PlainOffset > int64(fr.PlainLen)/2 {
			b.store.chunks.Prefetch(ctx, b.frameKey(next), b.frameFill(key, next))
		}
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}
