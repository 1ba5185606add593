package backupy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// damage is the integrity verdict of one object version: the earliest
// damage found, and how much still reads before it.
type damage struct {
	mu  sync.Mutex
	err *CorruptError
	// at is the offset in the compressed layer where the damage starts:
	// reads of the layer (and decoded bytes a pass produced) before it
	// are still served. 0 means nothing can be trusted.
	at int64
	// goodDecoded is, for damage at at > 0, how many decoded bytes a pass
	// produced before failing; -1 if no pass got there yet.
	goodDecoded int64
}

// record keeps err if it is the first damage or starts earlier than the
// known one, and reports whether it did and whether it was the first.
func (d *damage) record(err *CorruptError, at int64) (earlier, first bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first = d.err == nil
	if first || at < d.at {
		d.err, d.at, d.goodDecoded = err, at, -1
		return true, first
	}
	return false, first
}

// found returns the damage, or nil.
func (d *damage) found() *CorruptError {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// state returns the damage, where it starts and how much decoded before it.
func (d *damage) state() (err *CorruptError, at, goodDecoded int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err, d.at, d.goodDecoded
}

// before returns the damage if reads of the compressed layer up to end
// touch it.
func (d *damage) before(end int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil && end > d.at {
		return d.err
	}
	return nil
}

// whole returns the damage if it taints every byte of the decoded views.
func (d *damage) whole() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil && d.at == 0 {
		return d.err
	}
	return nil
}

// pastGoodDecoded returns the damage if decoded bytes up to end are known
// to lie past what a pass could decode before it.
func (d *damage) pastGoodDecoded(end int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil && d.goodDecoded >= 0 && end > d.goodDecoded {
		return d.err
	}
	return nil
}

// noteGoodDecoded records how far a pass over a damaged object got.
func (d *damage) noteGoodDecoded(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil && d.at > 0 && n > d.goodDecoded {
		d.goodDecoded = n
	}
}

// Corrupt returns the corruption found in the object, or nil.
func (b *Blob) Corrupt() error {
	if err := b.dmg.found(); err != nil {
		return err
	}
	return nil // not a typed nil
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
	earlier, first := b.dmg.record(err, at)
	b.mu.Lock()
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
	b.computedSHA = sha
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
	b.mu.Unlock()
	damaged := b.dmg.found() != nil
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
	r, obj, err := b.sequential(ctx)
	if err != nil {
		return err
	}
	defer obj.Close()
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("backupy: %s: %w", b.Path, err)
	}
	b.learnSHA(hex.EncodeToString(h.Sum(nil)))
	return nil
}

// recordPass stores the results of a clean full pass: the decoded size
// and a verified zstd checksum.
func (b *Blob) recordPass(size int64) {
	if b.dmg.found() != nil {
		return
	}
	b.mu.Lock()
	b.size = size
	b.zstdOK = true
	b.mu.Unlock()
	b.store.disk.update(b, func(e *indexEntry) {
		e.Decoded = &size
		e.ZstdOK = true
	})
}
