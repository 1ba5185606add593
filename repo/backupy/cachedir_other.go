//go:build !unix

package backupy

import "io/fs"

// lockDir cannot lock on this system; every store then owns the cache
// directory, which is safe as long as one mount uses it at a time.
func lockDir(string) (func(), error) { return func() {}, nil }

// ownedByOther cannot tell on this system; changing the mode will say.
func ownedByOther(fs.FileInfo) bool { return false }
