// Package testrepo writes Bupstash repositories (schema 8, as Bupstash
// 0.11.1 to 0.12.1 write them) of any shape, for tests and benchmarks of
// the reader and the filesystem. The product never uses it.
//
// Real Bupstash-made fixtures are small and fixed; the reader's edge cases
// (tall hash trees, cursors carried by empty entries, leaves cut exactly at
// file ends, a million entries, a 1 GiB file) need repositories that are
// too big to commit or awkward to make with the real tool. So this package
// implements the writing side of the format independently of the reader:
// content-defined chunking, batches of index entries with forced splits
// and relative cursors exactly as Bupstash 0.12 computes them, keyed leaf
// addresses, interior nodes, sealed envelopes, item metadata V3 and the
// oplog. The tests then read every repository back with the project's
// reader, whose integrity checks fail loudly on any mistake on either side.
//
// Writes are streamed: file contents and raw items are read, chunked and
// sealed with a bounded number of leaves in memory, so a 1 GiB item or a
// million-entry snapshot costs tens of megabytes.
package testrepo

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/backupfs/backupfs/internal/bupstashkey"
	"github.com/backupfs/backupfs/internal/bupstashwrite"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"golang.org/x/sys/unix"
	"lukechampine.com/blake3"
)

// schemaVersion is the repository schema Bupstash 0.11.1 to 0.12.1 write.
const schemaVersion = "8"

// Limits Bupstash enforces on item metadata.
const (
	maxTagSetSize  = 32 * 1024
	maxItemSize    = maxTagSetSize + 2048
	maxTreeHeight  = 10
	nodeEntrySize  = 8 + 32
	itemFormatV3   = 2 // VersionedItemMetadata variant index
	logOpAddItem   = 0
	indexEntryV5   = 4 // VersionedIndexEntry variant index
	contentHashB3  = 1
	contentHashNil = 0
)

// Repo is a repository being written. Add methods may be called
// concurrently; items are committed one at a time, in the order their
// writes finish.
type Repo struct {
	dir  string
	key  *bupstashkey.Key
	opts Options
	gear *[256]uint32

	dataHashKey, idxHashKey [32]byte
	bufs                    *bufPool
	scratch                 *scratchPool // sealing workers' payload and envelope buffers
	readBufs                *scratchPool // buffers contents are read into

	repoLock *os.File // shared lock held while open, as a Bupstash put holds it

	mu         sync.Mutex // serialises commits
	lastMillis int64
	closed     bool
}

// Create makes a new repository in dir (which must not exist or be empty)
// with a new primary key, laid out as `bupstash init` lays it out.
func Create(dir string, opts *Options) (*Repo, error) {
	key, err := bupstashkey.NewPrimary()
	if err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	return CreateWithKey(dir, key, opts)
}

// CreateWithKey makes a new repository in dir whose items are written
// with key (a primary key or a put key). With a fixed key, generated
// repositories are reproducible: chunk boundaries and addresses depend only
// on the key and the data.
func CreateWithKey(dir string, key *bupstashkey.Key, opts *Options) (*Repo, error) {
	if err := checkPutKey(key); err != nil {
		return nil, err
	}
	if opts != nil {
		if _, err := opts.normalize(); err != nil {
			return nil, err
		}
	}
	if err := initLayout(dir); err != nil {
		return nil, err
	}
	return open(dir, key, opts)
}

