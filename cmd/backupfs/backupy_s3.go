package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/backupfs/backupfs/repo/backupy/s3store"
	"github.com/backupfs/backupfs/repo/location"
)

// s3Flags say how to reach Backupy stores in S3 buckets (s3://BUCKET/
// PREFIX). Everything else — credentials, region, a profile, an endpoint
// in the environment — comes from the AWS SDK's standard chain, as for
// the aws command. A config file's [[backupy]] entry has the same
// settings for its own store (endpoint, path_style, region, profile,
// in_flight, timeout).
type s3Flags struct {
	endpoint  string
	pathStyle bool
	inFlight  int
	timeout   time.Duration
}

func (f *s3Flags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "`URL` of the S3 service for s3:// stores (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, the profile's, or AWS)")
	fs.BoolVar(&f.pathStyle, "s3-path-style", false, "address buckets as a path (https://host/bucket), as MinIO and most self-hosted services want (automatic for IP and localhost endpoints)")
	fs.IntVar(&f.inFlight, "s3-in-flight", s3store.DefaultInFlight, "ranged GETs in flight while an object is read from start to end (each of 2 MiB)")
	fs.DurationVar(&f.timeout, "s3-timeout", s3store.DefaultTimeout, "how long a read or listing of an s3:// store retries (a `DURATION`: 30s, 2m) before it fails with EIO")
}

// options returns the S3 options of one store: its config entry's, or
// the flags'.
func (f *s3Flags) options(e *env, sc backupyConfig) (s3store.Options, error) {
	o := s3store.Options{
		Endpoint:  firstNonEmpty(sc.Endpoint, f.endpoint),
		PathStyle: f.pathStyle || sc.PathStyle,
		Region:    sc.Region,
		Profile:   sc.Profile,
		InFlight:  f.inFlight,
		Timeout:   f.timeout,
		Logger:    e.log,
	}
	if sc.InFlight != 0 {
		o.InFlight = sc.InFlight
	}
	if o.InFlight < 1 || o.InFlight > 256 {
		return o, usageError("S3 in-flight reads for %s: %d (want 1 to 256)", sc.Dir, o.InFlight)
	}
	if sc.Timeout != "" {
		d, err := time.ParseDuration(sc.Timeout)
		if err != nil || d <= 0 {
			return o, usageError("config timeout of %s: %q is not a duration such as 30s", sc.Dir, sc.Timeout)
		}
		o.Timeout = d
	}
	if o.Timeout <= 0 {
		return o, usageError("--s3-timeout must be positive")
	}
	return o, nil
}

// checkS3Settings refuses S3 settings on a store that is not in S3, so
// that a typo in a URL is not silently a local directory.
func checkS3Settings(loc location.Location, sc backupyConfig) error {
	if loc.Scheme == location.S3 {
		return nil
	}
	if sc.Endpoint != "" || sc.PathStyle || sc.Region != "" || sc.Profile != "" || sc.InFlight != 0 || sc.Timeout != "" {
		return fmt.Errorf("config for %s: endpoint, path_style, region, profile, in_flight and timeout apply to s3:// stores only", sc.Dir)
	}
	return nil
}

// backupyName is a store's directory name in a mount when the config
// gives none: the directory's base name, or the last element of the
// bucket prefix (the bucket's name for a whole bucket).
func backupyName(dir string) string {
	if loc, err := location.Parse(dir); err == nil {
		return loc.Name()
	}
	return filepath.Base(filepath.Clean(dir))
}
