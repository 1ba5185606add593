// Package s3test runs a real S3 server for tests: Versity Gateway
// (versitygw) over a temporary directory, listening on 127.0.0.1 only,
// started on a free port and always stopped when the test ends. Buckets
// and objects are created through the S3 API, so objects have the ETags
// and modification times a real service gives them; signed requests are
// checked, so a wrong secret really fails.
//
// A Proxy in front of the server injects the faults a real service shows
// now and then (503 SlowDown, connection resets, stalls) and counts the
// requests that reach it, so that tests can say how many round trips an
// operation cost.
//
// Tests that use the AWS SDK's standard chain must not depend on the
// developer's environment: Isolate clears every AWS_* variable of the test
// process (and the files they would point to), and CleanEnv does the same
// for a child process's environment.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupfs/backupfs/internal/testtools"
)

// Credentials and region of every server Start runs.
const (
	AccessKey = "backupfs-test-access"
	SecretKey = "backupfs-test-secret-0123456789"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Dir is the directory the gateway stores buckets in. Tests must not
	// write into it: objects go through the API.
	Dir string

	client *s3.Client
	cmd    *exec.Cmd
	out    *lockedBuffer
	done   chan struct{}
}

// Start runs versitygw on a free port of 127.0.0.1 until the test ends.
// It skips (fails in CI) when there is no versitygw; see testtools.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(testtools.Versitygw(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Launch runs the versitygw binary bin over dir on a free port of
// 127.0.0.1, for programs other than tests (benchmarks). The caller must
// Close it.
func Launch(bin, dir string) (*Server, error) {
	var lastErr error
	for range 5 { // the free port may be taken before the server binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(bin, dir, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("s3test: cannot start versitygw: %w", lastErr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(bin, dir string, port int) (*Server, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{Endpoint: "http://" + addr, Dir: dir, out: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", addr, "--keep-alive", "--quiet", "posix", dir)
	// The gateway reads its own settings from the environment (VGW_*,
	// ROOT_*); none of the developer's may reach it.
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	s.client = newClient(s.Endpoint)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.client.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("versitygw exited: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("versitygw did not answer on %s: %v\n%s", addr, err, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newClient returns a client of the test server that uses no
// configuration from the environment or from files.
func newClient(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		HTTPClient:   &http.Client{Timeout: 30 * time.Second},
	})
}

// Close ends the server and waits for it.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Client returns an S3 client of the server, for setting up and changing
// buckets in tests.
func (s *Server) Client() *s3.Client { return s.client }

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if err := s.CreateBucketErr(bucket); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", bucket, err)
	}
}

// CreateBucketErr creates a bucket, or says why it could not.
func (s *Server) CreateBucketErr(bucket string) error {
	_, err := s.client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	return err
}

// Upload uploads size bytes from r as an object, for objects too large
// to hold in memory.
func (s *Server) Upload(bucket, key string, r io.Reader, size int64) error {
	_, err := s.client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: r, ContentLength: aws.Int64(size),
	})
	return err
}

// Put uploads an object and returns its ETag.
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) string {
	t.Helper()
	etag, err := s.PutErr(bucket, key, data)
	if err != nil {
		t.Fatalf("s3test: put %s/%s: %v", bucket, key, err)
	}
	return etag
}

// PutErr uploads an object and returns its ETag; it is Put for
// goroutines other than the test's.
func (s *Server) PutErr(bucket, key string, data []byte) (string, error) {
	out, err := s.client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

// Delete removes an object.
func (s *Server) Delete(t testing.TB, bucket, key string) {
	t.Helper()
	if _, err := s.client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Fatalf("s3test: delete %s/%s: %v", bucket, key, err)
	}
}

// Env returns the environment variables that point the AWS SDK's
// standard chain at endpoint (the server's, or a proxy's) with the
// server's credentials, for a child process whose environment CleanEnv
// cleared.
func Env(endpoint string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL_S3=" + endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent/backupfs-test/config",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/backupfs-test/credentials",
	}
}

// Isolate clears every AWS_* variable of the test process for the test's
// duration, points the configuration and credentials files at nothing
// and turns off the EC2 instance metadata lookup (it would reach beyond
// this machine), then sets the variables in set ("NAME=value").
// The developer's AWS_PROFILE, AWS_CA_BUNDLE, endpoints or keys never
// change a test's outcome. Tests calling it cannot run in parallel.
func Isolate(t testing.TB, set ...string) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AWS_") {
			t.Setenv(name, "") // restores the value when the test ends
			os.Unsetenv(name)  // unset, not empty: the SDK tells them apart
		}
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent/backupfs-test/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/backupfs-test/credentials")
	for _, kv := range set {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
}

// CleanEnv returns environ without any AWS_* variable, for a child process
// that then gets exactly the ones a test gives it.
func CleanEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to diagnose; never grows without bound
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