// Open opens a repository (made by Create, or by Bupstash itself) to add
// items with key: a primary key, or a put sub key (see NewPutKey).
func Open(dir string, key *bupstashkey.Key, opts *Options) (*Repo, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta", "schema_version"))
	if err != nil {
		return nil, fmt.Errorf("%s: not a repository: %w", dir, err)
	}
	if string(b) != schemaVersion {
		return nil, fmt.Errorf("%s: schema %q: only schema %s can be written", dir, b, schemaVersion)
	}
	b, err = os.ReadFile(filepath.Join(dir, "meta", "storage_engine"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if string(bytes.TrimSpace(b)) != `"DirStore"` {
		return nil, fmt.Errorf("%s: storage engine %s: only DirStore can be written", dir, b)
	}
	return open(dir, key, opts)
}

// checkPutKey checks that key has what a put needs: the public halves,
// pre-shared keys and hash keys, and a rollsum key.
func checkPutKey(key *bupstashkey.Key) error {
	if key == nil {
		return errors.New("no key")
	}
	for _, f := range []struct {
		ok   bool
		name string
	}{
		{key.RollsumKey.OK, "rollsum key"},
		{key.DataHashKeyPart1.OK && key.DataHashKeyPart2.OK, "data hash key"},
		{key.DataPK.OK && key.DataPSK.OK, "data public key"},
		{key.IdxHashKeyPart1.OK && key.IdxHashKeyPart2.OK, "index hash key"},
		{key.IdxPK.OK && key.IdxPSK.OK, "index public key"},
		{key.MetadataPK.OK && key.MetadataPSK.OK, "metadata public key"},
	} {
		if !f.ok {
			return fmt.Errorf("key %s cannot put: it has no %s", bupstash.Xid(key.ID), f.name)
		}
	}
	return nil
}

func open(dir string, key *bupstashkey.Key, opts *Options) (*Repo, error) {
	if err := checkPutKey(key); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	r := &Repo{
		dir:         dir,
		key:         key,
		opts:        o,
		gear:        gearTable(key.RollsumKey.V),
		dataHashKey: hashKey(key.DataHashKeyPart1.V, key.DataHashKeyPart2.V),
		idxHashKey:  hashKey(key.IdxHashKeyPart1.V, key.IdxHashKeyPart2.V),
		bufs:        newBufPool(o.MaxChunkSize, 2*o.Workers+2),
		scratch:     newScratchPool(0, 2*o.Workers),
		readBufs:    newScratchPool(readSize, 2*o.Workers),
	}
	if !o.NoLock {
		f, err := os.Open(filepath.Join(dir, "repo.lock"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		if err := lockOFD(f, unix.F_RDLCK); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: locking repo.lock: %w", dir, err)
		}
		r.repoLock = f
	}
	return r, nil
}

// initLayout writes an empty schema-8 repository.
func initLayout(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating repository: %w", err)
		}
		names, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("creating repository: %w", err)
		}
		if len(names) > 0 {
			return fmt.Errorf("creating repository: %s exists and is not empty", dir)
		}
	}
	for _, d := range []string{"items", "data", "meta", "wal"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("creating repository: %w", err)
		}
	}
	var gen [16]byte
	if _, err := rand.Read(gen[:]); err != nil {
		return err
	}
	// tx.lock last: its presence is what makes a directory a repository.
	files := []struct {
		name string
		data []byte
	}{
		{"meta/schema_version", []byte(schemaVersion)},
		{"meta/gc_generation", []byte(hex.EncodeToString(gen[:]))},
		{"meta/storage_engine", []byte(`"DirStore"`)},
		{"repo.oplog", nil},
		{"repo.lock", nil},
		{"tx.seq", make([]byte, 8)}, // u64 LE sequence number 0
		{"tx.wal", nil},             // truncated to empty after each committed transaction
		{"tx.lock", nil},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("creating repository: %w", err)
		}
	}
	return nil
}

// Dir returns the repository directory.
func (r *Repo) Dir() string { return r.dir }

// Key returns the key items are written with, secrets and all.
func (r *Repo) Key() *bupstashkey.Key { return r.key }

// ReaderKey returns the key as a reader (bupstash.Open) takes it: what
// parsing the file WriteKey writes gives.
func (r *Repo) ReaderKey() *bupstash.Key {
	k, err := bupstash.ParseKey(r.key.Encode())
	if err != nil {
		panic(err) // an encoded key always parses
	}
	return k
}

// WriteKey writes the key file, armored as Bupstash writes it.
func (r *Repo) WriteKey(path string) error {
	if err := os.WriteFile(path, r.key.Encode(), 0o600); err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	return nil
}

// Close releases the repository lock. Adds in progress must have returned.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.repoLock != nil {
		return r.repoLock.Close() // closing the description drops its OFD lock
	}
	return nil
}

// NewPutKey derives a put-only sub key from a primary key, as
// `bupstash new-sub-key --put` does. Items put with it carry its own
// hash-key second parts, which the primary key reads from their metadata.
func NewPutKey(primary *bupstashkey.Key) (*bupstashkey.Key, error) {
	return NewSubKey(primary, true, false, false)
}

