package backupy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// matJob decodes one object into its data file in the cache directory and
// publishes its progress (the high-water mark). Every handle of the object
// shares it. Reads below the mark are preads of the file; reads above it
// wait for the job.
//
// A job lives in diskCache.jobs while handles hold it or it runs. Its data
// file is evicted only when neither is the case.
type matJob struct {
	dc *diskCache
	b  *Blob
	id string

	// guarded by dc.mu
	refs    int
	running bool

	// guarded by mu
	mu      chan struct{} // a one-slot semaphore, so waiting can be cancelled
	changed chan struct{} // closed and replaced whenever the state below changes
	file    *os.File      // the data file, nil until first needed
	hwm     int64         // bytes of the file that are final
	done    bool          // hwm is the whole decoded size
	err     error         // why the last run stopped, nil while it goes on
}

func (j *matJob) lock()   { j.mu <- struct{}{} }
func (j *matJob) unlock() { <-j.mu }

// acquireJob returns the object's job, creating it (and adopting a
// complete data file from an earlier run or mount) if needed, and counts
// the caller as a user until releaseJob.
func (dc *diskCache) acquireJob(b *Blob) (*matJob, error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.closed || b.store.diskClosed {
		return nil, ErrClosed
	}
	j := dc.jobs[b.id]
	if j == nil {
		j = &matJob{dc: dc, b: b, id: b.id, mu: make(chan struct{}, 1), changed: make(chan struct{})}
		if e := dc.entries[b.id]; e != nil && e.Cached > 0 {
			if f, err := os.Open(dc.dataPath(b.id)); err == nil {
				if fi, err := f.Stat(); err == nil && fi.Size() == e.Cached {
					j.file, j.hwm, j.done = f, e.Cached, true
				} else {
					f.Close()
					e.Cached = 0
				}
			} else {
				e.Cached = 0
			}
		}
		dc.jobs[b.id] = j
	}
	j.refs++
	dc.entryLocked(b) // records the use
	return j, nil
}

// releaseJob drops a user. The last user of an idle job closes its file;
// an incomplete file is removed, a complete one becomes evictable.
func (dc *diskCache) releaseJob(j *matJob) {
	dc.mu.Lock()
	j.refs--
	idle := j.refs == 0 && !j.running
	if idle && dc.jobs[j.id] == j {
		delete(dc.jobs, j.id)
	}
	dc.mu.Unlock()
	if idle {
		j.retire()
	}
}

// retire closes an idle job's file and evicts if the cache is over budget.
func (j *matJob) retire() {
	j.closeFile()
	if !j.isDone() {
		os.Remove(j.dc.dataPath(j.id))
	}
	j.dc.evict()
}

func (j *matJob) closeFile() {
	j.lock()
	defer j.unlock()
	if j.file != nil {
		j.file.Close()
		j.file = nil
	}
}

func (j *matJob) isDone() bool {
	j.lock()
	defer j.unlock()
	return j.done
}

// publish wakes every waiter. The caller holds j.mu.
func (j *matJob) publish() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// start runs the job unless it is done, running, or failed for good. It
// reports whether the job is running, so that a waiter knows a wake-up
// will come.
func (j *matJob) start() bool {
	j.dc.mu.Lock()
	defer j.dc.mu.Unlock()
	if j.running {
		return true
	}
	s := j.b.store
	if j.dc.closed || s.diskClosed {
		return false
	}
	j.lock()
	startable := !j.done && !errors.Is(j.err, ErrCorrupt)
	if startable {
		j.err = nil
	}
	j.unlock()
	if !startable {
		return false
	}
	j.running = true
	s.jobs.Add(1)
	go j.run(s.ctx)
	return true
}

// stalled returns why a job that cannot be started will make no progress,
// or nil if it is done after all.
func (j *matJob) stalled() error {
	j.dc.mu.Lock()
	closed := j.dc.closed || j.b.store.diskClosed
	j.dc.mu.Unlock()
	if closed {
		return ErrClosed
	}
	j.lock()
	defer j.unlock()
	switch {
	case j.done:
		return nil
	case j.err != nil:
		return j.err
	}
	return ErrClosed
}

