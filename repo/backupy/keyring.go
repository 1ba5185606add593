package backupy

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/backupfs/backupfs/internal/untrusted"
)

type selectorKind int

const (
	selPath selectorKind = iota // object key or glob
	selRun                      // run id
	selSHA                      // ciphertext SHA-256
	selAny                      // floating key, tried on any object
)

// keyEntry is one key with what it is known to belong to.
type keyEntry struct {
	kind   selectorKind
	value  string // glob, run id or hex hash, by kind
	dek    *DEK
	sha    string // object hash bound to the key, if any
	runID  string // run id bound to the key, if any
	source string // where the entry came from, for meta.json and logs
}

// Keyring holds the keys a Store may use. It is built once and then only
// read, so it is safe for concurrent use after construction.
//
// A keyring file is plain text, one entry per line, '#' starting a comment
// at the beginning of a line or after a blank:
//
//	run:<run_id>             b64:<base64 DEK> [sha256:<hex>]
//	sha256:<hex of the .enc> hex:<64 hex DEK>
//	path:<object key or glob> hex:<...> [sha256:<hex>]  # path.Match globs; * stops at /
//	*                        b64:<...>      # tried on any unmatched object
//	token:<JWT file>                        # binds by its run_id and sha256
//
// Key material is hex: or b64: (standard or URL-safe, padded or not). A
// relative token: path is relative to the keyring file's directory. The
// optional sha256: field of a run: or path: entry is the hash of the object
// that entry selects, checked by full passes.
//
// An entry's hash and run id are bound only to objects its own selector
// picks: the object key matches its path: glob, names its run (or the
// token's run_id), or has the entry's hash (once that hash is known). A key
// found for an object by trial decryption alone binds neither.
type Keyring struct {
	entries []*keyEntry
}

// NewKeyring returns an empty keyring.
func NewKeyring() *Keyring { return &Keyring{} }

// Len returns the number of entries.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.entries)
}

// AddToken adds a token's key, bound to its run id and object hash.
func (k *Keyring) AddToken(t *Token, source string) {
	k.entries = append(k.entries, &keyEntry{
		kind: selRun, value: t.RunID, dek: t.DEK,
		sha: t.SHA256, runID: t.RunID, source: source,
	})
}

// Merge appends o's entries to k.
func (k *Keyring) Merge(o *Keyring) { k.entries = append(k.entries, o.entries...) }

// Wipe zeroes every key, including keys it shares with keyrings it was
// merged with or into; those must not be used afterwards either. Call it
// once the stores using the keyring are closed. (The AES key schedules
// of ciphers made from the keys become unreachable with their stores.)
func (k *Keyring) Wipe() {
	if k == nil {
		return
	}
	for _, e := range k.entries {
		e.dek.wipe()
	}
	k.entries = nil
}

// ParseKeyring reads a keyring file's text. name is used in error messages
// and to resolve relative token: paths. Errors name the line, never the key.
func ParseKeyring(r io.Reader, name string) (*Keyring, error) {
	k := NewKeyring()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(stripComment(sc.Text()))
		if len(fields) == 0 {
			continue
		}
		source := fmt.Sprintf("keyring %s:%d", name, line)
		if err := k.addLine(fields, name, source); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading keyring %s: %w", name, err)
	}
	return k, nil
}

func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}

func (k *Keyring) addLine(fields []string, file, source string) error {
	sel := fields[0]
	if p, ok := strings.CutPrefix(sel, "token:"); ok {
		if len(fields) != 1 {
			return fmt.Errorf("%w: a token: entry takes no key material", ErrKeyring)
		}
		if p == "" {
			return fmt.Errorf("%w: token: needs a file name", ErrKeyring)
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(file), p)
		}
		t, err := readTokenFile(p, nil)
		if err != nil {
			return err
		}
		k.AddToken(t, source+" (token "+p+")")
		return nil
	}
	if len(fields) != 2 && !(len(fields) == 3 && (strings.HasPrefix(sel, "run:") || strings.HasPrefix(sel, "path:"))) {
		return fmt.Errorf("%w: want <selector> <hex:|b64: key material> (and for run: and path:, optionally sha256:<hex>)", ErrKeyring)
	}
	e := &keyEntry{source: source}
	if len(fields) == 3 {
		v, ok := strings.CutPrefix(fields[2], "sha256:")
		if b, err := hex.DecodeString(v); !ok || err != nil || len(b) != 32 {
			return fmt.Errorf("%w: the third field must be sha256:<64 hex digits>", ErrKeyring)
		}
		e.sha = strings.ToLower(v)
	}
	switch {
	case sel == "*":
		e.kind = selAny
	case strings.HasPrefix(sel, "run:"):
		e.kind, e.value = selRun, sel[len("run:"):]
		e.runID = e.value
		if e.value == "" {
			return fmt.Errorf("%w: empty run id", ErrKeyring)
		}
	case strings.HasPrefix(sel, "sha256:"):
		v := strings.ToLower(sel[len("sha256:"):])
		if b, err := hex.DecodeString(v); err != nil || len(b) != 32 {
			return fmt.Errorf("%w: sha256: wants 64 hex digits", ErrKeyring)
		}
		e.kind, e.value, e.sha = selSHA, v, v
	case strings.HasPrefix(sel, "path:"):
		e.kind, e.value = selPath, strings.TrimPrefix(sel[len("path:"):], "/")
		if e.value == "" {
			return fmt.Errorf("%w: empty path", ErrKeyring)
		}
		if _, err := path.Match(e.value, ""); err != nil {
			return fmt.Errorf("%w: path: %v", ErrKeyring, err)
		}
	default:
		return fmt.Errorf("%w: unknown selector (want run:, sha256:, path:, token: or *)", ErrKeyring)
	}
	dek, err := parseKeyMaterial(fields[1])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKeyring, err)
	}
	e.dek = dek
	k.entries = append(k.entries, e)
	return nil
}