// NewSubKey derives a sub key from a primary key with the fields
// `bupstash new-sub-key` gives for --put, --list and --list-contents
// (combined as a union, docs/bupstash-format.md §4.3): a put key gets a
// fresh rollsum key and fresh hash-key second parts with the primary's
// public keys and first parts; a list key the metadata key pair; a
// list-contents key also the index key pair and its hash-key first part. No
// sub key gets data_sk.
func NewSubKey(primary *bupstashkey.Key, put, list, listContents bool) (*bupstashkey.Key, error) {
	if !primary.Primary {
		return nil, errors.New("sub keys derive from a primary key")
	}
	if !put && !list && !listContents {
		return nil, errors.New("a sub key needs at least one capability")
	}
	k := &bupstashkey.Key{PrimaryKeyID: primary.ID}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return nil, err
	}
	if put {
		for _, f := range []*[32]byte{&k.RollsumKey.V, &k.DataHashKeyPart2.V, &k.IdxHashKeyPart2.V} {
			if _, err := rand.Read(f[:]); err != nil {
				return nil, err
			}
		}
		k.RollsumKey.OK, k.DataHashKeyPart2.OK, k.IdxHashKeyPart2.OK = true, true, true
		k.DataHashKeyPart1 = primary.DataHashKeyPart1
		k.DataPK, k.DataPSK = primary.DataPK, primary.DataPSK
		k.IdxHashKeyPart1 = primary.IdxHashKeyPart1
		k.IdxPK, k.IdxPSK = primary.IdxPK, primary.IdxPSK
		k.MetadataPK, k.MetadataPSK = primary.MetadataPK, primary.MetadataPSK
	}
	if list || listContents {
		k.MetadataPK, k.MetadataPSK, k.MetadataSK = primary.MetadataPK, primary.MetadataPSK, primary.MetadataSK
	}
	if listContents {
		k.IdxHashKeyPart1 = primary.IdxHashKeyPart1
		k.IdxPK, k.IdxPSK, k.IdxSK = primary.IdxPK, primary.IdxPSK, primary.IdxSK
	}
	return k, nil
}

// hashKey derives a keyed-BLAKE3 key from its two parts
// (docs/bupstash-format.md §5.4).
func hashKey(part1, part2 [32]byte) [32]byte {
	var b [64]byte
	copy(b[:], part1[:])
	copy(b[32:], part2[:])
	return blake3.Sum256(b[:])
}

// chunkPath returns the file of a chunk in data/.
func (r *Repo) chunkPath(addr bupstash.Address) string {
	return filepath.Join(r.dir, "data", addr.String())
}

// writeChunk stores a chunk unless a chunk with that address exists (same
// plaintext, so equally valid), through a temporary file renamed into
// place as Bupstash's DirStore does. It returns the bytes written.
func (r *Repo) writeChunk(addr bupstash.Address, data []byte) (int64, error) {
	final := r.chunkPath(addr)
	if _, err := os.Lstat(final); err == nil {
		return 0, nil
	}
	var suffix [12]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return 0, err
	}
	tmp := final + "." + hex.EncodeToString(suffix[:]) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("writing chunk: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("writing chunk: %w", err)
	}
	return int64(len(data)), nil
}

// treeRoot is a finished hash tree.
type treeRoot struct {
	height, count uint64
	addr          bupstash.Address
}

func (t treeRoot) meta() bupstash.HTreeMeta {
	return bupstash.HTreeMeta{Height: t.height, DataChunkCount: t.count, Address: t.addr}
}

func encodeTree(e *bare.Encoder, t treeRoot) {
	e.Uint(t.height)
	e.Uint(t.count)
	e.Fixed(t.addr[:])
}

