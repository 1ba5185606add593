package s3store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupfs/backupfs/repo/backupy"
)

// Options configure a Store. The zero value uses the standard chain for
// everything and the defaults below.
type Options struct {
	// Endpoint is the service's URL (https://s3.example.net:9000). Empty
	// means what the standard chain says: AWS_ENDPOINT_URL_S3,
	// AWS_ENDPOINT_URL, the profile's endpoint_url, or AWS itself.
	Endpoint string
	// PathStyle addresses buckets as a path (https://host/bucket/key)
	// rather than as a host name (https://bucket.host/key). It is also
	// used, whatever this says, for endpoints given as an IP address or
	// as localhost, where a bucket host name cannot resolve.
	PathStyle bool
	// Region overrides the standard chain's region. With no region at
	// all, us-east-1 is used (what S3-compatible services expect), and a
	// bucket that AWS says lives elsewhere is reached in its region.
	Region string
	// Profile selects a profile of ~/.aws/config and credentials instead
	// of AWS_PROFILE's.
	Profile string
	// InFlight is how many ranged GETs a full pass keeps in flight, and
	// how many new objects a listing examines at once. Zero means
	// DefaultInFlight.
	InFlight int
	// BlockSize is the size of each of a full pass's GETs (rounded by
	// the Store to whole frames). Zero means DefaultBlockSize.
	BlockSize int64
	// Timeout bounds one operation (a listing page, a ranged read),
	// retries included; then it fails with ErrUnreachable. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// StallTimeout bounds one attempt's wait for the connection, the
	// answer or the next bytes of the body; then the attempt is retried.
	// Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// Logger receives retries (debug) and region redirects (info). Nil
	// discards them.
	Logger *slog.Logger
}

// Defaults. InFlight × BlockSize is the read-ahead of one full pass: 16
// MiB in flight keeps a link of 1 Gbit/s busy at 100 ms round trip
// (its bandwidth-delay product is 12.5 MB), and is what a pass holds in
// memory at most.
const (
	DefaultInFlight     = 8
	DefaultBlockSize    = 2 << 20
	DefaultTimeout      = 30 * time.Second
	DefaultStallTimeout = 10 * time.Second
	// maxConnsPerHost bounds the connections to the service.
	maxConnsPerHost = 64
	// maxListEntries bounds one directory level's listing: a hostile or
	// broken service paging forever cannot exhaust memory.
	maxListEntries = 1 << 20
	// defaultRegion is SigV4's region when nothing names one.
	defaultRegion = "us-east-1"
)

// Store is a bucket prefix as a backupy.ObjectStore.
type Store struct {
	bucket string
	prefix string                    // "" or ending in "/"
	name   string                    // s3://bucket/prefix
	client atomic.Pointer[s3.Client] // replaced once if the bucket is in another region
	opts   Options
	log    *slog.Logger
}

var (
	_ backupy.ObjectStore = (*Store)(nil)
	_ backupy.ReadTuning  = (*Store)(nil)
)

// ParseURL splits s3://bucket/prefix into the bucket and the prefix
// (without slashes at either end).
func ParseURL(s string) (bucket, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil || !strings.EqualFold(u.Scheme, "s3") {
		return "", "", fmt.Errorf("%s: %w: want s3://BUCKET[/PREFIX]", s, ErrBadURL)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !validBucket(u.Host) {
		return "", "", fmt.Errorf("%s: %w: want s3://BUCKET[/PREFIX]", s, ErrBadURL)
	}
	prefix = strings.Trim(u.Path, "/")
	for _, el := range strings.Split(prefix, "/") {
		if prefix != "" && (el == "" || el == "." || el == "..") {
			return "", "", fmt.Errorf("%s: %w: empty, . or .. in the prefix", s, ErrBadURL)
		}
	}
	return u.Host, prefix, nil
}

// validBucket accepts the characters of S3 bucket names (and of the
// looser names some services allow), so that a URL cannot smuggle a path
// or a port into the host.
func validBucket(b string) bool {
	if len(b) < 1 || len(b) > 255 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// New returns the store of the objects under prefix in bucket. It loads
// the standard chain's configuration but sends nothing: the first
// listing is the first request (and says whether the credentials work).
func New(ctx context.Context, bucket, prefix string, opts Options) (*Store, error) {
	prefix = strings.Trim(prefix, "/")
	name := "s3://" + bucket
	if prefix != "" {
		name += "/" + prefix
		prefix += "/"
	}
	if !validBucket(bucket) {
		return nil, fmt.Errorf("%s: %w", name, ErrBadURL)
	}
	if opts.InFlight <= 0 {
		opts.InFlight = DefaultInFlight
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = DefaultBlockSize
	}
	opts.BlockSize = min(opts.BlockSize, maxAnswer)
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Endpoint != "" {
		if u, err := url.Parse(opts.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: endpoint %q: want http:// or https://HOST[:PORT]", name, opts.Endpoint)
		}
	}
	cfg, err := loadConfig(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: AWS configuration: %w", name, err)
	}
	s := &Store{bucket: bucket, prefix: prefix, name: name, opts: opts, log: log}
	s.client.Store(newClient(cfg, opts))
	return s, nil
}

// loadConfig reads the standard chain. The SDK retries nothing here:
// retrying is the store's (see retry), so that one bound covers it all.
func loadConfig(ctx context.Context, opts Options) (aws.Config, error) {
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = opts.StallTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = maxConnsPerHost
			t.MaxConnsPerHost = maxConnsPerHost
			t.ResponseHeaderTimeout = opts.StallTimeout
		})
	load := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	if opts.Profile != "" {
		load = append(load, config.WithSharedConfigProfile(opts.Profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return aws.Config{}, err
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	return cfg, nil
}

func newClient(cfg aws.Config, opts Options) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		// By now BaseEndpoint holds what the chain said, if anything.
		o.UsePathStyle = opts.PathStyle || (o.BaseEndpoint != nil && hostIsLocalOrIP(*o.BaseEndpoint))
		// Ranged reads have no whole-object checksum to check; asking
		// for one only costs the service work.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.APIOptions = append(o.APIOptions, limitAnswers)
	})
}

