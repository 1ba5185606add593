package main

// The Backupy settings the environment gives: the library reads no
// environment variables, so the command line works them out here (the
// default cache directory is defaultBackupyCacheDir's, in config.go).

// envBackupyKeyring names the keyring file used when no --keyring (or
// --backupy-keyring, or config keyrings) is given.
const envBackupyKeyring = "BACKUPFS_BACKUPY_KEYRING"

// envKeyrings returns the environment's keyring file, if it names one.
func envKeyrings(e *env) []string {
	if f := e.getenv(envBackupyKeyring); f != "" {
		return []string{f}
	}
	return nil
}
