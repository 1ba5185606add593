package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backupfs/backupfs/internal/untrusted"
	"github.com/backupfs/backupfs/repo/backupy"
	"github.com/backupfs/backupfs/repo/location"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// newBackupyCommand groups the commands that read Backupy stores without
// mounting them.
func newBackupyCommand(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "backupy COMMAND",
		Short: "Read Backupy blob stores without mounting (ls, cat, import-token)",
		Long: `Read Backupy blob stores without mounting them: list a directory of downloaded
objects, write one object's decoded dump, or turn decryption tokens into
keyring lines.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("unknown subcommand %q (want ls, cat or import-token)", args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			return usageError("want a subcommand: ls, cat or import-token")
		},
	}
	c.AddCommand(newBackupyLsCommand(e), newBackupyCatCommand(e), newBackupyImportTokenCommand(e))
	return c
}

// backupyList is a repeatable flag's values.
type backupyList []string

// backupyKeyFlags are the flags of every subcommand that opens objects.
type backupyKeyFlags struct {
	tokens, tokenDirs, keyrings backupyList
	strict                      bool
	cacheDir                    string
	s3                          s3Flags
}

func (k *backupyKeyFlags) register(fs *pflag.FlagSet) {
	stringArray(fs, (*[]string)(&k.tokens), "token", "decryption token `FILE` (JWT), repeatable; - reads standard input")
	stringArray(fs, (*[]string)(&k.tokenDirs), "token-dir", "`DIR` of *.jwt and *.token files, repeatable")
	stringArray(fs, (*[]string)(&k.keyrings), "keyring", "keyring `FILE`, repeatable (default $"+envBackupyKeyring+")")
	fs.BoolVar(&k.strict, "strict-token", false, "refuse expired tokens")
	fs.StringVar(&k.cacheDir, "cache-dir", "", "`DIR` for decoded dumps and the size index (default $XDG_CACHE_HOME/backupfs/backupy, ~/.cache/backupfs/backupy, or for root /var/cache/backupfs/backupy)")
	k.s3.register(fs)
}

// options loads the keys and builds store options. Warnings (expired
// tokens, a keyring readable by others) go to the log.
func (k *backupyKeyFlags) options(e *env) (backupy.Options, error) {
	keyrings := k.keyrings
	if len(keyrings) == 0 {
		keyrings = envKeyrings(e)
	}
	cacheDir := k.cacheDir
	if cacheDir == "" {
		d, err := defaultBackupyCacheDir(e.getenv)
		if err != nil {
			return backupy.Options{}, err
		}
		cacheDir = d
	}
	keys, err := backupy.LoadKeys(backupy.KeySources{
		TokenFiles:   k.tokens,
		TokenDirs:    k.tokenDirs,
		KeyringFiles: keyrings,
		Stdin:        os.Stdin,
		StrictToken:  k.strict,
	}, e.log)
	if err != nil {
		return backupy.Options{}, err
	}
	return backupy.Options{Logger: e.log, Keys: keys, CacheDir: cacheDir}, nil
}

func newBackupyLsCommand(e *env) *cobra.Command {
	var (
		kf           backupyKeyFlags
		sizes, jsonl bool
	)
	c := &cobra.Command{
		Use:   "ls [flags] DIR|s3://BUCKET/PREFIX",
		Short: "List a store of Backupy objects",
		Long: `List a store of Backupy objects (a directory of downloaded objects, or a bucket
prefix: s3://BUCKET/PREFIX), one line per object: path, kind, ciphertext size,
decoded size, state, how its key was found, and the name it has in a mount.

` + backupyLsJSONHelp,
		Args: wantArgs(1, 1, "ls wants one store"),
		RunE: func(c *cobra.Command, args []string) error {
			return backupyLs(c.Context(), e, &kf, sizes, jsonl, args[0])
		},
	}
	kf.register(c.Flags())
	c.Flags().BoolVar(&sizes, "sizes", false, "decode objects whose size is not known yet (slow)")
	c.Flags().BoolVar(&jsonl, "json", false, "print one JSON object per object")
	return c
}

func backupyLs(ctx context.Context, e *env, kf *backupyKeyFlags, sizes, jsonl bool, dir string) error {
	opts, err := kf.options(e)
	if err != nil {
		return err
	}
	defer opts.Keys.Wipe()
	loc, err := location.Parse(dir)
	if err != nil {
		return err
	}
	s3opts, err := kf.s3.options(e, backupyConfig{Dir: dir})
	if err != nil {
		return err
	}
	s, err := location.OpenBackupy(ctx, loc, opts, s3opts)
	if err != nil {
		return repositoryError(err)
	}
	defer s.Close()
	if loc.Scheme != location.Local {
		// Opened lazily (a mount lists a level when it is looked at);
		// ls shows every level.
		if err := s.Refresh(ctx); err != nil {
			return repositoryError(err)
		}
	}
	stdout := e.stdout
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if !jsonl {
		fmt.Fprintln(tw, "PATH\tKIND\tSIZE\tDECODED\tSTATE\tKEY\tFILE")
	}
	enc := newJSONLines(stdout)
	var firstErr error
	for _, b := range s.Blobs() {
		decoded, key, name := "?", "-", "?"
		var decodedSize *int64
		if files, err := s.Files(ctx, b); err != nil {
			firstErr = backupyFirst(firstErr, err)
		} else {
			name = files[0].Name()
			if main, err := s.Main(ctx, b); err == nil {
				n, ok := main.SizeKnown()
				if !ok && sizes && b.Corrupt() == nil {
					if n, err = main.Size(ctx); err == nil {
						ok = true
					} else if !errors.Is(err, backupy.ErrCorrupt) {
						firstErr = backupyFirst(firstErr, err)
					}
				}
				if ok {
					decoded = strconv.FormatInt(n, 10)
					decodedSize = &n
				}
			}
			key = backupyKeyState(b)
		}
		if jsonl {
			if err := enc.Encode(backupyRecord(b, decodedSize, name)); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", b.Path, b.Kind, b.Size, decoded, b.State(), key, name)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return firstErr
}

func backupyFirst(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// backupyKeyState says how the object's key was found ("by-path",
// "by-run", "by-sha256", "by-trial"), "locked" without one, "-" when none
// is needed.
func backupyKeyState(b *backupy.Blob) string {
	if b.Kind != backupy.KindEncrypted {
		return "-"
	}
	if b.Locked() {
		return "locked"
	}
	return "by-" + b.KeyMatch()
}

func newBackupyCatCommand(e *env) *cobra.Command {
	var (
		kf  backupyKeyFlags
		zst bool
	)
	c := &cobra.Command{
		Use:   "cat [flags] FILE|s3://BUCKET/KEY",
		Short: "Write an object's decoded dump to standard output",
		Long: `Write an object's decoded dump to standard output: what backupy-decrypt (or zstd
-d, for an unencrypted object) would produce. The keys given are taken as meant
for this object: one that does not open it is reported as a frame that failed
authentication.`,
		Args: wantArgs(1, 1, "cat wants one object"),
		RunE: func(c *cobra.Command, args []string) error {
			return backupyCat(c.Context(), e, &kf, zst, args[0])
		},
	}
	kf.register(c.Flags())
	c.Flags().BoolVar(&zst, "zst", false, "write the decrypted zstd stream without decoding it")
	return c
}

func backupyCat(ctx context.Context, e *env, kf *backupyKeyFlags, zst bool, name string) error {
	opts, err := kf.options(e)
	if err != nil {
		return err
	}
	defer opts.Keys.Wipe()
	opts.Views = backupy.ViewZst
	// The keys are given for this object, as backupy-decrypt's token is
	// for its file: one that does not open it means damage (or a wrong
	// token), which is what the error then says, not "no key".
	opts.KeysGiven = true
	loc, err := location.Parse(name)
	if err != nil {
		return err
	}
	s3opts, err := kf.s3.options(e, backupyConfig{Dir: name})
	if err != nil {
		return err
	}
	s, b, err := location.OpenBackupyObject(ctx, loc, opts, s3opts)
	if err != nil {
		return repositoryError(err)
	}
	defer s.Close()
	if b.Kind == backupy.KindForeign {
		return fmt.Errorf("%s is not a Backupy object", name)
	}
	f, err := s.Main(ctx, b)
	if err != nil {
		if errors.Is(err, backupy.ErrLocked) {
			return fmt.Errorf("%w (give --token or --keyring)", err)
		}
		return err
	}
	if zst {
		if f, err = backupyZstView(ctx, s, b); err != nil {
			return err
		}
	}
	h, err := f.Open(ctx)
	if err != nil {
		return err
	}
	defer h.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		n, err := h.ReadAt(ctx, buf, off)
		if n > 0 {
			if _, werr := e.stdout.Write(buf[:n]); werr != nil {
				return fmt.Errorf("writing output: %w", werr)
			}
			off += int64(n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func backupyZstView(ctx context.Context, s *backupy.Store, b *backupy.Blob) (*backupy.File, error) {
	files, err := s.Files(ctx, b)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if f.Kind() == backupy.FileZst {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%s holds no zstd stream", b.Path)
}

func newBackupyImportTokenCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "import-token TOKEN...",
		Short: "Print keyring lines for decryption tokens",
		Long: `Print keyring lines for decryption tokens, to append to a keyring file. Each
TOKEN is a token itself, a file holding one, or - for standard input.`,
		Args: wantArgs(1, -1, "import-token wants at least one token"),
		RunE: func(c *cobra.Command, args []string) error {
			return backupyImportToken(e, args)
		},
	}
}

func backupyImportToken(e *env, pos []string) error {
	now := time.Now()
	stdinUsed := false
	for _, arg := range pos {
		text, source, err := backupyTokenText(arg, &stdinUsed)
		if err != nil {
			return err
		}
		t, err := backupy.ParseToken(text)
		if err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		for _, w := range t.Warnings(now) {
			e.log.Warn(fmt.Sprintf("%s: %s", source, w))
		}
		for _, line := range backupy.KeyringLines(t) {
			if _, err := fmt.Fprintln(e.stdout, line); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
		}
	}
	return nil
}

// backupyTokenText returns a token given literally, in a file, or on stdin
// ("-"). An argument that is not an existing file and has the shape of a
// JWT (three dot-separated segments, no path separator) is the token
// itself; its text never appears in errors.
func backupyTokenText(arg string, stdinUsed *bool) (text, source string, err error) {
	if arg == "-" {
		if *stdinUsed {
			return "", "", usageError("standard input given twice")
		}
		*stdinUsed = true
		b, err := untrusted.ReadAll(os.Stdin, "standard input", untrusted.Token)
		if err != nil {
			return "", "", fmt.Errorf("reading standard input: %w", err)
		}
		return string(b), "standard input", nil
	}
	b, err := untrusted.ReadFile(arg, untrusted.Token)
	if err == nil {
		return string(b), arg, nil
	}
	if strings.Count(arg, ".") == 2 && !strings.ContainsAny(arg, "/\\") {
		return arg, "token argument", nil
	}
	return "", "", fmt.Errorf("token file: %w", err)
}
