package backupy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"
)

// FileKind says what a File shows.
type FileKind int

// File kinds.
const (
	// FileMain is the dump: decrypted and zstd-decoded. For a payload that
	// is not zstd it is the decrypted bytes; for an empty object, empty.
	FileMain FileKind = iota
	// FileZst is the decrypted zstd stream: exact size without decoding,
	// random access frame by frame.
	FileZst
	// FileMeta is a JSON document of what is known about the object. Its
	// content changes as passes learn more (Volatile).
	FileMeta
	// FileRaw is the object byte for byte: the ciphertext of a locked
	// object, or a foreign object.
	FileRaw
)

func (k FileKind) String() string {
	switch k {
	case FileMain:
		return "main"
	case FileZst:
		return "zst"
	case FileMeta:
		return "meta"
	case FileRaw:
		return "raw"
	}
	return "FileKind(" + strconv.Itoa(int(k)) + ")"
}

// File is one name shown for an object, in the directory of its object
// key. Files are created by Store.Files and stay valid until the object
// changes. A view added later (the raw bytes of an object found corrupt)
// does not replace the earlier Files.
type File struct {
	name string
	kind FileKind
	blob *Blob
}

// Name returns the file name (no directory).
func (f *File) Name() string { return f.name }

// Kind returns what the file shows.
func (f *File) Kind() FileKind { return f.kind }

// Blob returns the object the file belongs to.
func (f *File) Blob() *Blob { return f.blob }

// Mode returns the permission bits: read-only for the owner, since the
// files hold decrypted database contents.
func (f *File) Mode() fs.FileMode { return 0o400 }

// ModTime returns the object's modification time.
func (f *File) ModTime() time.Time { return f.blob.ModTime }

// Volatile reports whether the content may change while the file is
// listed (meta.json). The FUSE layer should serve such files with direct
// I/O and a short attribute timeout.
func (f *File) Volatile() bool { return f.kind == FileMeta }

// Files returns the views of an object, matching its key and sniffing its
// payload on first use (one frame read and decrypt per key tried; never a
// full decode pass). The slice is shared and must not be modified.
func (s *Store) Files(ctx context.Context, b *Blob) ([]*File, error) {
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.files, nil
}

// Main returns the object's decoded main view, or an error matching
// ErrLocked if no key opens the object.
func (s *Store) Main(ctx context.Context, b *Blob) (*File, error) {
	files, err := s.Files(ctx, b)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if f.kind == FileMain {
			return f, nil
		}
	}
	if b.Locked() {
		return nil, fmt.Errorf("backupy: %s: %w", b.Path, ErrLocked)
	}
	return nil, fmt.Errorf("backupy: %s: %s object has no decoded view", b.Path, b.Kind)
}

// rebuildFiles lists the views, keeping the File of every view that was
// listed before. The caller holds b.mu.
//
// A corrupt object that has a key keeps a raw view of its bytes, named
// <base>.enc for an encrypted object and after the object otherwise, next
// to its decoded view: what the damage is can be looked at, and what reads
// before it is still served.
func (b *Blob) rebuildFiles() []*File {
	views := b.store.opts.Views
	var files []*File
	add := func(name string, kind FileKind) {
		for _, f := range b.files {
			if f.name == name && f.kind == kind {
				files = append(files, f)
				return
			}
		}
		files = append(files, &File{name: name, kind: kind, blob: b})
	}
	base := b.base()
	switch {
	case b.Kind == KindForeign:
		add(b.basename(), FileRaw)
		return files
	case b.Kind == KindEncrypted && b.key == nil:
		add(base+".enc", FileRaw)
	default:
		main := base + b.pl.ext
		add(main, FileMain)
		if views&ViewZst != 0 && b.pl.zstd {
			add(main+".zst", FileZst)
		}
		if b.dmg.found() != nil {
			raw := base + ".enc"
			if b.index == nil {
				raw = b.basename()
			}
			if raw != main && raw != main+".zst" && raw != base+".meta.json" {
				add(raw, FileRaw)
			}
		}
	}
	if views&ViewMeta != 0 {
		add(base+".meta.json", FileMeta)
	}
	return files
}

func (b *Blob) basename() string {
	for i := len(b.Path) - 1; i >= 0; i-- {
		if b.Path[i] == '/' {
			return b.Path[i+1:]
		}
	}
	return b.Path
}

// SizeKnown returns the file size if it is known without decoding.
//
// The main view of a corrupt object is as long as the part of it that
// still reads: what a pass decoded before the damage (0 for damage that
// taints all of it). The FUSE layer serves corrupt objects with direct I/O,
// so that reads past that size still reach the object and fail.
func (f *File) SizeKnown() (int64, bool) {
	b := f.blob
	switch f.kind {
	case FileRaw:
		return b.Size, true
	case FileZst:
		return b.compressedSize(), true
	case FileMeta:
		doc, err := f.render()
		return int64(len(doc)), err == nil
	}
	size, _ := b.decodedSize()
	corrupt, at, good := b.dmg.state()
	switch {
	case corrupt != nil && at == 0:
		return max(size, 0), true
	case corrupt != nil && good >= 0:
		return good, true
	case corrupt != nil:
		return 0, false // a pass finds how much reads
	case size >= 0:
		return size, true
	}
	return 0, false
}

