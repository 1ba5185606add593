// Package location turns what a user writes for a repository or a store —
// a directory, an s3:// bucket prefix, an ssh:// address, a command that
// starts `bupstash serve` (BUPSTASH_REPOSITORY_COMMAND) — into the
// transport that reaches it. It is the one place
// that knows the schemes, as restic's backend/location is: the command
// line and the configuration file hand it strings, and get back an open
// repository or store whatever the transport.
//
// To add a transport: give it a Scheme constant, teach Parse its URL form
// (and what it requires: host, bucket, …), and give OpenBupstash or
// OpenBackupy the case that opens it. Nothing else in the program
// switches on schemes.
package location

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/backupfs/backupfs/cache/sealed"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/backupy/s3store"
	"github.com/backupfs/backupfs/repo/bupstash"
	"github.com/backupfs/backupfs/repo/bupstash/serve"
)

// Scheme names a transport.
type Scheme string

const (
	// Local is a directory on this machine (or a network filesystem
	// mounted on it): a plain path, or a file:// URL.
	Local Scheme = "local"
	// SSH is a Bupstash repository served by `bupstash serve` over ssh:
	// ssh://[USER@]HOST[:PORT]/PATH.
	SSH Scheme = "ssh"
	// S3 is a bucket prefix of an S3 service: s3://BUCKET[/PREFIX]. Only
	// Backupy stores live there.
	S3 Scheme = "s3"
	// Command is a Bupstash repository served by `bupstash serve` that a
	// command starts (BUPSTASH_REPOSITORY_COMMAND): Path is the command
	// line, split as a shell would and run without one.
	Command Scheme = "command"
)

// Location is a parsed repository or store address.
type Location struct {
	Scheme Scheme
	// Path is the directory for Local, the path on the server for SSH,
	// and the key prefix (no slash at either end) for S3.
	Path string
	// Bucket is the bucket of an S3 location.
	Bucket string
	// URL is the address as parsed, for remote schemes; nil for Local.
	URL *url.URL

	raw string
}

// String returns the location as the user wrote it, for messages.
func (l Location) String() string { return l.raw }

