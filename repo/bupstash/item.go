package bupstash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/backupfs/backupfs/repo/bupstash/bare"
	"lukechampine.com/blake3"
)

// maxItemFileSize bounds an item file. Bupstash writers stay under 34 KiB.
const maxItemFileSize = 1 << 20

// maxTreeHeight is the deepest hash tree Bupstash writes.
const maxTreeHeight = 10

// maxLeafCount bounds a tree's leaf count: 2^40 leaves are over a
// terabyte even at one byte each, and real leaves average megabytes.
// Counts are otherwise bounded by the stream size (see checkLeafCounts).
const maxLeafCount = 1 << 40

// maxNodeEntries is the most entries an interior node can hold, and so the
// most leaves a tree of height 1 can have.
const maxNodeEntries = maxChunkFileSize / nodeEntrySize

// HTreeMeta locates a hash tree: its root address, its height (0 means the
// root is the only leaf) and its number of leaves.
type HTreeMeta struct {
	Height         uint64
	DataChunkCount uint64
	Address        Address
}

// Item is one backup: a snapshot with an index (a saved file tree) or a raw
// data stream. The fields after SendKeyID come from the encrypted secret
// metadata and are valid once the item has been listed with a key that can
// read them.
type Item struct {
	ID           Xid
	Format       int // metadata version: 1, 2 or 3
	PrimaryKeyID Xid
	Timestamp    time.Time
	DataHTree    HTreeMeta
	IndexHTree   *HTreeMeta // nil for a raw item

	SendKeyID Xid // the key (primary or sub) that made the item
	Tags      map[string]string
	DataSize  uint64
	IndexSize uint64

	// secret holds the item's halves of the keyed-BLAKE3 keys its leaves
	// are addressed with. It is behind a pointer so that printing an Item
	// (%v, %+v) shows an address, never the bytes.
	secret *itemSecret
}

// itemSecret is what an item's secret metadata holds besides its tags.
type itemSecret struct {
	dataHashPart2, indexHashPart2 [32]byte
}

// hashParts returns the item's halves of its trees' hash keys.
func (it *Item) hashParts() (data, index [32]byte) {
	if it.secret == nil {
		return data, index
	}
	return it.secret.dataHashPart2, it.secret.indexHashPart2
}

// HasIndex reports whether the item is a snapshot with a file tree.
func (it *Item) HasIndex() bool { return it.IndexHTree != nil }

// FileName returns the name a raw item's data should be shown under: its
// "name" tag when that is a safe single path component, else "data".
func (it *Item) FileName() string {
	n := it.Tags["name"]
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") || len(n) > 255 {
		return "data"
	}
	return n
}

// decodeItem parses an item file (or oplog AddItem metadata), checks the
// binding between its plaintext and its secret metadata, and decrypts the
// latter with the repository key.
func (r *Repository) decodeItem(id Xid, b []byte) (*Item, error) {
	it, encrypted, err := decodePlain(id, b)
	if err != nil {
		return nil, err
	}
	if it.PrimaryKeyID != r.key.PrimaryKeyID() {
		return it, ErrOtherKey
	}

	plain, err := r.metaOpener.Open(nil, encrypted)
	if err != nil {
		return nil, fmt.Errorf("secret metadata: %w", err)
	}
	secret, err := decompress(plain)
	if err != nil {
		return nil, fmt.Errorf("secret metadata: %w", err)
	}
	if err := it.decodeSecret(secret); err != nil {
		return nil, err
	}
	return it, nil
}

// decodePlain parses an item file's plaintext part and returns it with
// the still encrypted secret metadata. The tree shapes are checked; what
// binds them to the item is checked with the secret metadata.
func decodePlain(id Xid, b []byte) (*Item, []byte, error) {
	if len(b) > maxItemFileSize {
		return nil, nil, fmt.Errorf("%w: item file is %d bytes", ErrCorrupt, len(b))
	}
	d := bare.NewDecoder(b)
	it := &Item{ID: id}
	switch v := d.Uint(); {
	case d.Err() != nil:
	case v <= 2:
		it.Format = int(v) + 1
	case v <= 5:
		return nil, nil, fmt.Errorf("item metadata format %d is from a newer bupstash", v+1)
	default:
		return nil, nil, fmt.Errorf("%w: unknown item metadata format %d", ErrCorrupt, v+1)
	}
	it.PrimaryKeyID = d.Array16()
	var millis uint64
	if it.Format >= 2 {
		millis = d.U64()
		it.Timestamp = time.UnixMilli(int64(millis)).UTC()
	}
	it.DataHTree = decodeTreeMeta(d)
	if d.Option() {
		t := decodeTreeMeta(d)
		it.IndexHTree = &t
	}
	encrypted := d.Data()
	if err := d.Finish(); err != nil {
		return nil, nil, fmt.Errorf("%w: item file: %w", ErrCorrupt, err)
	}
	for _, t := range []*HTreeMeta{&it.DataHTree, it.IndexHTree} {
		if t == nil {
			continue
		}
		if t.Height > maxTreeHeight || t.DataChunkCount == 0 || t.DataChunkCount > maxLeafCount ||
			(t.Height == 0 && t.DataChunkCount != 1) || (t.Height == 1 && t.DataChunkCount > maxNodeEntries) {
			return nil, nil, fmt.Errorf("%w: impossible tree shape (height %d, %d chunks)", ErrCorrupt, t.Height, t.DataChunkCount)
		}
	}
	return it, encrypted, nil
}

