package bupstash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/backupfs/backupfs/internal/shellwords"
)

// LoadKey reads and parses a key file.
func LoadKey(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// KeyFromEnv finds the key the way Bupstash does: the path in BUPSTASH_KEY,
// else the standard output of BUPSTASH_KEY_COMMAND (split into words like a
// shell would, but run without one). Unlike Bupstash, a command that exits
// with an error is reported instead of its output being parsed.
func KeyFromEnv(ctx context.Context, getenv func(string) string) (*Key, error) {
	if p := getenv("BUPSTASH_KEY"); p != "" {
		return LoadKey(p)
	}
	if cmd := getenv("BUPSTASH_KEY_COMMAND"); cmd != "" {
		return KeyFromCommand(ctx, cmd)
	}
	return nil, ErrNoKey
}

// KeyFromCommand runs command and parses the key it prints.
func KeyFromCommand(ctx context.Context, command string) (*Key, error) {
	args, err := shellwords.Split(command)
	if err != nil {
		return nil, fmt.Errorf("BUPSTASH_KEY_COMMAND: %w", err)
	}
	if len(args) == 0 {
		return nil, errors.New("BUPSTASH_KEY_COMMAND must not be empty")
	}
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Stdin, c.Stderr = os.Stdin, os.Stderr // a passphrase prompt (gpg) must reach the user
	var out bytes.Buffer
	c.Stdout = &out
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("running BUPSTASH_KEY_COMMAND: %w", err)
	}
	k, err := ParseKey(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("output of BUPSTASH_KEY_COMMAND: %w", err)
	}
	return k, nil
}
