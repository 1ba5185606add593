package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backupfs/backupfs/repo/backupy"
)

const backupyUsage = `usage:
  backupfs backupy ls [key flags] [--sizes] DIR
      one line per object: path, kind, ciphertext size, decoded size, state, key
  backupfs backupy cat [key flags] [--zst] OBJECT
      write the decoded dump to standard output (what backupy-decrypt, or
      zstd -d for an unencrypted object, would produce)
  backupfs backupy import-token JWT|FILE|- ...
      print keyring lines for decryption tokens (append them to a keyring)

key flags:
  --token FILE      decryption token (JWT) file, repeatable; - reads stdin
  --token-dir DIR   directory of *.jwt and *.token files, repeatable
  --keyring FILE    keyring file, repeatable (default $` + backupy.EnvKeyring + `)
  --strict-token    refuse expired tokens
  --cache-dir DIR   decoded-file cache and size index
  --verbose         log progress and key matching to standard error
`

// runBackupy runs "backupfs backupy SUBCOMMAND ...". Errors come back as
// one line for the dispatcher to print; command-line mistakes wrap
// errUsage, and -h returns flag.ErrHelp after printing the usage.
func runBackupy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, backupyUsage)
		return fmt.Errorf("%w: want a subcommand: ls, cat or import-token", errUsage)
	}
	switch args[0] {
	case "ls":
		return backupyLs(ctx, args[1:], stdout, stderr)
	case "cat":
		return backupyCat(ctx, args[1:], stdout, stderr)
	case "import-token":
		return backupyImportToken(args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stderr, backupyUsage)
		return flag.ErrHelp
	}
	return fmt.Errorf("%w: unknown subcommand %q (want ls, cat or import-token)", errUsage, args[0])
}

// backupyList collects a repeatable string flag.
type backupyList []string

func (l *backupyList) String() string     { return strings.Join(*l, ",") }
func (l *backupyList) Set(v string) error { *l = append(*l, v); return nil }

// backupyKeyFlags are the flags of every subcommand that opens objects.
type backupyKeyFlags struct {
	tokens, tokenDirs, keyrings backupyList
	strict, verbose             bool
	cacheDir                    string
}

func (k *backupyKeyFlags) register(fs *flag.FlagSet) {
	fs.Var(&k.tokens, "token", "decryption token file (repeatable; - = stdin)")
	fs.Var(&k.tokenDirs, "token-dir", "directory of *.jwt / *.token files (repeatable)")
	fs.Var(&k.keyrings, "keyring", "keyring file (repeatable)")
	fs.BoolVar(&k.strict, "strict-token", false, "refuse expired tokens")
	fs.BoolVar(&k.verbose, "verbose", false, "log to standard error")
	fs.StringVar(&k.cacheDir, "cache-dir", "", "cache directory")
}

// options loads the keys and builds store options. Warnings (expired
// tokens, a keyring readable by others) go to stderr.
func (k *backupyKeyFlags) options(stderr io.Writer) (backupy.Options, error) {
	level := slog.LevelWarn
	if k.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	keys, err := backupy.LoadKeys(backupy.KeySources{
		TokenFiles:   k.tokens,
		TokenDirs:    k.tokenDirs,
		KeyringFiles: k.keyrings,
		Stdin:        os.Stdin,
		StrictToken:  k.strict,
	}, log)
	if err != nil {
		return backupy.Options{}, err
	}
	return backupy.Options{Logger: log, Keys: keys, CacheDir: k.cacheDir}, nil
}

// backupyParse parses flags (before or after the operand) and returns the
// one operand.
func backupyParse(name string, fs *flag.FlagSet, args []string, stderr io.Writer, operand string) (string, error) {
	fs.Usage = func() { fmt.Fprint(stderr, backupyUsage) }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
		}
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%w: %s wants one %s", errUsage, name, operand)
	}
	return pos[0], nil
}

func backupyLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backupy ls", flag.ContinueOnError)
	var kf backupyKeyFlags
	kf.register(fs)
	sizes := fs.Bool("sizes", false, "decode objects whose size is not known yet (slow)")
	dir, err := backupyParse("ls", fs, args, stderr, "directory")
	if err != nil {
		return err
	}
	opts, err := kf.options(stderr)
	if err != nil {
		return err
	}
	defer opts.Keys.Wipe()
	s, err := backupy.OpenStore(ctx, dir, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tKIND\tSIZE\tDECODED\tSTATE\tKEY\tFILE")
	var firstErr error
	for _, b := range s.Blobs() {
		decoded, key, name := "?", "-", "?"
		if files, err := s.Files(ctx, b); err != nil {
			firstErr = backupyFirst(firstErr, err)
		} else {
			name = files[0].Name()
			if main, err := s.Main(ctx, b); err == nil {
				n, ok := main.SizeKnown()
				if !ok && *sizes && b.Corrupt() == nil {
					if n, err = main.Size(ctx); err == nil {
						ok = true
					} else if !errors.Is(err, backupy.ErrCorrupt) {
						firstErr = backupyFirst(firstErr, err)
					}
				}
				if ok {
					decoded = strconv.FormatInt(n, 10)
				}
			}
			key = backupyKeyState(b)
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

func backupyCat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backupy cat", flag.ContinueOnError)
	var kf backupyKeyFlags
	kf.register(fs)
	zst := fs.Bool("zst", false, "write the decrypted zstd stream without decoding it")
	name, err := backupyParse("cat", fs, args, stderr, "object")
	if err != nil {
		return err
	}
	opts, err := kf.options(stderr)
	if err != nil {
		return err
	}
	defer opts.Keys.Wipe()
	opts.Views = backupy.ViewZst
	// The keys are given for this object, as backupy-decrypt's token is
	// for its file: one that does not open it means damage (or a wrong
	// token), which is what the error then says, not "no key".
	opts.KeysGiven = true
	s, b, err := backupy.OpenFile(ctx, name, opts)
	if err != nil {
		return err
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
	if *zst {
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
			if _, werr := stdout.Write(buf[:n]); werr != nil {
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

func backupyImportToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backupy import-token", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, backupyUsage) }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
		}
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: import-token wants at least one token", errUsage)
	}
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
			fmt.Fprintf(stderr, "backupfs backupy import-token: %s: %s\n", source, w)
		}
		for _, line := range backupy.KeyringLines(t) {
			if _, err := fmt.Fprintln(stdout, line); err != nil {
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
			return "", "", fmt.Errorf("%w: standard input given twice", errUsage)
		}
		*stdinUsed = true
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		if err != nil {
			return "", "", fmt.Errorf("reading standard input: %w", err)
		}
		return string(b), "standard input", nil
	}
	b, err := os.ReadFile(arg)
	if err == nil {
		return string(b), arg, nil
	}
	if strings.Count(arg, ".") == 2 && !strings.ContainsAny(arg, "/\\") {
		return arg, "token argument", nil
	}
	return "", "", fmt.Errorf("token file: %w", err)
}
