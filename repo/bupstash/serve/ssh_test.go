package serve

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/sshtest"
	"github.com/backupfs/backupfs/internal/testtools"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// TestSSH reads a repository through a real sshd whose ForceCommand
// runs the genuine bupstash serve, as a restricted key is set up: the
// URL has no path.
func TestSSH(t *testing.T) {
	for _, v := range testtools.BupstashVersions {
		t.Run(v, func(t *testing.T) {
			dir := copyRepo(t, fixtures[2].dir)
			srv := sshtest.Start(t, testtools.Bupstash(t, v)+" serve --allow-get "+dir)
			cmd, err := SSHCommand(srv.URL(""), SSHOptions{Options: srv.Options})
			if err != nil {
				t.Fatal(err)
			}
			ctx := testContext(t, time.Minute)
			c, err := Dial(ctx, cmd, DialOptions{})
			if err != nil {
				t.Fatalf("%v\nsshd: %s", err, strings.Join(srv.Logs(), "\n"))
			}
			defer c.Close()
			var log ItemLog
			if _, err := log.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			want := liveItems(t, dir)
			if len(log.Live()) != len(want) {
				t.Fatalf("%d items, want %d", len(log.Live()), len(want))
			}
			for _, it := range log.Live() {
				data, index := treesOf(t, it.Meta)
				if index != nil {
					checkIndex(t, c, dir, it.ID, *index)
				}
				checkCursor(t, c, dir, it.ID, data)
			}
			if c.Protocol() == Protocol13 {
				checkPull(t, c, dir, want)
			}
		})
	}
}

// TestSSHQuotedPath: the path of an ssh:// URL reaches the remote shell
// quoted, spaces, quotes, dollars and all.
func TestSSHQuotedPath(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	parent := filepath.Join(t.TempDir(), `it's a $HOME; "repo"`)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "repo")
	if err := os.Rename(copyRepo(t, fixtures[5].dir), dir); err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(binDir, "bupstash")); err != nil {
		t.Fatal(err)
	}
	// The server runs what the client asked for, through the shell, as
	// an unrestricted key would.
	srv := sshtest.Start(t, `PATH=`+binDir+`:$PATH; eval "exec $SSH_ORIGINAL_COMMAND"`)
	cmd, err := SSHCommand(srv.URL(dir), SSHOptions{Options: srv.Options})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, time.Minute)
	c, err := Dial(ctx, cmd, DialOptions{})
	if err != nil {
		t.Fatalf("%v\nsshd: %s", err, strings.Join(srv.Logs(), "\n"))
	}
	defer c.Close()
	id, _ := bupstash.ParseXid("fdd75e29487490b4ef3eb1792242fc00")
	m, err := c.Metadata(ctx, id)
	if err != nil || !bytes.Equal(m, liveItems(t, dir)[id]) {
		t.Fatalf("metadata through a quoted path: %v", err)
	}
}

// TestSSHFailures: what the user sees when ssh or the server fails is
// the one line that says why.
func TestSSHFailures(t *testing.T) {
	bin := testtools.Bupstash(t, "0.12.1")
	dir := copyRepo(t, fixtures[5].dir)
	ctx := testContext(t, time.Minute)

	srv := sshtest.Start(t, bin+" serve "+dir+"/missing")
	cmd, _ := SSHCommand(srv.URL(""), SSHOptions{Options: srv.Options})
	_, err := Dial(ctx, cmd, DialOptions{})
	if err == nil || !strings.Contains(err.Error(), "bupstash serve: ") {
		t.Fatalf("missing repository: %v", err)
	}
	t.Logf("missing repository: %v", err)

	// A host key that does not match: ssh refuses, and says so.
	opts := append([]string(nil), srv.Options...)
	other := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(other, []byte(fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFcYHt6zDnbFw/uG8qpNE5KXqW1xrYjY5j3Vv6yM8cJy\n", srv.Port)), 0o600)
	for i, o := range opts {
		if strings.HasPrefix(o, "UserKnownHostsFile=") {
			opts[i] = "UserKnownHostsFile=" + other
		}
	}
	cmd, _ = SSHCommand(srv.URL(""), SSHOptions{Options: opts})
	_, err = Dial(ctx, cmd, DialOptions{})
	if !errors.Is(err, ErrDisconnected) || !strings.Contains(strings.ToLower(err.Error()), "host key") {
		t.Fatalf("wrong host key: %v", err)
	}
	t.Logf("wrong host key: %v", err)
}
