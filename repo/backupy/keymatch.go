package backupy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

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

func (b *Blob) currentKey() *blobKey {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.key
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
	knownSHA := b.computedSHA
	b.mu.Unlock()
	given := b.store.opts.KeysGiven
	cands := kr.candidates(b.Path, knownSHA, b.saved.KeyID, given)
	newKey := func(c keyCandidate, ciph *gcmframe.Cipher) *blobKey {
		sha, run := kr.binding(c.entry.dek, b.Path, knownSHA, c.how == "given")
		return &blobKey{dek: c.entry.dek, cipher: ciph, how: c.how, source: c.entry.source, sha: sha, runID: run}
	}
	if len(cands) > 0 && b.saved.Payload != nil && cands[0].entry.dek.fp == b.saved.KeyID {
		// The key that would be tried first opened frame 0 of this very
		// version before (the index names the version by its ETag, or
		// size and time): no need to read it again.
		ciph, err := gcmframe.NewCipher(cands[0].entry.dek.b[:])
		if err != nil {
			return nil, nil, err
		}
		return newKey(cands[0], ciph), nil, nil
	}
	// Keys tried before on this version without success are not tried
	// again; keys bound to the object always are (failing, they mean
	// damage).
	cands = slices.DeleteFunc(cands, func(c keyCandidate) bool {
		return !c.bound() && slices.Contains(b.saved.Tried, c.entry.dek.fp)
	})
	if len(cands) == 0 || b.index.Frames() == 0 {
		return nil, nil, nil
	}
	body, err := b.frameBody(ctx, 0)
	if err != nil {
		return nil, nil, err
	}
	scratch := make([]byte, len(body))
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
		b.keepFrame(ctx, 0, frame0) // needed again for sniffing and by the first reads
		b.store.log.Debug("backupy: key matched", "object", b.Path, "by", c.how, "key", c.entry.dek)
		return newKey(c, ciph), frame0, nil
	}
	if len(failed) > 0 {
		return newKey(failed[0], firstCipher), nil, nil
	}
	// Locked: remember which keys did not open it, so that a remount
	// with the same keys lists it without reading it.
	b.store.disk.note(b, func(e *indexEntry) {
		for _, c := range cands {
			if !slices.Contains(e.Tried, c.entry.dek.fp) && len(e.Tried) < maxTried {
				e.Tried = append(e.Tried, c.entry.dek.fp)
			}
		}
	})
	return nil, nil, nil
}

// maxTried bounds the fingerprints an index entry keeps.
const maxTried = 64

// checkEmpty is the full pass of an empty object: hashing its at most
// four bytes. An encrypted one has no frame to try keys on, so a key entry
// is bound by selectors alone (path, run id, or this very hash), only to
// learn the expected hash. It returns the key and the computed hash.
func (b *Blob) checkEmpty(ctx context.Context) (*blobKey, string, error) {
	b.mu.Lock()
	got := b.computedSHA // hashed by an earlier mount
	b.mu.Unlock()
	if got == "" {
		data, err := b.readPrefix(ctx, b.Size)
		if err != nil {
			return nil, "", err
		}
		sum := sha256.Sum256(data)
		got = hex.EncodeToString(sum[:])
	}
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
