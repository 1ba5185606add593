package fs

// StatsFiles exposes statsFiles to the tests.
func (f *FS) StatsFiles() bool { return f.statsFiles() }
