package bupstash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/crypto/box"
)

// ErrChunkMissing reports a chunk absent from the store, for example one
// deleted by `bupstash gc` after its item was removed.
var ErrChunkMissing = errors.New("chunk missing from the repository")

// maxChunkFileSize bounds a chunk file: a leaf envelope around at most
// 64 MiB of compressed plaintext, or an interior node.
const maxChunkFileSize = maxDecompressedSize + box.Overhead + 1024

// chunkStore fetches the raw stored bytes of a chunk into a buffer from
// pool (nil: a fresh one), which the caller then owns.
type chunkStore interface {
	readChunk(ctx context.Context, addr Address, pool *cache.BufferPool) ([]byte, error)
}

// dirStore is the "DirStore" engine: one file per chunk in data/, named by
// its address in hex. Chunk files are written under a temporary name and
// renamed into place, so a file that exists is complete.
type dirStore struct{ dir string }

func (s dirStore) readChunk(ctx context.Context, addr Address, pool *cache.BufferPool) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, addr.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrChunkMissing
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxChunkFileSize {
		return nil, fmt.Errorf("%w: chunk file is %d bytes", ErrCorrupt, st.Size())
	}
	b := pool.Get(int(st.Size()))
	if _, err := io.ReadFull(f, b); err != nil {
		pool.Put(b)
		return nil, fmt.Errorf("reading chunk: %w", err)
	}
	return b, nil
}
