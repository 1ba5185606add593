// Package untrusted reads files the program did not write: repository
// metadata, keys, configuration, tokens and keyrings. Such a file may be
// anything a path can name: a FIFO that blocks the reader forever, a
// device that never ends (/dev/zero), a sparse file of terabytes, a
// symlink to any of them, or a regular file that grows while it is read.
//
// Open never blocks and refuses everything but regular files; ReadFile
// also refuses a file larger than a limit before allocating, and reads
// with that limit even so. The limits for each kind of file the project
// reads are named together in limits.go.
package untrusted

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Errors for files refused. Both are wrapped in a *fs.PathError naming
// the file.
var (
	// ErrNotRegular reports a FIFO, device, socket or directory where a
	// regular file was expected.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge reports a file over its kind's size limit.
	ErrTooLarge = errors.New("file too large")
	// ErrNotDir reports something other than a directory where OpenDir
	// expected one.
	ErrNotDir = errors.New("not a directory")
)

// Open opens name for reading without blocking (a FIFO without a writer
// would otherwise block the open itself) and returns it with its
// attributes, taken from the open descriptor, so what was checked is
// what is read. Anything but a regular file is refused with ErrNotRegular.
// Symlinks are followed: keys and repositories are often reached through
// them; what they lead to is checked like anything else.
func Open(name string) (*os.File, fs.FileInfo, error) {
	fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, describe(fi.Mode()))}
	}
	// Regular files never block; clearing O_NONBLOCK keeps reads plain.
	if err := syscall.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, fi, nil
}

// ReadFile returns the contents of the regular file name if it holds at
// most limit bytes. The size is checked before anything is allocated, and
// the read stops past limit even if the file grew meanwhile.
func ReadFile(name string, limit int64) ([]byte, error) {
	f, fi, err := Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, name, fi.Size(), limit)
}

// ReadAll reads r to its end if it yields at most limit bytes, for
// streams that have no size to check first (a command's output, stdin).
func ReadAll(r io.Reader, name string, limit int64) ([]byte, error) {
	return readLimited(r, name, 0, limit)
}

func readLimited(r io.Reader, name string, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, tooLarge(name, size, limit)
	}
	// Grow as the bytes arrive, from the stated size: a file that lies
	// about its size (procfs, a file being truncated) costs what it
	// really holds.
	b := make([]byte, 0, min(size, limit)+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):min(cap(b), int(limit)+1)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, tooLarge(name, -1, limit)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
	}
}

func tooLarge(name string, size, limit int64) error {
	if size < 0 {
		return &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: more than %s", ErrTooLarge, FormatSize(limit))}
	}
	return &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: %s, over the limit of %s", ErrTooLarge, FormatSize(size), FormatSize(limit))}
}

// describe names a file type for messages.
func describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	}
	return "not a plain file"
}

// FormatSize writes a byte count the way messages show sizes: 3 GiB,
// 512 KiB, 17 bytes.
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	suffixes := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n)/unit, 0
	for v >= unit && i < len(suffixes)-1 {
		v /= unit
		i++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), suffixes[i])
	}
	return fmt.Sprintf("%.1f %s", v, suffixes[i])
}

// OpenDir opens the directory name for listing, without blocking: a FIFO
// or device in its place is refused (ErrNotDir), never opened.
func OpenDir(name string) (*os.File, error) {
	fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOTDIR) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotDir}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}
