package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/internal/s3test"
	"github.com/backupfs/backupfs/repo/location"
)

// A bucket prefix from the configuration file, with its own endpoint and
// path style: the environment gives only the credentials.
func TestMountS3FromConfig(t *testing.T) {
	f := newS3Fixture(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, []byte(`
[[backupy]]
name = "bucket"
dir = "s3://backups/tenant/co_1"
endpoint = "`+f.proxy.URL+`"
path_style = true
in_flight = 3
timeout = "20s"
keyrings = ["`+f.ring+`"]
cache_dir = "`+f.cache+`"
`), 0o600)
	dir := t.TempDir()
	env := []string{"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}
	p := startMount(t, env, "--config", cfg, dir)
	sql := f.set.Object("tenant/co_1/agt_1/job_sql/run_sql1.enc")
	got, err := os.ReadFile(filepath.Join(dir, "bucket", "agt_1", "job_sql", "run_sql1.sql"))
	if err != nil || !bytes.Equal(got, sql.Dump) {
		t.Fatalf("%d bytes, %v\n%s", len(got), err, p.stderr)
	}
	p.stop(t)
}

// S3 settings on a store that is not in S3 are refused, so that a typo in
// a URL does not quietly become a local directory.
func TestS3SettingsNeedS3(t *testing.T) {
	loc, _ := location.Parse("/backups/backupy")
	if err := checkS3Settings(loc, backupyConfig{Dir: "/backups/backupy", Endpoint: "https://minio:9000"}); err == nil || !strings.Contains(err.Error(), "s3:// stores only") {
		t.Fatalf("endpoint on a directory: %v", err)
	}
	loc, _ = location.Parse("s3://b/p")
	if err := checkS3Settings(loc, backupyConfig{Dir: "s3://b/p", Endpoint: "https://minio:9000", PathStyle: true}); err != nil {
		t.Fatal(err)
	}
	var s s3Flags
	if _, err := s.options(&env{}, backupyConfig{Dir: "s3://b/p", Timeout: "soon"}); err == nil {
		t.Fatal("a timeout that is no duration")
	}
}
