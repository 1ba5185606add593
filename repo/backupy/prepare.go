package backupy

import (
	"context"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// prepare matches a key and sniffs the payload, once. It reads at most
// frame 0 (or the first MiB) and never waits for a decode pass. A caller
// waiting for another caller's prepare stops waiting when its ctx ends.
func (b *Blob) prepare(ctx context.Context) error {
	select {
	case b.prep <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-b.prep }()
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
		case key != nil && frame0 == nil && b.saved.Payload != nil && key.dek.fp == b.saved.KeyID:
			pl = b.saved.Payload.payload() // remembered with the key
		case key != nil && frame0 != nil:
			pl = sniffPayload(frame0)
		case key != nil:
			badHead = true
			if b.saved.Ext != "" {
				pl.ext = b.saved.Ext // named as when it last opened
			}
		}
	case KindEmpty:
		k, sha, err := b.checkEmpty(ctx)
		if err != nil {
			return err
		}
		key, emptySHA = k, sha
	case KindPlainZstd:
		if b.saved.Payload != nil {
			pl = b.saved.Payload.payload()
			break
		}
		prefix, err := b.readPrefix(ctx, gcmframe.PlainSize)
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
		known := b.computedSHA
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
		// Noted, not saved now: a listing prepares every object it shows,
		// and one write of the index per object would cost more than
		// the listing. The next save, or the store's close, writes it.
		b.store.disk.note(b, func(e *indexEntry) {
			e.Ext = pl.ext
			e.Payload = savePayload(pl)
			if key != nil && key.dek != nil {
				e.KeyID = key.dek.Fingerprint()
			}
		})
	}
	return nil
}

// learnSizeFromPayload sets the decoded size when it is known without a
// decode pass: the compressed layer itself for non-zstd payloads, 0 for
// empty objects, or the zstd Frame_Content_Size when the layer is exactly
// that one frame.
func (b *Blob) learnSizeFromPayload(ctx context.Context) {
	b.mu.Lock()
	pl, known := b.pl, b.size >= 0
	b.mu.Unlock()
	var size int64 = -1
	switch {
	case known || b.dmg.found() != nil:
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
			b.store.disk.note(b, func(e *indexEntry) { e.Sized = &size })
		}
	}
	if size >= 0 {
		b.mu.Lock()
		if b.size < 0 {
			b.size = size
		}
		b.mu.Unlock()
	}
}

// fcsWalkLimit bounds the compressed size for which the block headers are
// walked to confirm a Frame_Content_Size. The agent writes one only for
// dumps under 128 KiB, so the walk touches one or two frames.
const fcsWalkLimit = 4 << 20
