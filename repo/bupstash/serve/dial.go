package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Command is how to start a server: ssh for an ssh:// URL, or the words
// of BUPSTASH_REPOSITORY_COMMAND.
type Command struct {
	Argv []string
	Env  []string // nil: this process's environment
	// Name is what messages call the repository: the URL, or the
	// command as the user wrote it.
	Name string
}

func (c Command) String() string { return c.Name }

// DialOptions tune a connection.
type DialOptions struct {
	// Protocol is the protocol to speak; 0 probes: "13" first, then
	// what the server says it wants.
	Protocol Protocol
	// Logger gets the server's stderr lines (debug) and warnings.
	Logger *slog.Logger
	// StallTimeout ends a connection that receives nothing for this long
	// while an answer is due (default DefaultStallTimeout).
	StallTimeout time.Duration
	// MaxPacket bounds a packet received (default MaxPacket).
	MaxPacket uint32
	// WarnSkew logs a warning when the server's clock differs from this
	// machine's by more than MaxClockSkew. Bupstash's own client refuses
	// such a server (it protects time-based removals); a reader has no
	// reason to.
	WarnSkew bool
}

// MaxClockSkew is the clock difference Bupstash refuses and this package
// warns about.
const MaxClockSkew = 15 * time.Minute

// Dial starts a server and opens its repository for reading.
func Dial(ctx context.Context, cmd Command, o DialOptions) (*Conn, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Protocol != 0 {
		return dial(ctx, cmd, o, o.Protocol)
	}
	c, err := dial(ctx, cmd, o, Protocol13)
	if err == nil {
		return c, nil
	}
	var se *ServerError
	if !errors.As(err, &se) || ctx.Err() != nil {
		return nil, err
	}
	if m := wantedRE.FindStringSubmatch(se.Line); m != nil {
		n, _ := strconv.Atoi(m[1])
		if Protocol(n) != Protocol11 {
			return nil, fmt.Errorf("%s: %w %d (%s): backupfs reads servers of bupstash 0.10 to 0.12", cmd.Name, ErrVersion, n, releaseOf(n))
		}
	} else if se.Line != "" || !errors.Is(err, ErrDisconnected) {
		return nil, err
	}
	// "wanted 11", or a server that said nothing at all (a wrapper that
	// swallows stderr): try the older protocol once.
	c, err11 := dial(ctx, cmd, o, Protocol11)
	if err11 != nil && se.Line == "" {
		return nil, err
	}
	return c, err11
}

// wantedRE finds the protocol a server wants in its refusal:
// "client and server protocol versions are incompatible, got 13, wanted 11".
var wantedRE = regexp.MustCompile(`protocol versions are incompatible, got \S+, wanted (\d+)`)

func releaseOf(protocol int) string {
	switch {
	case protocol <= 8:
		return "bupstash 0.9 or older"
	case protocol > 13:
		return "a bupstash newer than 0.12"
	}
	return "an unreleased bupstash"
}

func dial(ctx context.Context, cmd Command, o DialOptions, p Protocol) (*Conn, error) {
	log := o.Logger.With("server", cmd.Name)
	proc, err := startProcess(cmd.Argv, cmd.Env, func(line string) { serverSaid(log, line) })
	if err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", cmd.Name, cmd.Argv[0], err)
	}
	c := newConn(&procTransport{proc}, p, connConfig{name: cmd.Name, log: log, stall: o.StallTimeout, maxPacket: o.MaxPacket})
	if err := c.open(ctx); err != nil {
		c.fail(err)
		c.Close()
		return nil, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	if skew := time.Since(c.serverTime); o.WarnSkew && (skew > MaxClockSkew || skew < -MaxClockSkew) {
		log.Warn("the server's clock differs from this machine's by more than 15 minutes; bupstash itself refuses such servers, reading is not affected",
			"server_time", c.serverTime.UTC().Format(time.RFC3339), "difference", skew.Round(time.Second).String())
	}
	return c, nil
}

// serverSaid logs a line of the server's stderr: a schema upgrade,
// which changes the repository for good, as a warning.
func serverSaid(log *slog.Logger, line string) {
	if strings.Contains(line, "upgrading repository schema") {
		log.Warn("the server is upgrading the repository; older bupstash versions will not open it afterwards", "stderr", line)
		return
	}
	log.Debug("server stderr", "line", line)
}

// procTransport is a transport over a server process.
type procTransport struct{ p *process }

func (t *procTransport) in() io.WriteCloser { return t.p.stdin }
func (t *procTransport) out() io.ReadCloser { return t.p.stdout }
func (t *procTransport) kill()              { t.p.kill() }
func (t *procTransport) awaitExit(d time.Duration) (bool, error) {
	return t.p.awaitExit(d)
}
func (t *procTransport) stderrLine(d time.Duration) string { return t.p.stderr.line(d) }
func (t *procTransport) silence(d time.Duration)           { t.p.stderr.silence(d) }