// IsURL reports whether s is written as a URL (scheme://…) rather than a
// path, so that a configuration file resolves paths relative to itself
// but keeps URLs as they are.
func IsURL(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for j, c := range s[:i] {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case j > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// Parse reads a location. A string that is not a URL is a local path,
// whatever it contains. An unknown scheme is an error, so that a typo is
// not taken for a directory name.
func Parse(s string) (Location, error) {
	if s == "" {
		return Location{}, ErrEmpty
	}
	if !IsURL(s) {
		return Location{Scheme: Local, Path: s, raw: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Location{}, fmt.Errorf("%s: %w", s, err)
	}
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("%s: %w: a file:// URL names a path on this machine", s, ErrBadURL)
		}
		return Location{Scheme: Local, Path: u.Path, raw: s}, nil
	case "ssh":
		if u.Host == "" {
			return Location{}, fmt.Errorf("%s: %w: want ssh://[USER@]HOST[:PORT]/PATH", s, ErrBadURL)
		}
		return Location{Scheme: SSH, Path: u.Path, URL: u, raw: s}, nil
	case "s3":
		bucket, prefix, err := s3store.ParseURL(s)
		if err != nil {
			return Location{}, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		return Location{Scheme: S3, Bucket: bucket, Path: prefix, URL: u, raw: s}, nil
	default:
		return Location{}, fmt.Errorf("%s: %w %q", s, ErrUnknownScheme, u.Scheme)
	}
}

// FromCommand is the location of a repository whose server a command
// starts, as BUPSTASH_REPOSITORY_COMMAND names one.
func FromCommand(command string) (Location, error) {
	if strings.TrimSpace(command) == "" {
		return Location{}, fmt.Errorf("%w: the repository command is empty", ErrEmpty)
	}
	return Location{Scheme: Command, Path: command, raw: command}, nil
}

// IsRemote reports whether the location is reached through a server.
func (l Location) IsRemote() bool { return l.Scheme == SSH || l.Scheme == Command }

// Remote configures repositories reached through `bupstash serve` (ssh://
// and command locations); local ones ignore it.
type Remote struct {
	// SSHOptions are given to ssh, each as -o OPTION.
	SSHOptions []string
	// Refresh is how often the item list is synced; IdleClose closes
	// data connections idle this long; Connections bounds them (zero:
	// package serve's defaults).
	Refresh, IdleClose time.Duration
	Connections        int
	// CacheDir keeps the chunks fetched, sealed as the server sent them,
	// bounded by CacheSize bytes; "" or a size of 0 keeps none.
	CacheDir  string
	CacheSize int64
	// CacheOptional goes on without the disk cache, with a warning, when
	// CacheDir cannot be used (a default directory under an unwritable
	// home), rather than failing.
	CacheOptional bool
	// NoPull reads without pull sessions, so that the server's
	// repository lock is never held (see serve.Options).
	NoPull bool
	// Warm dials a connection for the first data read while the item
	// list is fetched (a mount's; see serve.Options).
	Warm bool
}

// Defaults of Remote's zero values (package serve's).
const (
	DefaultRefresh     = serve.DefaultRefresh
	DefaultIdleClose   = serve.DefaultIdleClose
	DefaultConnections = serve.DefaultConnections
)

// OpenBupstash opens the Bupstash repository at loc with key, with the
// defaults for remote repositories (and no disk cache).
func OpenBupstash(ctx context.Context, loc Location, key *bupstash.Key, opts bupstash.Options) (*bupstash.Repository, error) {
	return OpenBupstashWith(ctx, loc, key, opts, Remote{})
}

// OpenBupstashWith opens the Bupstash repository at loc with key; remote
// configures it if it is reached through a server.
func OpenBupstashWith(ctx context.Context, loc Location, key *bupstash.Key, opts bupstash.Options, remote Remote) (*bupstash.Repository, error) {
	switch loc.Scheme {
	case Local:
		return bupstash.Open(ctx, loc.Path, key, opts)
	case SSH, Command:
		return openRemote(ctx, loc, key, opts, remote)
	}
	return nil, fmt.Errorf("%s: %w for a Bupstash repository", loc, ErrUnsupported)
}

// openRemote starts the server loc names and reads the repository
// through it.
func openRemote(ctx context.Context, loc Location, key *bupstash.Key, opts bupstash.Options, remote Remote) (*bupstash.Repository, error) {
	if key == nil {
		return nil, bupstash.ErrNoKey // before starting a server
	}
	var cmd serve.Command
	var err error
	if loc.Scheme == SSH {
		cmd, err = serve.SSHCommand(loc.raw, serve.SSHOptions{Options: remote.SSHOptions})
	} else {
		cmd, err = serve.ShellCommand(loc.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	so := serve.Options{
		Dial:    serve.DialOptions{Logger: log, WarnSkew: true},
		Refresh: remote.Refresh, IdleClose: remote.IdleClose, Connections: remote.Connections,
		NoPull: remote.NoPull, Warm: remote.Warm,
	}
	if remote.CacheDir != "" && remote.CacheSize > 0 {
		c, err := diskCache(remote.CacheDir, remote.CacheSize, log)
		switch {
		case err == nil:
			so.Cache = c.Space(loc.raw)
		case remote.CacheOptional:
			log.Warn("no disk cache for remote repositories", "err", err)
		default:
			return nil, err
		}
	}
	src, err := serve.Open(ctx, cmd, so)
	if err != nil {
		return nil, err
	}
	r, err := bupstash.New(src, key, opts)
	if err != nil {
		src.Close()
		return nil, err
	}
	return r, nil
}

// caches are the disk caches open in this process, one per directory,
// shared by every remote repository using it.
var caches struct {
	sync.Mutex
	m map[string]*sealed.Cache
}

func diskCache(dir string, size int64, log *slog.Logger) (*sealed.Cache, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	caches.Lock()
	defer caches.Unlock()
	if c := caches.m[abs]; c != nil {
		return c, nil
	}
	c, err := sealed.Open(sealed.Options{Dir: abs, MaxBytes: size, MaxChunk: bupstash.MaxStoredChunkSize, Logger: log})
	if err != nil {
		return nil, err
	}
	if caches.m == nil {
		caches.m = map[string]*sealed.Cache{}
	}
	caches.m[abs] = c
	return c, nil
}

// OpenBackupy opens the Backupy store at loc: a directory of objects, or
// a bucket prefix (reached as s3opts says, and listed one level at a
// time, when each is first looked at). For S3, wrong credentials, a
// missing bucket or an unreachable service are reported here, in one
// line naming the store.
func OpenBackupy(ctx context.Context, loc Location, opts backupy.Options, s3opts s3store.Options) (*backupy.Store, error) {
	switch loc.Scheme {
	case Local:
		return backupy.OpenStore(ctx, loc.Path, opts)
	case S3:
		objects, err := s3store.New(ctx, loc.Bucket, loc.Path, s3opts)
		if err != nil {
			return nil, err
		}
		if err := objects.Check(ctx); err != nil {
			return nil, err
		}
		opts.Lazy = true
		return backupy.Open(ctx, objects, opts)
	}
	return nil, fmt.Errorf("%s: %w for a Backupy store", loc, ErrUnsupported)
}

// OpenBackupyObject opens one Backupy object at loc (a file, or the key
// of an object in a bucket), as a store of that one object.
func OpenBackupyObject(ctx context.Context, loc Location, opts backupy.Options, s3opts s3store.Options) (*backupy.Store, *backupy.Blob, error) {
	switch loc.Scheme {
	case Local:
		return backupy.OpenFile(ctx, loc.Path, opts)
	case S3:
		if loc.Path == "" {
			return nil, nil, fmt.Errorf("%s: %w: name an object, s3://BUCKET/KEY", loc, ErrBadURL)
		}
		dir, name := path.Split(loc.Path)
		objects, err := s3store.New(ctx, loc.Bucket, dir, s3opts)
		if err != nil {
			return nil, nil, err
		}
		if err := objects.Check(ctx); err != nil {
			return nil, nil, err
		}
		return backupy.OpenObject(ctx, objects, name, opts)
	}
	return nil, nil, fmt.Errorf("%s: %w for a Backupy object", loc, ErrUnsupported)
}

// Abs returns the location with a local path made absolute, so that it
// names the same directory whatever the working directory becomes (a
// mount serving in the background leaves it). Other schemes are returned
// as they are.
func (l Location) Abs() (Location, error) {
	if l.Scheme != Local {
		return l, nil
	}
	p, err := filepath.Abs(l.Path)
	if err != nil {
		return Location{}, fmt.Errorf("%s: %w", l, err)
	}
	l.Path = p
	return l, nil
}

// Display names the location where a mount shows its source
// (/proc/mounts, df): a local directory by its path as resolved (Abs),
// anything else as written.
func (l Location) Display() string {
	if l.Scheme == Local {
		return l.Path
	}
	return l.raw
}

// Name is the directory name a location gets in a mount when none is
// given: the last element of its path.
func (l Location) Name() string {
	if l.Scheme == Command {
		return "repo"
	}
	p := l.Path
	if l.Scheme == S3 && p == "" {
		return l.Bucket
	}
	if l.Scheme == S3 {
		return path.Base(p)
	}
	if l.Scheme != Local && (p == "" || p == "/") && l.URL != nil {
		return l.URL.Host
	}
	return filepath.Base(filepath.Clean(p))
}
