package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupfs/backupfs/cache"
	"github.com/backupfs/backupfs/repo/bupstash"
)

// Source is a repository behind `bupstash serve`, as a bupstash.Source:
// the item list replayed from the server's operation log, and chunks
// fetched on demand over a few connections.
//
// Connections, each one `bupstash serve` process:
//
//   - a control connection for the operation log, re-synced
//     incrementally at most every Options.Refresh;
//   - on servers of protocol 13 that allow get: pull sessions, which
//     fetch any chunk by address, several requests in flight on each;
//   - otherwise (protocol 11, or pull refused): partial-data cursors,
//     one item's data tree each, fed single-leaf requests moving
//     forward, and whole-index streams (RequestIndex) for file trees.
//
// A pull session holds a shared lock on the server's repository, which
// keeps `bupstash gc` waiting: data connections are closed once idle for
// Options.IdleClose, so none is held while nothing is being read. A
// connection that breaks is re-established (with backoff once dialling
// fails) and the reads it carried are retried once. What the server said
// on stderr names every failure.
type Source struct {
	cmd  Command
	opts Options
	log  *slog.Logger

	ctx     context.Context // ends at Close: dials and background work
	cancel  context.CancelFunc
	closed  atomic.Bool
	spawnMu sync.Mutex     // orders spawn against Close
	wg      sync.WaitGroup // background goroutines (spawn)

	dialer dialer

	// Listing. listMu serialises syncs (and guards items and ctl);
	// stateMu guards what Changed reads, so that it never waits for a
	// sync.
	listMu  sync.Mutex
	items   ItemLog
	ctl     *Conn
	ctlUsed time.Time

	stateMu  sync.Mutex
	token    string
	lastSync time.Time
	resync   bool // a read found a chunk missing: the list may be stale

	// Data.
	held    *window
	flights flights
	pulls   *pullPool
	cursors *cursorPool
	streams *streamPool
	access  accessState

	stats sourceStats
}

var (
	_ bupstash.Source          = (*Source)(nil)
	_ bupstash.ChunkRejecter   = (*Source)(nil)
	_ bupstash.ChunkPrefetcher = (*Source)(nil)
)

// ChunkCache keeps chunks as the server sent them, across reads and
// mounts (package cache/sealed). Chunks in it are verified when used,
// like any the server sends.
type ChunkCache interface {
	Get(addr [32]byte, pool *cache.BufferPool) ([]byte, bool)
	Contains(addr [32]byte) bool
	Put(addr [32]byte, b []byte)
	Remove(addr [32]byte)
}

// Options configure Open.
type Options struct {
	// Dial tunes each connection; its Logger is the Source's.
	Dial DialOptions
	// Refresh is how often, at most, the item list is synced with the
	// server (DefaultRefresh).
	Refresh time.Duration
	// IdleClose closes a data connection that carried nothing for this
	// long (DefaultIdleClose).
	IdleClose time.Duration
	// Connections bounds the data connections of each kind: pull
	// sessions, partial-data cursors, index streams
	// (DefaultConnections).
	Connections int
	// Cache keeps fetched chunks on disk; nil keeps none.
	Cache ChunkCache
	// Window bounds the bytes of chunks fetched ahead of their readers
	// that are held in memory when there is no Cache
	// (DefaultWindow). They are taken from the pool the reader passes,
	// and so count against the chunk cache's bound.
	Window int64
	// NoPull never opens pull sessions, so that the server's repository
	// lock is never held (reads go through partial-data requests).
	NoPull bool
	// Warm dials a spare connection at Open, alongside the control
	// connection, for the first data read (a mount's): it holds no lock,
	// and is closed after IdleClose if no read comes.
	Warm bool
}

// Defaults of Options.
const (
	DefaultRefresh     = 5 * time.Second
	DefaultIdleClose   = 30 * time.Second
	DefaultConnections = 2
	DefaultWindow      = 32 << 20
)