func decodeTreeMeta(d *bare.Decoder) HTreeMeta {
	return HTreeMeta{Height: d.Uint(), DataChunkCount: d.Uint(), Address: d.Array32()}
}

func (t HTreeMeta) encode(e *bare.Encoder) {
	e.Uint(t.Height)
	e.Uint(t.DataChunkCount)
	e.Fixed(t.Address[:])
}

// plainHash is the hash that the secret metadata must contain: BLAKE3 of
// the canonical encoding of the plaintext part, bound to the item id since
// format 3 so metadata cannot be swapped between items
// (docs/bupstash-format.md §8.4).
func (it *Item) plainHash() [32]byte {
	var e bare.Encoder
	if it.Format == 3 {
		e.U8(3)
		e.Fixed(it.ID[:])
	}
	e.Fixed(it.PrimaryKeyID[:])
	if it.Format >= 2 {
		e.U64(uint64(it.Timestamp.UnixMilli()))
	}
	it.DataHTree.encode(&e)
	e.Option(it.IndexHTree != nil)
	if it.IndexHTree != nil {
		it.IndexHTree.encode(&e)
	}
	return blake3.Sum256(e.Buf)
}

func (it *Item) decodeSecret(b []byte) error {
	d := bare.NewDecoder(b)
	hash := d.Array32()
	it.SendKeyID = d.Array16()
	it.secret = &itemSecret{}
	it.secret.indexHashPart2 = d.Array32()
	it.secret.dataHashPart2 = d.Array32()
	if it.Format == 1 {
		ts := d.String()
		if d.Err() == nil {
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return fmt.Errorf("%w: secret metadata timestamp %q: %w", ErrCorrupt, ts, err)
			}
			it.Timestamp = t.UTC()
		}
	}
	n := d.Uint()
	if n > uint64(d.Remaining()) {
		return fmt.Errorf("%w: secret metadata: %d tags cannot fit", ErrCorrupt, n)
	}
	it.Tags = make(map[string]string, n)
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		k := d.String()
		it.Tags[k] = d.String()
	}
	it.DataSize = d.Uint()
	it.IndexSize = d.Uint()
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%w: secret metadata: %w", ErrCorrupt, err)
	}
	if want := it.plainHash(); !bytes.Equal(hash[:], want[:]) {
		return fmt.Errorf("%w: item metadata does not match its signed hash", ErrCorrupt)
	}
	if it.IndexHTree == nil && it.IndexSize != 0 {
		return fmt.Errorf("%w: index size %d without an index tree", ErrCorrupt, it.IndexSize)
	}
	return it.checkLeafCounts()
}

// checkLeafCounts rejects trees with more leaves than their streams have
// bytes. Writers never emit an empty leaf, except the single one of an
// empty stream, so a stream of n bytes has at most n leaves, or 1; the
// bound allows n+1, one empty leaf to spare.
func (it *Item) checkLeafCounts() error {
	check := func(kind string, t *HTreeMeta, size uint64) error {
		if t != nil && (t.DataChunkCount == 0 || t.DataChunkCount-1 > size) {
			return fmt.Errorf("%w: %s tree claims %d leaves for a %d-byte stream", ErrCorrupt, kind, t.DataChunkCount, size)
		}
		return nil
	}
	if err := check("data", &it.DataHTree, it.DataSize); err != nil {
		return err
	}
	return check("index", it.IndexHTree, it.IndexSize)
}

// ItemError reports an item that could not be listed.
type ItemError struct {
	ID  Xid
	Err error
}