// commit writes the item's metadata file and appends its AddItem op to
// the oplog, under the transaction lock, as Bupstash's add_item does.
func (r *Repo) commit(info *ItemInfo, meta ItemMeta, data treeRoot, index *treeRoot, dataSize, indexSize uint64, defaultName string) error {
	tags, err := itemTags(meta, defaultName)
	if err != nil {
		return err
	}
	for _, t := range []*treeRoot{&data, index} {
		if t != nil && t.height > maxTreeHeight {
			return fmt.Errorf("hash tree of height %d exceeds Bupstash's %d; raise the node size", t.height, maxTreeHeight)
		}
	}
	metaSealer, err := box.NewSealer(r.key.MetadataPK.V, r.key.MetadataPSK.V)
	if err != nil {
		return err
	}
	var id bupstash.Xid
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("repository is closed")
	}
	ts := meta.Timestamp
	if ts.IsZero() {
		ms := time.Now().UnixMilli()
		if ms <= r.lastMillis {
			ms = r.lastMillis + 1
		}
		r.lastMillis = ms
		ts = time.UnixMilli(ms)
	} else if ms := ts.UnixMilli(); ms > r.lastMillis {
		r.lastMillis = ms
	}
	millis := ts.UnixMilli()
	if millis < 0 {
		return fmt.Errorf("item timestamp %v is before 1970", ts)
	}

	// V3PlainTextItemMetadata.
	var plain bare.Encoder
	plain.Fixed(r.key.PrimaryKeyID[:])
	plain.U64(uint64(millis))
	encodeTree(&plain, data)
	plain.Option(index != nil)
	if index != nil {
		encodeTree(&plain, *index)
	}
	// Its hash binds it to the item id (docs/bupstash-format.md §8.4).
	h := blake3.New(32, nil)
	h.Write([]byte{3})
	h.Write(id[:])
	h.Write(plain.Buf)
	var plainHash [32]byte
	h.Sum(plainHash[:0])

	// V3SecretItemMetadata.
	var secret bare.Encoder
	secret.Fixed(plainHash[:])
	secret.Fixed(r.key.ID[:]) // send_key_id: the key that performed the put
	secret.Fixed(r.key.IdxHashKeyPart2.V[:])
	secret.Fixed(r.key.DataHashKeyPart2.V[:])
	names := make([]string, 0, len(tags))
	for k := range tags {
		names = append(names, k)
	}
	sort.Strings(names) // a BTreeMap: ascending byte order
	secret.Uint(uint64(len(names)))
	for _, k := range names {
		secret.String(k)
		secret.String(tags[k])
	}
	secret.Uint(dataSize)
	secret.Uint(indexSize)
	sealed := metaSealer.Seal(nil, bupstashwrite.Compress(secret.Buf, bupstashwrite.FooterZstd))

	var item bare.Encoder
	item.Uint(itemFormatV3)
	item.Fixed(plain.Buf)
	item.Data(sealed)
	if len(item.Buf) > maxItemSize {
		return fmt.Errorf("item metadata is %d bytes, Bupstash allows %d", len(item.Buf), maxItemSize)
	}
	var op bare.Encoder
	op.Uint(logOpAddItem)
	op.Fixed(id[:])
	op.Fixed(item.Buf)

	if err := r.transaction(func() error {
		itemPath := filepath.Join(r.dir, "items", id.String())
		tmp := itemPath + ".tmp"
		if err := os.WriteFile(tmp, item.Buf, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, itemPath); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(r.dir, "repo.oplog"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		if _, err := f.Write(op.Buf); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}); err != nil {
		return fmt.Errorf("committing item %s: %w", id, err)
	}

	info.ID = id
	info.Timestamp = time.UnixMilli(millis).UTC()
	info.Tags = tags
	info.DataHTree = data.meta()
	if index != nil {
		info.IndexHTree = index.meta()
		info.Snapshot = true
	}
	info.DataSize, info.IndexSize = dataSize, indexSize
	return nil
}

// itemTags returns the item's tags, checked as `bupstash put` checks them.
func itemTags(meta ItemMeta, defaultName string) (map[string]string, error) {
	tags := make(map[string]string, len(meta.Tags)+1)
	if !meta.NoDefaultTags && defaultName != "" {
		tags["name"] = defaultName
	}
	for k, v := range meta.Tags {
		tags[k] = v
	}
	for k, v := range tags {
		if k == "" || v == "" {
			return nil, fmt.Errorf("tag %q=%q: keys and values must not be empty", k, v)
		}
		for _, c := range []byte(k) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return nil, fmt.Errorf("tag key %q: only letters, digits, '-' and '_' are allowed", k)
			}
		}
	}
	var e bare.Encoder // as serialised in the secret metadata
	e.Uint(uint64(len(tags)))
	for k, v := range tags {
		e.String(k)
		e.String(v)
	}
	if len(e.Buf) > maxTagSetSize {
		return nil, fmt.Errorf("tags take %d bytes, Bupstash allows %d", len(e.Buf), maxTagSetSize)
	}
	return tags, nil
}

// transaction runs fn under an exclusive lock on tx.lock, which readers
// take shared while they scan the metadata (docs/bupstash-format.md §2.3).
func (r *Repo) transaction(fn func() error) error {
	if r.opts.NoLock {
		return fn()
	}
	f, err := os.OpenFile(filepath.Join(r.dir, "tx.lock"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close() // drops the OFD lock
	if err := lockOFD(f, unix.F_WRLCK); err != nil {
		return fmt.Errorf("locking tx.lock: %w", err)
	}
	return fn()
}

// lockOFD takes a whole-file open-file-description lock, waiting for it.
// OFD locks conflict with the classic POSIX locks Bupstash and the reader
// take, but belong to the descriptor rather than the process, so a reader
// in the same process closing its own descriptor cannot drop them.
func lockOFD(f *os.File, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLKW, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}