// run decodes the object into the data file. A restarted job (after an
// I/O error or a cancelled store) decodes from the start again but keeps
// the bytes already written: decoding is deterministic, so they are final.
func (j *matJob) run(ctx context.Context) {
	defer j.b.store.jobs.Done()
	err := j.decode(ctx)

	// Both locks at once: a waiter woken by publish must find the job
	// stopped, or its restart would wait for a wake-up that never comes.
	j.dc.mu.Lock()
	j.lock()
	j.err = err
	j.running = false
	done, size := j.done, j.hwm
	j.publish()
	j.unlock()
	if done {
		e := j.dc.entryLocked(j.b)
		e.Cached = size
	}

	idle := j.refs == 0
	if idle && j.dc.jobs[j.id] == j {
		delete(j.dc.jobs, j.id)
	}
	j.dc.mu.Unlock()
	if errors.Is(err, ErrCorrupt) {
		j.b.dmg.noteGoodDecoded(size)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrReplaced) && !errors.Is(err, errCacheFull) && !errors.Is(err, context.Canceled) {
		j.dc.log.Warn("backupy: decoding into the cache failed", "object", j.b.Path, "err", err)
	}
	if done {
		j.dc.save()
	}
	if idle {
		j.retire()
	} else if done {
		j.dc.evict()
	}
}

const copyChunk = 1 << 20

func (j *matJob) decode(ctx context.Context) error {
	if err := j.dc.private(); err != nil {
		return err
	}
	j.lock()
	if j.file == nil {
		f, err := os.OpenFile(j.dc.dataPath(j.id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			j.unlock()
			return fmt.Errorf("backupy: cache file for %s: %w", j.b.Path, err)
		}
		j.file = f
	}
	f, skip := j.file, j.hwm
	j.unlock()

	pass, err := j.b.newPass(ctx)
	if err != nil {
		return err
	}
	defer pass.Close()
	buf := make([]byte, copyChunk)
	var pos int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := pass.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if pos < skip {
				drop := min(int64(n), skip-pos)
				chunk = chunk[drop:]
				pos += drop
			}
			if len(chunk) > 0 {
				if err := j.write(f, chunk, pos); err != nil {
					return err
				}
				pos += int64(len(chunk))
				j.lock()
				j.hwm = pos
				j.publish()
				j.unlock()
			}
		}
		if rerr == io.EOF {
			j.lock()
			j.hwm, j.done = pos, true
			j.unlock()
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// jobState is what a job has published.
type jobState struct {
	hwm  int64
	done bool
	file *os.File
}

// await returns the job's state once ready says it will do, starting
// the job as needed. When a run fails, one new demand restarts it (an
// I/O error may pass), unless the object is corrupt; a second failure,
// or corruption, is returned with the state it left.
func (j *matJob) await(ctx context.Context, ready func(jobState) bool) (jobState, error) {
	restarted := false
	for {
		select {
		case j.mu <- struct{}{}:
		case <-ctx.Done():
			return jobState{}, context.Cause(ctx)
		}
		st, jerr, changed := jobState{j.hwm, j.done, j.file}, j.err, j.changed
		j.unlock()
		if ready(st) {
			return st, nil
		}
		if jerr != nil {
			if restarted || errors.Is(jerr, ErrCorrupt) {
				return st, jerr
			}
			restarted = true
		}
		if !j.start() {
			if err := j.stalled(); err != nil {
				return st, err
			}
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return jobState{}, context.Cause(ctx)
		}
	}
}

// write writes decoded bytes to the data file. On a full disk it evicts
// the decoded files of other objects no handle uses, least recently used
// first, and tries again; when nothing is left to evict the decode fails
// with errCacheFull, which readers see as EIO.
func (j *matJob) write(f *os.File, p []byte, off int64) error {
	for {
		_, err := f.WriteAt(p, off)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT):
			return fmt.Errorf("backupy: writing cache file for %s: %w", j.b.Path, err)
		case !j.dc.evictOne(j.id):
			// The errno is not wrapped: a full cache is not the reader's
			// disk being full.
			return fmt.Errorf("backupy: %s: %w (%v)", j.b.Path, errCacheFull, err)
		}
	}
}

// readAt reads decoded bytes at off, waiting for the job when they are not
// decoded yet. It starts the job if needed. Like io.ReaderAt it returns
// io.EOF when fewer than len(p) bytes remain.
func (j *matJob) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	st, err := j.await(ctx, func(st jobState) bool { return end <= st.hwm || st.done })
	if err != nil {
		return 0, err
	}
	// The file stays open while the caller holds the job.
	if off >= st.hwm {
		return 0, io.EOF
	}
	want := min(int64(len(p)), st.hwm-off)
	n, err := st.file.ReadAt(p[:want], off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("backupy: reading cache file for %s: %w", j.b.Path, err)
	}
	return n, err
}

// wait blocks until the job is done and returns the decoded size. If the
// object is corrupt, it returns the error with how much was decoded before
// the damage.
func (j *matJob) wait(ctx context.Context) (int64, error) {
	st, err := j.await(ctx, func(st jobState) bool { return st.done })
	switch {
	case err == nil:
		return st.hwm, nil
	case errors.Is(err, ErrCorrupt):
		return st.hwm, err
	}
	return 0, err
}
