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

	dir  string
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
}

// Start starts sshd with forceCommand as the only command it runs for
// the client key (sshd runs it through the user's shell; the command
// the client asked for is in SSH_ORIGINAL_COMMAND). The server is
// stopped when the test ends.
func Start(t testing.TB, forceCommand string) *Server {
	t.Helper()
	sshd := testtools.Program(t, "sshd", "openssh-server")
	keygen := testtools.Program(t, "ssh-keygen", "openssh-client")
	testtools.Program(t, "ssh", "openssh-client")
	// sshd refuses to start without its privilege separation directory,
	// which Debian creates only when the service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshtest", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("sshtest: ssh-keygen: %v: %s", err, out)
		}
	}
	clientPub := readFile(t, filepath.Join(dir, "client_key.pub"))
	hostPub := readFile(t, filepath.Join(dir, "host_key.pub"))
	writeFile(t, filepath.Join(dir, "authorized_keys"), clientPub)

	s := &Server{User: u.Username, dir: dir}
	for attempt := 0; ; attempt++ {
		s.Port = freePort(t)
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
		writeFile(t, filepath.Join(dir, "sshd_config"), config)
		s.cmd = exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stderr, err := s.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("sshtest: starting sshd: %v", err)
		}
		go s.collect(stderr)
		if s.waitListening(5 * time.Second) {
			break
		}
		s.stop()
		if attempt == 2 {
			t.Fatalf("sshtest: sshd did not start: %s", strings.Join(s.Logs(), "\n"))
		}
	}
	t.Cleanup(s.stop)

	knownHosts := fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, strings.TrimSpace(hostPub))
	writeFile(t, filepath.Join(dir, "known_hosts"), knownHosts+"\n")
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
	return s
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

// stop ends sshd and every session it started (each in its own process
// group, which sshd sets up, so sessions are ended through the pids
// sshd's children have; killing the listener is enough for new ones).
func (s *Server) stop() {
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

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func readFile(t testing.TB, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, p, s string) {
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
