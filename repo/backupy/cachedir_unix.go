//go:build unix

package backupy

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock on the file name, held until
// the returned function is called or the process exits.
func lockDir(name string) (func(), error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLockBusy
		}
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// ownedByOther reports whether a file belongs to another user, so that
// this process (not root) cannot change its mode.
func ownedByOther(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && os.Geteuid() != 0 && int(st.Uid) != os.Geteuid()
}