func (e *ItemError) Error() string { return fmt.Sprintf("item %s: %v", e.ID, e.Err) }
func (e *ItemError) Unwrap() error { return e.Err }

// Listing is what List found in the repository.
type Listing struct {
	// Items are the live items the key can read, oldest first.
	Items []*Item
	// Skipped are the live items made under another primary key, by id.
	Skipped []SkippedItem
	// KeyID is the primary key id of the key the repository was opened
	// with.
	KeyID Xid
}

// SkippedItem is an item made under another primary key than the one in
// use: nothing in it but its id and that key id can be read.
type SkippedItem struct {
	ID           Xid
	PrimaryKeyID Xid
}

// OtherKeyError reports items made under another primary key: one item
// (Item set), or Count items of a listing.
type OtherKeyError struct {
	Item     *Xid
	Count    int
	ItemKeys []Xid // the primary keys the items were made under, sorted
	KeyID    Xid   // the primary key id of the key in use
}

func (e *OtherKeyError) Error() string {
	what := fmt.Sprintf("%d items were", e.Count)
	switch {
	case e.Item != nil:
		what = "item " + e.Item.String() + " was"
	case e.Count == 1:
		what = "1 item was"
	}
	return what + " " + e.Reason()
}

// Reason says whose the items are and whose the key is: "made under
// primary key X; this key belongs to primary key Y".
func (e *OtherKeyError) Reason() string {
	keys := make([]string, len(e.ItemKeys))
	for i, k := range e.ItemKeys {
		keys[i] = k.String()
	}
	under := "primary key "
	if len(keys) > 1 {
		under = "primary keys "
	}
	return fmt.Sprintf("made under %s%s; this key belongs to primary key %s", under, strings.Join(keys, ", "), e.KeyID)
}

// Is makes errors.Is(err, ErrOtherKey) hold.
func (e *OtherKeyError) Is(target error) bool { return target == ErrOtherKey }

// SkippedError describes the listing's skipped items as one error, or
// returns nil if there are none.
func (l *Listing) SkippedError() *OtherKeyError {
	if len(l.Skipped) == 0 {
		return nil
	}
	return otherKeyError(nil, l.Skipped, l.KeyID)
}

func otherKeyError(item *Xid, skipped []SkippedItem, key Xid) *OtherKeyError {
	seen := map[Xid]bool{}
	e := &OtherKeyError{Item: item, Count: len(skipped), KeyID: key}
	for _, s := range skipped {
		if !seen[s.PrimaryKeyID] {
			seen[s.PrimaryKeyID] = true
			e.ItemKeys = append(e.ItemKeys, s.PrimaryKeyID)
		}
	}
	sort.Slice(e.ItemKeys, func(i, j int) bool { return bytes.Compare(e.ItemKeys[i][:], e.ItemKeys[j][:]) < 0 })
	return e
}

// Find returns the item whose id is idOrPrefix or starts with it. A match
// among the skipped items gives an *OtherKeyError naming the item and both
// keys; a prefix matching several items, readable or not, is ambiguous.
func (l *Listing) Find(idOrPrefix string) (*Item, error) {
	p := strings.ToLower(idOrPrefix)
	if p == "" || !isHexName(p, len(p)) {
		return nil, fmt.Errorf("%w %q: not an item id", ErrNoItem, idOrPrefix)
	}
	var found *Item
	var foreign *SkippedItem
	var ids []Xid
	for _, it := range l.Items {
		if strings.HasPrefix(it.ID.String(), p) {
			found = it
			ids = append(ids, it.ID)
		}
	}
	for i, s := range l.Skipped {
		if strings.HasPrefix(s.ID.String(), p) {
			foreign = &l.Skipped[i]
			ids = append(ids, s.ID)
		}
	}
	switch {
	case len(ids) > 1:
		return nil, fmt.Errorf("%w: %q matches %s and %s", ErrAmbiguousItem, idOrPrefix, ids[0], ids[1])
	case found != nil:
		return found, nil
	case foreign != nil:
		return nil, otherKeyError(&foreign.ID, []SkippedItem{*foreign}, l.KeyID)
	}
	return nil, fmt.Errorf("%w %q", ErrNoItem, idOrPrefix)
}

