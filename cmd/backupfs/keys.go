package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/backupfs/backupfs/internal/command"
	"github.com/backupfs/backupfs/internal/untrusted"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Keys come from where the user says, as with Bupstash: a file (--key,
// key = …, BUPSTASH_KEY) or what a command prints (key_command = …,
// BUPSTASH_KEY_COMMAND). Both are untrusted input: a key file is read
// only if it is a regular file of at most untrusted.Key bytes (never
// /dev/zero, never a FIFO that blocks), and a command's output is capped
// and its run bounded (package command).

// errNoKey says how to give a key.
var errNoKey = errors.New("no key: use --key, or set BUPSTASH_KEY or BUPSTASH_KEY_COMMAND")

// bupstashKey loads a key from a file, from a command, or as the Bupstash
// environment names it.
func bupstashKey(ctx context.Context, e *env, file, keyCommand string) (*bupstash.Key, error) {
	switch {
	case file != "":
		return loadKeyFile(file)
	case keyCommand != "":
		return keyFromCommand(ctx, "key_command", keyCommand)
	}
	if p := e.getenv("BUPSTASH_KEY"); p != "" {
		return loadKeyFile(p)
	}
	if c := e.getenv("BUPSTASH_KEY_COMMAND"); c != "" {
		return keyFromCommand(ctx, "BUPSTASH_KEY_COMMAND", c)
	}
	return nil, errNoKey
}

// loadKeyFile reads and parses a key file.
func loadKeyFile(path string) (*bupstash.Key, error) {
	b, err := untrusted.ReadFile(path, untrusted.Key)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("key %s: %w", pe.Path, pe.Err)
		}
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	k, err := bupstash.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// keyFromCommand runs a key command (named by name in messages) and
// parses the key it prints. Unlike Bupstash, a command that fails is
// reported instead of its output being parsed.
func keyFromCommand(ctx context.Context, name, line string) (*bupstash.Key, error) {
	out, err := command.Output(ctx, line, command.Options{
		Name:        name,
		Stdin:       os.Stdin, // a passphrase prompt (gpg) must reach the user
		OutputLimit: untrusted.CommandOutput,
	})
	if err != nil {
		return nil, err
	}
	k, err := bupstash.ParseKey(out)
	if err != nil {
		return nil, fmt.Errorf("output of %s: %w", name, err)
	}
	return k, nil
}