// hostIsLocalOrIP reports whether an endpoint's host is an IP address or
// localhost: no DNS name bucket.host exists there.
func hostIsLocalOrIP(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	h := u.Hostname()
	return net.ParseIP(h) != nil || strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost")
}

// Name returns s3://bucket/prefix.
func (s *Store) Name() string { return s.name }

// Bucket and Prefix return where the store's objects are.
func (s *Store) Bucket() string { return s.bucket }

// Prefix returns the key prefix, "" or ending in a slash.
func (s *Store) Prefix() string { return s.prefix }

// PathStyle reports whether requests address the bucket as a path.
func (s *Store) PathStyle() bool { return s.client.Load().Options().UsePathStyle }

// Endpoint returns the endpoint requests go to, "" for AWS's own.
func (s *Store) Endpoint() string { return aws.ToString(s.client.Load().Options().BaseEndpoint) }

// Region returns the region requests are signed for.
func (s *Store) Region() string { return s.client.Load().Options().Region }

// ReadTuning says how a Store reads ahead: BlockSize per GET, InFlight at
// a time.
func (s *Store) ReadTuning() (int64, int) { return s.opts.BlockSize, s.opts.InFlight }

// List lists one level: ListObjectsV2 with "/" as the delimiter, page by
// page. Keys that cannot be file names (empty, ".", "..", or holding a
// NUL) are left out. A level other than the root that holds nothing is
// ErrNotFound: S3 has no directories, only keys with a common prefix.
func (s *Store) List(ctx context.Context, dir string) (backupy.Listing, error) {
	prefix := s.prefix
	if dir != "" {
		prefix += dir + "/"
	}
	var (
		l       backupy.Listing
		token   *string
		entries int
	)
	for {
		var page *s3.ListObjectsV2Output
		err := s.retry(ctx, "ListObjectsV2", func(ctx context.Context, _ func()) error {
			out, err := s.client.Load().ListObjectsV2(ctx, &s3.ListObjectsV2Input{
				Bucket:            aws.String(s.bucket),
				Prefix:            aws.String(prefix),
				Delimiter:         aws.String("/"),
				ContinuationToken: token,
			})
			page = out
			return err
		})
		if err != nil {
			return backupy.Listing{}, err
		}
		entries += len(page.Contents) + len(page.CommonPrefixes)
		if entries > maxListEntries {
			return backupy.Listing{}, fmt.Errorf("%s: listing %q: %w: more than %d entries in one level", s.name, dir, ErrBadAnswer, maxListEntries)
		}
		for _, o := range page.Contents {
			name, ok := childName(aws.ToString(o.Key), prefix)
			size := aws.ToInt64(o.Size)
			if !ok || size < 0 {
				continue
			}
			l.Objects = append(l.Objects, backupy.ObjectInfo{
				Key: joinKey(dir, name), Size: size, ModTime: aws.ToTime(o.LastModified), ETag: aws.ToString(o.ETag),
			})
		}
		for _, cp := range page.CommonPrefixes {
			name, ok := childName(strings.TrimSuffix(aws.ToString(cp.Prefix), "/"), prefix)
			if ok {
				l.Dirs = append(l.Dirs, name)
			}
		}
		if !aws.ToBool(page.IsTruncated) || aws.ToString(page.NextContinuationToken) == "" {
			break
		}
		token = page.NextContinuationToken
	}
	if dir != "" && len(l.Objects) == 0 && len(l.Dirs) == 0 {
		return backupy.Listing{}, fmt.Errorf("%s: %s: %w", s.name, dir, backupy.ErrNotFound)
	}
	return l, nil
}

// childName returns what follows prefix in key, if that is one path
// element that can be a file name.
func childName(key, prefix string) (string, bool) {
	name, ok := strings.CutPrefix(key, prefix)
	if !ok || name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", false
	}
	return name, true
}

func joinKey(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Open opens the listed version of an object. Nothing is sent: each read
// is its own ranged GET of that version.
func (s *Store) Open(ctx context.Context, obj backupy.ObjectInfo) (backupy.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if obj.Key == "" || obj.Size < 0 {
		return nil, fmt.Errorf("%s: %q: %w", s.name, obj.Key, backupy.ErrNotFound)
	}
	return &object{s: s, info: obj}, nil
}

// Check lists the store's root once, so that wrong credentials, a missing
// bucket or an unreachable service are reported before anything else.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.List(ctx, "")
	if errors.Is(err, backupy.ErrNotFound) {
		return nil
	}
	return err
}
