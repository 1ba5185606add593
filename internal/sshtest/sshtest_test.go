package sshtest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestForceCommand(t *testing.T) {
	s := Start(t, `echo "forced: $SSH_ORIGINAL_COMMAND"`)
	args := []string{"-T", "-p", strconv.Itoa(s.Port)}
	for _, o := range s.Options {
		args = append(args, "-o", o)
	}
	args = append(args, "-o", "BatchMode=yes", "-o", "User="+s.User, "--", "127.0.0.1", "asked", "for")
	out, err := exec.Command("ssh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s\nsshd: %s", err, out, strings.Join(s.Logs(), "\n"))
	}
	if got := strings.TrimSpace(string(out)); got != "forced: asked for" {
		t.Fatalf("got %q", got)
	}
}
