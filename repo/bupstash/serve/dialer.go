package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errDialBackoff marks the error of a dial not attempted: the last one
// failed moments ago.
var errDialBackoff = errors.New("not reconnecting yet")

// errDial marks the failure of a dial: a read that failed so is not
// retried (the next dial waits for the backoff).
var errDial = errors.New("connecting")

// errBeginPull marks a failure to open a pull session on a connection
// that otherwise works.
var errBeginPull = errors.New("opening a pull session")

// dialer starts a Source's connections. The first probes the protocol;
// the others speak what it found. After a failed dial, further dials
// wait (1 s, doubling up to maxBackoff), and fail at once meanwhile with
// the last failure: reads do not queue behind a server that is down.
type dialer struct {
	s *Source

	mu       sync.Mutex
	proto    Protocol
	failures int
	next     time.Time
	lastErr  error

	// spare is a connection dialled ahead of the first data read
	// (Options.Warm): it holds no lock until a pull session is opened on
	// it, and saves that read the ssh handshake. spareDialling is closed
	// when the dial under way ends.
	spare         *Conn
	spareAt       time.Time
	spareDialling chan struct{}
}

// warm dials a spare connection in the background.
func (d *dialer) warm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.spare != nil || d.spareDialling != nil {
		return
	}
	ch := make(chan struct{})
	if !d.s.spawn(func() {
		c, err := d.dialFresh(d.s.ctx)
		d.mu.Lock()
		d.spareDialling = nil
		if err == nil {
			if d.s.closed.Load() {
				go closeConn(c)
			} else {
				d.spare, d.spareAt = c, time.Now()
			}
		}
		close(ch)
		d.mu.Unlock()
	}) {
		return
	}
	d.spareDialling = ch
}

// takeSpare returns the spare connection, waiting for one being dialled;
// nil if there is none (or it broke).
func (d *dialer) takeSpare(ctx context.Context) *Conn {
	d.mu.Lock()
	ch := d.spareDialling
	d.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.spare
	d.spare = nil
	if c != nil && c.Err() != nil {
		go c.Close()
		return nil
	}
	return c
}

// takeIdleSpare removes the spare if it waited since before cutoff, for
// the caller to close; all of it with a zero cutoff.
func (d *dialer) takeIdleSpare(cutoff time.Time) *Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.spare
	if c == nil || (!cutoff.IsZero() && d.spareAt.After(cutoff)) {
		return nil
	}
	d.spare = nil
	return c
}

const maxBackoff = 30 * time.Second

// protocol returns the protocol found, 0 before the first connection.
func (d *dialer) protocol() Protocol {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.proto
}

// dial returns the spare connection, or starts one. It gives up when
// ctx or the Source ends.
func (d *dialer) dial(ctx context.Context) (*Conn, error) {
	if c := d.takeSpare(ctx); c != nil {
		return c, nil
	}
	return d.dialFresh(ctx)
}

// dialFresh starts a connection.
func (d *dialer) dialFresh(ctx context.Context) (*Conn, error) {
	s := d.s
	d.mu.Lock()
	if d.lastErr != nil && time.Now().Before(d.next) {
		err := d.lastErr
		d.mu.Unlock()
		return nil, &dialError{fmt.Errorf("%w (%w, next attempt in %v): %w", ErrUnavailable, errDialBackoff, time.Until(d.next).Round(100*time.Millisecond), err)}
	}
	o := s.opts.Dial
	o.Protocol = d.proto
	// The clock is the server's: warned about once, not per connection.
	o.WarnSkew = o.WarnSkew && d.proto == 0
	d.mu.Unlock()

	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	s.stats.dials.Add(1)
	c, err := Dial(dctx, s.cmd, o)

	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil || s.ctx.Err() != nil {
			return nil, err
		}
		d.failures++
		d.next = time.Now().Add(min(time.Second<<min(d.failures-1, 5), maxBackoff))
		d.lastErr = err
		return nil, &dialError{err}
	}
	d.failures, d.lastErr = 0, nil
	d.proto = c.Protocol()
	return c, nil
}

// dialError is a failed dial: its message is the failure's, and it is
// errDial too.
type dialError struct{ err error }

func (e *dialError) Error() string   { return e.err.Error() }
func (e *dialError) Unwrap() []error { return []error{e.err, errDial} }

// spawn runs f on a goroutine that Close waits for, unless the Source
// is closed.
func (s *Source) spawn(f func()) bool {
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}