// Open starts a connection to the server cmd runs, syncs the item list
// once (so that a server that refuses this client says so now), and
// returns the repository as a Source.
func Open(ctx context.Context, cmd Command, o Options) (*Source, error) {
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.IdleClose <= 0 {
		o.IdleClose = DefaultIdleClose
	}
	if o.Connections <= 0 {
		o.Connections = DefaultConnections
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Dial.Logger == nil {
		o.Dial.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{cmd: cmd, opts: o, log: o.Dial.Logger.With("repo", cmd.Name)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.dialer = dialer{s: s}
	s.held = newWindow(o.Window)
	s.pulls = &pullPool{s: s}
	s.cursors = &cursorPool{s: s}
	s.streams = &streamPool{s: s}

	if o.Warm {
		s.dialer.warm()
	}
	s.listMu.Lock()
	err := s.syncLocked(ctx)
	s.listMu.Unlock()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.announce()
	s.spawn(s.janitor)
	return s, nil
}

// announce says which server was found and what it cannot do.
func (s *Source) announce() {
	switch p := s.dialer.protocol(); {
	case p < Protocol13:
		s.log.Info("bupstash 0.10 server (protocol 11): no fetch by address; reading through partial requests, file trees as whole streams")
	case s.opts.NoPull:
		s.log.Info("bupstash 0.11 or 0.12 server (protocol 13); pull sessions off: reading through partial requests")
	default:
		s.log.Info("bupstash 0.11 or 0.12 server (protocol 13): chunks fetched by address")
	}
}

// String returns the URL or command, as the user wrote it.
func (s *Source) String() string { return s.cmd.Name }

// Protocol returns the protocol the server speaks.
func (s *Source) Protocol() Protocol { return s.dialer.protocol() }

// Close ends every connection: idle ones politely, busy ones at once,
// in parallel; when it returns no server process of this Source is left.
func (s *Source) Close() error {
	s.spawnMu.Lock()
	already := s.closed.Swap(true)
	s.spawnMu.Unlock()
	if already {
		return nil
	}
	s.cancel()
	var conns []*Conn
	s.listMu.Lock()
	if s.ctl != nil {
		conns = append(conns, s.ctl)
		s.ctl = nil
	}
	s.listMu.Unlock()
	if c := s.dialer.takeIdleSpare(time.Time{}); c != nil {
		conns = append(conns, c)
	}
	conns = append(conns, s.pulls.takeAll()...)
	conns = append(conns, s.cursors.takeAll()...)
	conns = append(conns, s.streams.takeAll()...)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closeConn(c)
		}()
	}
	wg.Wait()
	s.wg.Wait()
	s.held.clear()
	st := s.Stats()
	s.log.Info("remote repository closed", "connections", st.Dials, "requests", st.Requests,
		"chunks_fetched", st.Fetched, "bytes_fetched", st.FetchedBytes, "cache_hits", st.CacheHits)
	return nil
}

// closeConn ends a connection: politely when nothing is pending, at once
// otherwise (Close would wait for answers nobody wants any more).
func closeConn(c *Conn) {
	if c.pending() > 0 {
		c.fail(ErrClosed)
	}
	c.Close()
}

// Changed reports whether Items may have something new: the token is
// not the current one, or a sync is due. It never talks to the server.
func (s *Source) Changed(_ context.Context, token string) (bool, error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return token != s.token || s.resync || time.Since(s.lastSync) >= s.opts.Refresh, nil
}

// Items syncs the item list when a sync is due and returns the live
// items. While the server cannot be reached it fails with an error
// matching bupstash.ErrUnavailable; the caller keeps what it had.
func (s *Source) Items(ctx context.Context, known func(bupstash.Xid) bool) (*bupstash.ItemSet, error) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	s.stateMu.Lock()
	due := s.resync || time.Since(s.lastSync) >= s.opts.Refresh
	s.stateMu.Unlock()
	if due {
		if err := s.syncLocked(ctx); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			if !errors.Is(err, bupstash.ErrUnavailable) && !errors.Is(err, bupstash.ErrPermission) {
				err = fmt.Errorf("%w: %w", bupstash.ErrUnavailable, err)
			}
			return nil, err
		}
	}
	set := &bupstash.ItemSet{Token: s.items.Token()}
	for _, it := range s.items.Live() {
		raw := bupstash.RawItem{ID: it.ID}
		if known == nil || !known(it.ID) {
			raw.Meta = it.Meta
		}
		set.Items = append(set.Items, raw)
	}
	return set, nil
}

// syncLocked brings the item log up to date on the control connection,
// dialling it if needed; a connection that turns out broken is replaced
// once. s.listMu is held.
func (s *Source) syncLocked(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if s.ctl == nil || s.ctl.Err() != nil {
			if s.ctl != nil {
				go s.ctl.Close()
				s.ctl = nil
			}
			// Not the spare: it is kept for the first data read.
			c, err := s.dialer.dialFresh(ctx)
			if err != nil {
				return err
			}
			s.ctl = c
		}
		s.ctlUsed = time.Now()
		s.stats.requests.Add(1)
		_, err := s.items.Sync(ctx, s.ctl)
		s.ctlUsed = time.Now()
		if err == nil {
			s.stateMu.Lock()
			s.token, s.lastSync, s.resync = s.items.Token(), time.Now(), false
			s.stateMu.Unlock()
			return nil
		}
		if ctx.Err() != nil || s.ctl.Err() == nil || attempt > 0 || errors.Is(err, ErrPermission) {
			return fmt.Errorf("%s: listing items: %w", s.cmd.Name, err)
		}
		// The connection broke (an idle ssh connection dropped, say):
		// once more on a new one.
	}
}

// wantResync makes the next Items sync, whatever the interval: a chunk
// the server does not have means items may have been collected.
func (s *Source) wantResync() {
	s.stateMu.Lock()
	s.resync = true
	s.stateMu.Unlock()
}

// janitor closes connections idle for longer than IdleClose.
func (s *Source) janitor() {
	tick := min(max(s.opts.IdleClose/4, 20*time.Millisecond), 5*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-s.opts.IdleClose)
		idle := s.pulls.takeIdle(cutoff)
		idle = append(idle, s.cursors.takeIdle(cutoff)...)
		idle = append(idle, s.streams.takeIdle(cutoff)...)
		if c := s.dialer.takeIdleSpare(cutoff); c != nil {
			idle = append(idle, c)
		}
		if s.listMu.TryLock() {
			if s.ctl != nil && s.ctlUsed.Before(cutoff) {
				idle = append(idle, s.ctl)
				s.ctl = nil
			}
			s.listMu.Unlock()
		}
		for _, c := range idle {
			s.log.Debug("closing an idle connection")
			closeConn(c)
		}
	}
}

// Stats are a Source's counters since Open.
type Stats struct {
	Dials        int64 // connections started
	Requests     int64 // requests that expect an answer (oplog syncs, chunk requests, index streams)
	Fetched      int64 // chunks received from the server
	FetchedBytes int64 // their bytes, as stored
	CacheHits    int64 // chunks served from the disk cache
	Retries      int64 // reads retried on a new connection
}

type sourceStats struct {
	dials, requests, fetched, fetchedBytes, cacheHits, retries atomic.Int64
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{
		Dials: s.stats.dials.Load(), Requests: s.stats.requests.Load(),
		Fetched: s.stats.fetched.Load(), FetchedBytes: s.stats.fetchedBytes.Load(),
		CacheHits: s.stats.cacheHits.Load(), Retries: s.stats.retries.Load(),
	}
}
