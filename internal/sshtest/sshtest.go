// Package sshtest starts a real sshd for tests: Debian's openssh-server
// on 127.0.0.1, with a throwaway host key, one client key, and a
// ForceCommand, as a server that restricts a key to `bupstash serve` is
// set up. The client side is the ssh on PATH, told about the host key
// and the client key through -o options, so that the code under test
// runs ssh exactly as it would for a user.
package sshtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupfs/backupfs/internal/testtools"
)

// Server is a running sshd.
type Server struct {
	// Port is where it listens, on 127.0.0.1.
	Port int
	// User is the user to log in as: the one running the test.
	User string
	// Options are the ssh client options (each for `-o`) that trust the
	// host key and use the client key, and nothing of the user's.
	Options []string

	dir     string
	hostPub string
	cmd     *exec.Cmd
	mu      sync.Mutex
	logs    []string
}

// Start starts sshd with forceCommand as the only command it runs for
// the client key (sshd runs it through the user's shell; the command
// the client asked for is in SSH_ORIGINAL_COMMAND). The server is
// stopped when the test ends; a missing sshd skips the test (fails it
// in CI).
func Start(t testing.TB, forceCommand string) *Server {
	t.Helper()
	testtools.Program(t, "sshd", "openssh-server")
	testtools.Program(t, "ssh-keygen", "openssh-client")
	testtools.Program(t, "ssh", "openssh-client")
	s, err := Launch(t.TempDir(), forceCommand)
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch starts sshd as Start does, outside a test (benchmarks): its
// keys and configuration go in dir. The caller stops it.
func Launch(dir, forceCommand string) (*Server, error) {
	sshd, err := program("sshd")
	if err != nil {
		return nil, err
	}
	keygen, err := program("ssh-keygen")
	if err != nil {
		return nil, err
	}
	// sshd refuses to start without its privilege separation directory,
	// which Debian creates only when the service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshtest", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	clientPub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		return nil, err
	}
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), clientPub, 0o600); err != nil {
		return nil, err
	}

	s := &Server{User: u.Username, dir: dir, hostPub: strings.TrimSpace(string(hostPub))}
	for attempt := 0; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
		config := strings.Join([]string{
			fmt.Sprintf("Port %d", s.Port),
			"ListenAddress 127.0.0.1",
			"HostKey " + filepath.Join(dir, "host_key"),
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
			"AuthenticationMethods publickey",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin yes",
			"AllowUsers " + u.Username,
			"AllowTcpForwarding no",
			"X11Forwarding no",
			"PermitTTY no",
			"PrintMotd no",
			"MaxStartups 100",
			"MaxSessions 100",
			"LogLevel ERROR",
			"ForceCommand " + forceCommand,
		}, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
			return nil, err
		}
		s.cmd = exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stderr, err := s.cmd.StderrPipe()
		if err != nil {
			return nil, err
		}
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting sshd: %w", err)
		}
		go s.collect(stderr)
		if s.waitListening(5 * time.Second) {
			break
		}
		s.Stop()
		if attempt == 2 {
			return nil, fmt.Errorf("sshd did not start: %s", strings.Join(s.Logs(), "\n"))
		}
	}
	if err := s.Trust(s.Port); err != nil {
		s.Stop()
		return nil, err
	}
	s.Options = []string{
		"IdentityFile=" + filepath.Join(dir, "client_key"),
		"IdentitiesOnly=yes",
		"IdentityAgent=none",
		"UserKnownHostsFile=" + filepath.Join(dir, "known_hosts"),
		"GlobalKnownHostsFile=/dev/null",
		"StrictHostKeyChecking=yes",
		"ControlMaster=no",
		"ControlPath=none",
		"ConnectTimeout=10",
		"LogLevel=ERROR",
	}
	return s, nil
}

// Trust adds the host key for 127.0.0.1:port to the client's known
// hosts: the server's own port, or a proxy's in front of it.
func (s *Server) Trust(port int) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "known_hosts"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "[127.0.0.1]:%d %s\n", port, s.hostPub)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// program finds an installed program, in /usr/sbin too.
func program(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (openssh-server, openssh-client)", name)
}

// URL returns ssh://user@127.0.0.1:port/path.
func (s *Server) URL(path string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", s.User, s.Port, path)
}

// Logs returns what sshd printed.
func (s *Server) Logs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logs...)
}

func (s *Server) collect(r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s.mu.Lock()
		if len(s.logs) < 1000 {
			s.logs = append(s.logs, sc.Text())
		}
		s.mu.Unlock()
	}
}

func (s *Server) waitListening(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		if s.cmd.ProcessState != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Stop ends sshd and every session it started (each in its own process
// group, which sshd sets up, so sessions are ended through the pids
// sshd's children have; killing the listener is enough for new ones).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.cmd = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