// KeySources says where to load keys from.
type KeySources struct {
	TokenFiles   []string // token files; "-" reads Stdin
	TokenDirs    []string // directories of *.jwt and *.token files
	KeyringFiles []string // keyring files
	Stdin        io.Reader
	// StrictToken turns an expired token into an error, as upstream does.
	StrictToken bool
	// Now is the clock for expiry warnings; nil means time.Now.
	Now func() time.Time
}

// LoadKeys builds a keyring from every source, logging token warnings
// (expiry, issuer, audience) and keyring files readable by others.
func LoadKeys(src KeySources, log *slog.Logger) (*Keyring, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	k := NewKeyring()
	addToken := func(t *Token, source string) error {
		for _, w := range t.Warnings(now()) {
			log.Warn("backupy: token accepted with a warning", "source", source, "run_id", t.RunID, "warning", w)
		}
		if src.StrictToken && t.Expired(now()) {
			return fmt.Errorf("%s: %w: token expired (request a new one)", source, ErrToken)
		}
		k.AddToken(t, source)
		return nil
	}
	stdinUsed := false
	for _, f := range src.TokenFiles {
		if f == "-" {
			if stdinUsed || src.Stdin == nil {
				return nil, errors.New("token from standard input: not available or given twice")
			}
			stdinUsed = true
		}
		t, err := readTokenFile(f, src.Stdin)
		if err != nil {
			return nil, err
		}
		if err := addToken(t, "token "+f); err != nil {
			return nil, err
		}
	}
	for _, dir := range src.TokenDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("token directory: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() || !(strings.HasSuffix(e.Name(), ".jwt") || strings.HasSuffix(e.Name(), ".token")) {
				continue
			}
			p := filepath.Join(dir, e.Name())
			t, err := readTokenFile(p, nil)
			if err != nil {
				// One bad file among many must not cost the others:
				// it is skipped, as a bad object in a store is.
				log.Warn("backupy: skipping unreadable token file", "file", p, "err", err)
				continue
			}
			if err := addToken(t, "token "+p); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range src.KeyringFiles {
		kr, err := readKeyringFile(f, log)
		if err != nil {
			return nil, err
		}
		k.Merge(kr)
	}
	return k, nil
}

func readKeyringFile(name string, log *slog.Logger) (*Keyring, error) {
	f, fi, err := untrusted.Open(name)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("backupy: keyring file is readable by others; it should be mode 0600", "file", name, "mode", fi.Mode().Perm().String())
	}
	if fi.Size() > untrusted.Keyring {
		return nil, fmt.Errorf("keyring: %w", &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: %s, over the limit of %s",
			untrusted.ErrTooLarge, untrusted.FormatSize(fi.Size()), untrusted.FormatSize(untrusted.Keyring))})
	}
	text, err := untrusted.ReadAll(f, name, untrusted.Keyring)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer clear(text)
	return ParseKeyring(bytes.NewReader(text), name)
}

// readTokenFile reads one token from a file ("-" = stdin), trimming
// surrounding white space as the upstream tool does. The file must be a
// regular file of at most untrusted.Token bytes: a FIFO or a device is
// refused at once, never waited on or read without end.
func readTokenFile(name string, stdin io.Reader) (*Token, error) {
	var b []byte
	var err error
	if name == "-" {
		if stdin == nil {
			return nil, errors.New("token from standard input: not available")
		}
		b, err = untrusted.ReadAll(stdin, "standard input", untrusted.Token)
		name = "standard input"
	} else {
		b, err = untrusted.ReadFile(name, untrusted.Token)
	}
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer clear(b)
	t, err := ParseToken(string(b))
	if err != nil {
		return nil, fmt.Errorf("token %s: %w", name, err)
	}
	return t, nil
}

