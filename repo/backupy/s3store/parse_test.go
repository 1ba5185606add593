package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/repo/backupy"
)

func TestParseURL(t *testing.T) {
	for in, want := range map[string][2]string{
		"s3://b":            {"b", ""},
		"s3://bkt/":         {"bkt", ""},
		"s3://bkt/a/b/":     {"bkt", "a/b"},
		"S3://bkt/co_acme":  {"bkt", "co_acme"},
		"s3://my.bucket-1/": {"my.bucket-1", ""},
	} {
		b, p, err := ParseURL(in)
		if err != nil || b != want[0] || p != want[1] {
			t.Errorf("ParseURL(%q) = %q %q %v", in, b, p, err)
		}
	}
	for _, in := range []string{"s3://", "s3:///p", "http://b/p", "s3://b/a//c", "s3://b/./c", "s3://b/../c", "s3://u@b/p", "s3://b:80/p", "s3://b/p?x=1", "s3://b%2Fc/p"} {
		if _, _, err := ParseURL(in); !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q): %v", in, err)
		}
	}
}

func TestHostIsLocalOrIP(t *testing.T) {
	for ep, want := range map[string]bool{
		"http://127.0.0.1:9000": true, "http://[::1]:9000": true, "http://localhost:9000": true,
		"http://minio.localhost": true, "https://10.1.2.3": true,
		"https://s3.example.net": false, "https://minio:9000": false,
	} {
		if hostIsLocalOrIP(ep) != want {
			t.Errorf("%s: %v", ep, !want)
		}
	}
}

func TestCheckRange(t *testing.T) {
	for _, tt := range []struct {
		cr                 string
		first, last, size  int64
		ok, changed, wrong bool
	}{
		{"bytes 0-9/100", 0, 9, 100, true, false, false},
		{"bytes 10-19/100", 10, 19, 100, true, false, false},
		{"bytes 10-19/*", 10, 19, 100, true, false, false},
		{"", 0, 99, 100, true, false, false},
		{"", 10, 19, 100, false, false, true},
		{"bytes 0-9/101", 0, 9, 100, false, true, false},
		{"bytes 0-8/100", 0, 9, 100, false, false, true},
		{"bytes 1-9/100", 0, 9, 100, false, false, true},
		{"items 0-9/100", 0, 9, 100, false, false, true},
		{"bytes 0-x/100", 0, 9, 100, false, false, true},
	} {
		err := checkRange(tt.cr, tt.first, tt.last, tt.size)
		if (err == nil) != tt.ok || errors.Is(err, backupy.ErrChanged) != tt.changed || errors.Is(err, ErrBadAnswer) != tt.wrong {
			t.Errorf("checkRange(%q, %d, %d, %d) = %v", tt.cr, tt.first, tt.last, tt.size, err)
		}
	}
}

func FuzzCheckRange(f *testing.F) {
	f.Add("bytes 0-9/100", int64(0), int64(9), int64(100))
	f.Add("bytes 5-5/*", int64(5), int64(5), int64(6))
	f.Fuzz(func(t *testing.T, cr string, first, last, size int64) {
		if err := checkRange(cr, first, last, size); err == nil && cr != "" {
			if !strings.HasPrefix(cr, "bytes ") {
				t.Fatalf("accepted %q", cr)
			}
		}
	})
}

func FuzzChildName(f *testing.F) {
	f.Add("p/a", "p/")
	f.Add("p/a/b", "p/")
	f.Add("p/..", "p/")
	f.Fuzz(func(t *testing.T, key, prefix string) {
		name, ok := childName(key, prefix)
		if ok && (name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || prefix+name != key) {
			t.Fatalf("childName(%q, %q) = %q", key, prefix, name)
		}
	})
}

// A service that answers a listing with an endless document, or with
// keys that are no file names, neither exhausts memory nor hangs, nor
// shows such names.
func TestHostileListing(t *testing.T) {
	endless := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix>p/</Prefix><IsTruncated>false</IsTruncated>`)
		if endless {
			chunk := strings.Repeat("<Contents><Key>p/x</Key><Size>1</Size><ETag>&#34;e&#34;</ETag></Contents>", 1000)
			for r.Context().Err() == nil {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			return
		}
		for _, k := range []string{"p/ok", "p/..", "p/.", "p/a b", "q/other", "p/", "p//x"} {
			fmt.Fprintf(w, "<Contents><Key>%s</Key><Size>1</Size><ETag>&#34;e&#34;</ETag></Contents>", k)
		}
		io.WriteString(w, `<CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>p/../</Prefix></CommonPrefixes></ListBucketResult>`)
	}))
	defer srv.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
	t.Setenv("AWS_PROFILE", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, "b", "p", Options{Endpoint: srv.URL, Region: "us-east-1", Timeout: 20 * time.Second, StallTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range l.Objects {
		names = append(names, o.Key)
	}
	if strings.Join(names, ",") != "ok,a b" || strings.Join(l.Dirs, ",") != "d" {
		t.Fatalf("objects %q, dirs %q", names, l.Dirs)
	}
	endless = true
	start := time.Now()
	if _, err := s.List(ctx, ""); !errors.Is(err, ErrBadAnswer) {
		t.Fatalf("endless listing: %v", err)
	}
	t.Logf("an endless listing failed after %v", time.Since(start))
}
