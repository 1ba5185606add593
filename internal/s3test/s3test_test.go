package s3test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// The server checks what the S3 readers rely on: ranged reads, If-Match
// against the ETag, and signatures (a wrong secret fails).
func TestServer(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "bkt")
	etag := s.Put(t, "bkt", "dir/obj", []byte("0123456789"))
	if etag == "" {
		t.Fatal("no ETag")
	}
	ctx := context.Background()
	c := s.Client()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/obj"), Range: aws.String("bytes=2-5"), IfMatch: aws.String(etag)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "2345" || aws.ToString(out.ETag) != etag {
		t.Fatalf("ranged read: %q, ETag %s", b, aws.ToString(out.ETag))
	}
	s.Put(t, "bkt", "dir/obj", []byte("replaced!!"))
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/obj"), Range: aws.String("bytes=2-5"), IfMatch: aws.String(etag)})
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusPreconditionFailed {
		t.Fatalf("If-Match of a replaced object: %v", err)
	}

	wrong := s3.New(s3.Options{
		Region: Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, "not-the-secret", ""),
	})
	_, err = wrong.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
}

// The proxy forwards signed requests, counts them, and injects faults.
func TestProxy(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "bkt")
	s.Put(t, "bkt", "k", make([]byte, 1000))
	p := NewProxy(t, s.Endpoint)
	c := newClient(p.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, out.Body)
	out.Body.Close()
	if n := p.Counts(); n.List != 1 || n.Get != 1 || n.GetBytes != 1000 {
		t.Fatalf("counts %+v", n)
	}

	p.SetFault(func(r Request) Fault {
		if r.IsGetObject() {
			return ResetMidBody
		}
		return Pass
	})
	out, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
	if err == nil {
		_, err = io.Copy(io.Discard, out.Body)
		out.Body.Close()
	}
	if err == nil {
		t.Fatal("a reset mid-body went unnoticed")
	}

	p.SetFault(func(Request) Fault { return Stall })
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.ListObjectsV2(sctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt")})
	scancel()
	if err == nil {
		t.Fatal("a stalled request answered")
	}
	p.SetFault(nil)
	p.Release()
}