// Items returns the live items the key can read, oldest first, like List.
// Items made under another primary key are left out; each newly seen
// batch of them is reported as one warning in the log.
func (r *Repository) Items(ctx context.Context) ([]*Item, error) {
	l, err := r.List(ctx)
	if l == nil {
		return nil, err
	}
	r.mu.Lock()
	var fresh []SkippedItem
	for _, s := range l.Skipped {
		if !r.reported[s.ID] {
			r.reported[s.ID] = true
			fresh = append(fresh, s)
		}
	}
	r.mu.Unlock()
	if len(fresh) > 0 {
		r.log.Warn("skipping items made under another primary key", "repo", r.src.String(),
			"err", otherKeyError(nil, fresh, l.KeyID).Error())
	}
	return l.Items, err
}

// List returns the live items: those the key can read, oldest first, and
// those made under another primary key, which it cannot. Items that fail
// to decode or cannot be read are left out and reported in the returned
// error (an errors.Join of *ItemError), alongside the listing of the good
// ones. List logs nothing about skipped items; the caller decides how to
// report them (see Listing.SkippedError).
//
// Item metadata never changes once written, so each item is read and
// decrypted once per Repository; later calls only learn the live set.
func (r *Repository) List(ctx context.Context) (*Listing, error) {
	set, err := r.src.Items(ctx, r.known)
	if err != nil {
		return nil, err
	}
	errs := r.decodeItems(ctx, set.Items)
	for _, p := range set.Problems {
		errs = append(errs, p)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.token = set.Token
	live := make(map[Xid]bool, len(set.Items))
	l := &Listing{Items: make([]*Item, 0, len(set.Items)), KeyID: r.key.PrimaryKeyID()}
	for _, raw := range set.Items {
		id := raw.ID
		live[id] = true
		if it := r.items[id]; it != nil {
			l.Items = append(l.Items, it)
		} else if k, ok := r.foreign[id]; ok {
			l.Skipped = append(l.Skipped, SkippedItem{ID: id, PrimaryKeyID: k})
		}
	}
	for id := range r.items {
		if !live[id] {
			delete(r.items, id) // removed since the last listing
		}
	}
	for id := range r.foreign {
		if !live[id] {
			delete(r.foreign, id)
		}
	}
	sort.Slice(l.Items, func(i, j int) bool {
		a, b := l.Items[i], l.Items[j]
		if !a.Timestamp.Equal(b.Timestamp) {
			return a.Timestamp.Before(b.Timestamp)
		}
		return bytes.Compare(a.ID[:], b.ID[:]) < 0
	})
	return l, errors.Join(errs...)
}

// known reports whether an item's metadata has been decoded already.
func (r *Repository) known(id Xid) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, known := r.items[id]
	_, foreign := r.foreign[id]
	return known || foreign
}

// Changed reports whether the live items may have changed since the last
// List, cheaply and without waiting for locks.
func (r *Repository) Changed(ctx context.Context) (bool, error) {
	r.mu.Lock()
	token := r.token
	r.mu.Unlock()
	return r.src.Changed(ctx, token)
}

// decodeItems decrypts the metadata of the items that carry some, on
// several goroutines: each costs an X25519 operation (every item has its
// own ephemeral key). Items that fail are returned as *ItemError.
func (r *Repository) decodeItems(ctx context.Context, raw []RawItem) []error {
	work := make(chan *RawItem)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(len(raw), runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ri := range work {
				it, err := r.decodeItem(ri.ID, ri.Meta)
				mu.Lock()
				switch {
				case errors.Is(err, ErrOtherKey):
					r.mu.Lock()
					r.foreign[ri.ID] = it.PrimaryKeyID
					r.mu.Unlock()
				case err != nil:
					errs = append(errs, &ItemError{ID: ri.ID, Err: err})
				default:
					r.mu.Lock()
					r.items[ri.ID] = it
					r.mu.Unlock()
				}
				mu.Unlock()
			}
		}()
	}
	for i := range raw {
		if raw[i].Meta == nil {
			continue
		}
		select {
		case work <- &raw[i]:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return errs
}

// FindItem returns the live item whose id is idOrPrefix or starts with it.
func FindItem(items []*Item, idOrPrefix string) (*Item, error) {
	p := strings.ToLower(idOrPrefix)
	if p == "" || !isHexName(p, len(p)) {
		return nil, fmt.Errorf("%w %q: not an item id", ErrNoItem, idOrPrefix)
	}
	var found *Item
	for _, it := range items {
		if strings.HasPrefix(it.ID.String(), p) {
			if found != nil {
				return nil, fmt.Errorf("%w: %q matches %s and %s", ErrAmbiguousItem, idOrPrefix, found.ID, it.ID)
			}
			found = it
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w %q", ErrNoItem, idOrPrefix)
	}
	return found, nil
}
