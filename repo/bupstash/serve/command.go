package serve

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/backupfs/backupfs/internal/shellwords"
)

// SSHOptions tune the ssh command an ssh:// URL becomes.
type SSHOptions struct {
	// Program is the ssh client (default "ssh", found on PATH), so that
	// the user's ~/.ssh/config, agent, jump hosts and ControlMaster
	// apply.
	Program string
	// Options are passed as `-o OPTION` each, after backupfs's own.
	Options []string
	// AliveInterval is ssh's ServerAliveInterval (default 15 s): the
	// serve protocol has no keepalive of its own.
	AliveInterval time.Duration
}

// IsSSHURL reports whether repo names a remote repository by URL.
func IsSSHURL(repo string) bool { return strings.HasPrefix(repo, "ssh://") }

// SSHCommand turns ssh://[user@]host[:port][/path] into the command that
// runs `bupstash serve` there:
//
//	ssh -T -o BatchMode=yes -o ServerAliveInterval=15 [-p port] [-o User=user] [options] -- host bupstash serve 'path'
//
// Unlike Bupstash: -T (a terminal would corrupt the stream), BatchMode (a
// mount cannot answer prompts), a port is a port (Bupstash passes
// "host:port" to ssh as a host name), a host starting with '-' is
// refused (ssh would take it as an option), and the path is quoted for
// the remote shell, which otherwise splits and expands it. An empty path
// leaves the command to the server's ForceCommand.
func SSHCommand(rawURL string, o SSHOptions) (Command, error) {
	bad := func(why string) (Command, error) {
		return Command{}, fmt.Errorf("repository %q: %s (want ssh://[user@]host[:port]/path)", rawURL, why)
	}
	rest, ok := strings.CutPrefix(rawURL, "ssh://")
	if !ok {
		return bad("not an ssh:// URL")
	}
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	var user string
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		user, authority = authority[:i], authority[i+1:]
		if user == "" || strings.HasPrefix(user, "-") || strings.ContainsAny(user, " \t\n\x00") {
			return bad("bad user name")
		}
	}
	host, port := authority, ""
	if strings.HasPrefix(host, "[") { // [v6 address]:port
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return bad("unclosed '['")
		}
		host, port = host[1:end], host[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return bad("junk after ']'")
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host, port = host[:i], host[i+1:]
	}
	switch {
	case host == "":
		return bad("no host")
	case strings.HasPrefix(host, "-"):
		return bad("a host name cannot start with '-'")
	case strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' || r == '@' }):
		return bad("bad host name")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return bad("bad port " + strconv.Quote(port))
		}
	}
	if strings.ContainsAny(path, "\x00\n") {
		return bad("bad path")
	}

	prog := o.Program
	if prog == "" {
		prog = "ssh"
	}
	alive := o.AliveInterval
	if alive <= 0 {
		alive = 15 * time.Second
	}
	argv := []string{prog, "-T", "-o", "BatchMode=yes",
		"-o", "ServerAliveInterval=" + strconv.Itoa(int(max(alive/time.Second, 1))),
		"-o", "ServerAliveCountMax=3"}
	if port != "" {
		argv = append(argv, "-p", port)
	}
	if user != "" {
		argv = append(argv, "-o", "User="+user)
	}
	for _, opt := range o.Options {
		if opt == "" || strings.HasPrefix(opt, "-") {
			return Command{}, fmt.Errorf("ssh option %q: give options as Key=Value", opt)
		}
		argv = append(argv, "-o", opt)
	}
	argv = append(argv, "--", host, "bupstash", "serve")
	if path != "" {
		argv = append(argv, shellQuote(path))
	}
	return Command{Argv: argv, Name: rawURL}, nil
}

// shellQuote quotes s for a POSIX shell (the remote user's shell, which
// sshd runs the command through).
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:=@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellCommand splits BUPSTASH_REPOSITORY_COMMAND into words as a shell
// would and runs them without one, as Bupstash does.
func ShellCommand(command string) (Command, error) {
	argv, err := shellwords.Split(command)
	if err != nil {
		return Command{}, fmt.Errorf("BUPSTASH_REPOSITORY_COMMAND: %w", err)
	}
	if len(argv) == 0 {
		return Command{}, errors.New("BUPSTASH_REPOSITORY_COMMAND is empty")
	}
	return Command{Argv: argv, Name: command}, nil
}