// KeyringLines turns a token into durable keyring lines: a comment naming
// the run, and a run: entry carrying the token's object hash (if any) for
// verification. A second, sha256: entry for the same key selects the
// object by that hash once it is known, whatever the object is called.
func KeyringLines(t *Token) []string {
	lines := []string{fmt.Sprintf("# run %s, company %s, subject %s, key %s", t.RunID, t.CompanyID, t.Subject, t.DEK.Fingerprint())}
	m := t.DEK.keyringMaterial()
	if t.SHA256 == "" {
		return append(lines, fmt.Sprintf("run:%s %s", t.RunID, m))
	}
	return append(lines,
		fmt.Sprintf("run:%s %s sha256:%s", t.RunID, m, t.SHA256),
		fmt.Sprintf("sha256:%s %s", t.SHA256, m))
}

// keyCandidate is a key to try on an object, with how it was selected.
type keyCandidate struct {
	entry *keyEntry
	how   string // "path", "run", "sha256", "trial" or "given"
}

// bound reports whether the key was chosen for this object rather than
// merely tried on it: then a frame 0 that fails with it means damage.
func (c keyCandidate) bound() bool { return c.how != "trial" }

// candidates orders the keys to try on an object: path selectors, run
// selectors, hash selectors (when the object hash is known), then every
// other key for trial decryption. Each distinct key appears once. hint, a
// fingerprint remembered from an earlier mount, moves that key to the front
// of the trial keys. With given, the caller named the object and its keys
// (backupfs backupy cat), so the keys no selector picks are "given"
// rather than tried.
func (k *Keyring) candidates(objectKey, knownSHA, hint string, given bool) []keyCandidate {
	if k == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []keyCandidate
	add := func(e *keyEntry, how string) {
		if !seen[e.dek.fp] {
			seen[e.dek.fp] = true
			out = append(out, keyCandidate{e, how})
		}
	}
	for _, e := range k.entries {
		if e.kind == selPath && pathMatches(e.value, objectKey) {
			add(e, "path")
		}
	}
	for _, e := range k.entries {
		if e.kind == selRun && runMatches(e.value, objectKey) {
			add(e, "run")
		}
	}
	if knownSHA != "" {
		for _, e := range k.entries {
			if e.sha == knownSHA {
				add(e, "sha256")
			}
		}
	}
	rest := make([]*keyEntry, 0, len(k.entries))
	for _, e := range k.entries {
		if !seen[e.dek.fp] {
			rest = append(rest, e)
		}
	}
	// Floating keys first (they exist to be tried), the remembered key
	// before everything; otherwise keep file order.
	sort.SliceStable(rest, func(i, j int) bool {
		ri, rj := trialRank(rest[i], hint), trialRank(rest[j], hint)
		return ri < rj
	})
	how := "trial"
	if given {
		how = "given"
	}
	for _, e := range rest {
		add(e, how)
	}
	return out
}

func trialRank(e *keyEntry, hint string) int {
	switch {
	case hint != "" && e.dek.fp == hint:
		return 0
	case e.kind == selAny:
		return 1
	}
	return 2
}

// selects reports whether the entry's own selector picks the object: its
// path: glob matches, the object names its run, or the object's known hash
// is the entry's.
func (e *keyEntry) selects(objectKey, knownSHA string) bool {
	switch {
	case e.sha != "" && e.sha == knownSHA:
		return true
	case e.kind == selPath:
		return pathMatches(e.value, objectKey)
	case e.kind == selRun:
		return runMatches(e.value, objectKey)
	}
	return false
}

// binding returns the object hash and run id that entries holding key bind
// to the object: only entries whose selectors pick it, so that a key found
// by trial never takes another object's hash. With given (the caller named
// the object), every entry of the key binds, as a token does for
// backupy-decrypt.
func (k *Keyring) binding(key *DEK, objectKey, knownSHA string, given bool) (sha, runID string) {
	if k == nil || key == nil {
		return "", ""
	}
	for _, e := range k.entries {
		if e.dek.fp != key.fp || !(given || e.selects(objectKey, knownSHA)) {
			continue
		}
		if sha == "" {
			sha = e.sha
		}
		if runID == "" {
			runID = e.runID
		}
	}
	return sha, runID
}

func pathMatches(pattern, objectKey string) bool {
	if pattern == objectKey {
		return true
	}
	ok, _ := path.Match(pattern, objectKey)
	return ok
}

// runMatches reports whether an object key names run id: the object's base
// name (without .enc) or one of its directories is id or "run_"+id. The
// server's keys look like co_<company>/agt_<agent>/job_<job>/run_<run>.enc.
func runMatches(id, objectKey string) bool {
	parts := strings.Split(objectKey, "/")
	parts[len(parts)-1] = strings.TrimSuffix(parts[len(parts)-1], ".enc")
	for _, p := range parts {
		if p == id || p == "run_"+id {
			return true
		}
	}
	return false
}
