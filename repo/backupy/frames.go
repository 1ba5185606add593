package backupy

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Reads of an object's bytes: its frames (decrypted through the shared
// chunk cache), its compressed layer, its first bytes.

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

// frameBody reads the sealed body (nonce, ciphertext and tag) of frame i.
func (b *Blob) frameBody(ctx context.Context, i int64) ([]byte, error) {
	obj, err := b.open(ctx)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	fr := b.index.Frame(i)
	body := make([]byte, fr.Len)
	if _, err := obj.ReadAt(ctx, body, fr.Offset+gcmframe.HeaderSize); err != nil {
		return nil, fmt.Errorf("backupy: reading frame %d of %s: %w", i, b.Path, err)
	}
	return body, nil
}

// keepFrame puts the plaintext of frame i, decrypted elsewhere, into the
// chunk cache.
func (b *Blob) keepFrame(ctx context.Context, i int64, plain []byte) {
	ch, err := b.store.chunks.Get(ctx, b.frameKey(i), func(context.Context) ([]byte, []byte, error) { return plain, nil, nil })
	if err == nil {
		ch.Release()
	}
}

// frame returns the plaintext of frame i through the shared chunk cache;
// the caller must release it.
func (b *Blob) frame(ctx context.Context, key *blobKey, i int64) (*cache.Chunk, error) {
	return b.store.chunks.Get(ctx, b.frameKey(i), b.frameFill(key, i))
}

// frameFill reads and opens a frame in a buffer from the cache's pool.
func (b *Blob) frameFill(key *blobKey, i int64) cache.FillFunc {
	return func(ctx context.Context) ([]byte, []byte, error) {
		obj, err := b.open(ctx)
		if err != nil {
			return nil, nil, err
		}
		defer obj.Close()
		pool := b.store.chunks.Buffers()
		// Admitted under the cache's bound, like a chunk of a repository:
		// frames being decoded count before they are allocated.
		buf, err := pool.Alloc(ctx, gcmframe.FullFrameSize)
		if err != nil {
			return nil, nil, err
		}
		pt, err := b.index.ReadFrame(objectReaderAt{ctx, obj}, key.cipher, i, buf)
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
// encrypted object, the object itself (through raw, if given) otherwise.
func (b *Blob) readCompressed(ctx context.Context, raw Object, p []byte, off int64) (int, error) {
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
			obj, err := b.open(ctx)
			if err != nil {
				return 0, err
			}
			defer obj.Close()
			raw = obj
		}
		n, err := raw.ReadAt(ctx, p[:want], off)
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

// readPrefix reads up to n bytes from the start of the object.
func (b *Blob) readPrefix(ctx context.Context, n int64) ([]byte, error) {
	obj, err := b.open(ctx)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	buf := make([]byte, min(n, b.Size))
	if m, err := obj.ReadAt(ctx, buf, 0); m < len(buf) {
		return nil, fmt.Errorf("backupy: reading %s: %w", b.Path, err)
	}
	return buf, nil
}