// Size returns the file size. For the main view of a zstd payload whose
// size is not known yet this runs (or joins) the object's decode pass and
// waits for it; ctx ends the wait but not the pass.
func (f *File) Size(ctx context.Context) (int64, error) {
	if n, ok := f.SizeKnown(); ok {
		return n, nil
	}
	if f.kind == FileMeta {
		_, err := f.render()
		return 0, err
	}
	b := f.blob
	if err := b.usable(); err != nil {
		return 0, err
	}
	j, err := b.store.disk.acquireJob(b)
	if err != nil {
		return 0, err
	}
	defer b.store.disk.releaseJob(j)
	n, err := j.wait(ctx)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return 0, err
		}
		// Damage the pass ran into: the part before it still reads.
		b.dmg.noteGoodDecoded(n)
		if n, ok := f.SizeKnown(); ok {
			return n, nil
		}
		return 0, err
	}
	// A streaming handle may have finished first; both give the same size.
	b.mu.Lock()
	if b.size < 0 {
		b.size = n
	}
	b.mu.Unlock()
	return n, nil
}

// Xattr is an extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Xattrs returns the user.backupy.* attributes of the file's object:
// kind, state (locked, encrypted, unencrypted, verified, corrupt), run_id,
// sha256, ciphertext_size and frames, each only when known.
func (f *File) Xattrs() []Xattr {
	b := f.blob
	b.mu.Lock()
	state := b.stateLocked()
	sha := b.computedSHA
	if sha == "" && b.key != nil {
		sha = b.key.sha
	}
	b.mu.Unlock()
	xs := []Xattr{
		{"user.backupy.kind", []byte(b.Kind)},
		{"user.backupy.state", []byte(state)},
	}
	if run := b.RunID(); run != "" {
		xs = append(xs, Xattr{"user.backupy.run_id", []byte(run)})
	}
	if sha != "" {
		xs = append(xs, Xattr{"user.backupy.sha256", []byte(sha)})
	}
	xs = append(xs, Xattr{"user.backupy.ciphertext_size", []byte(strconv.FormatInt(b.Size, 10))})
	if b.index != nil {
		xs = append(xs, Xattr{"user.backupy.frames", []byte(strconv.FormatInt(b.index.Frames(), 10))})
	}
	return xs
}

// metaDoc is the content of <base>.meta.json.
type metaDoc struct {
	ObjectKey      string    `json:"object_key"`
	Kind           Kind      `json:"kind"`
	State          string    `json:"state"`
	CiphertextSize int64     `json:"ciphertext_size"`
	ModTime        time.Time `json:"mtime"`
	Frames         *int64    `json:"frames,omitempty"`
	FrameLayout    string    `json:"frame_layout,omitempty"`
	CompressedSize int64     `json:"compressed_size"`
	DecodedSize    *int64    `json:"decoded_size"`
	Payload        string    `json:"payload,omitempty"`
	RunID          string    `json:"run_id,omitempty"`
	Key            *metaKey  `json:"key,omitempty"`
	SHA256         metaSHA   `json:"sha256"`
	ZstdChecksum   string    `json:"zstd_checksum"`
	Corruption     string    `json:"corruption,omitempty"`
}

type metaKey struct {
	MatchedBy   string `json:"matched_by"`
	Source      string `json:"source"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

type metaSHA struct {
	Expected string `json:"expected,omitempty"`
	Computed string `json:"computed,omitempty"`
}

func (f *File) render() ([]byte, error) {
	b := f.blob
	run := b.RunID()
	b.mu.Lock()
	doc := metaDoc{
		ObjectKey:      b.Path,
		Kind:           b.Kind,
		State:          b.stateLocked(),
		CiphertextSize: b.Size,
		ModTime:        b.ModTime.UTC(),
		CompressedSize: b.compressedSize(),
		RunID:          run,
		ZstdChecksum:   "not checked yet",
	}
	if b.index != nil {
		k := b.index.Frames()
		doc.Frames = &k
		doc.FrameLayout = "regular"
		if !b.index.Regular() {
			doc.FrameLayout = "irregular"
		}
	}
	if b.Kind != KindForeign && !(b.Kind == KindEncrypted && b.key == nil) {
		doc.Payload = b.pl.ext
		if !b.pl.zstd {
			doc.ZstdChecksum = "not zstd"
		}
	}
	if b.size >= 0 {
		n := b.size
		doc.DecodedSize = &n
	}
	if b.key != nil {
		doc.Key = &metaKey{MatchedBy: b.key.how, Source: b.key.source}
		if b.key.dek != nil {
			doc.Key.Fingerprint = b.key.dek.Fingerprint()
		}
		doc.SHA256.Expected = b.key.sha
	}
	doc.SHA256.Computed = b.computedSHA
	if b.zstdOK {
		doc.ZstdChecksum = "ok"
	}
	if corrupt := b.dmg.found(); corrupt != nil {
		doc.Corruption = corrupt.Error()
	}
	b.mu.Unlock()
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("backupy: meta for %s: %w", b.Path, err)
	}
	return append(out, '\n'), nil
}
