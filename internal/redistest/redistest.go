// Package redistest starts a real redis-server for tests, on a random loopback port in a
// temporary directory, so the Redis adapter is tested against Redis itself rather than a
// fake. Tests can kill and restart it, or suspend and resume it, to exercise a cache
// outage: a crashed server refuses connections, a hung one accepts them and never answers.
// Without redis-server installed the calling test is skipped, except in CI (CI=true) where
// a skipped Redis suite would pass silently, so it fails instead.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/config"
)

// startTimeout bounds how long a started redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	// Addr is host:port, stable across Restart.
	Addr string

	bin  string
	dir  string
	port int

	mu   sync.Mutex
	proc *process // nil while killed
}

// process is one run of redis-server; done closes once it has been waited for.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, valid after done
}

// Start starts a redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := findBinary()
	if bin == "" {
		msg := "redistest: redis-server not found in PATH, /usr/bin or /usr/sbin; install it (apt-get install redis-server) to run the Redis tests"
		if config.ComponentsRequired() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Kill)

	// The free port is found by binding and releasing it, so another process may take it
	// before redis-server binds; try a few ports before giving up.
	var errs []error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = s.start()
		if err == nil {
			return s
		}
		errs = append(errs, err)
	}
	t.Fatalf("redistest: start redis-server: %v", errors.Join(errs...))
	return nil
}

// URL is the go-redis URL of the server, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Kill stops the server with SIGKILL, as a crash would, and waits for it to exit; a
// suspended server is killed too. Killing a server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill() // only the process this Server started
	<-p.done
}

// Suspend stops the server with SIGSTOP, as a hung host or a stalled disk would: the
// kernel still accepts connections and buffers what clients send, but nothing is answered
// until Resume. A suspended server is still killed when the test ends.
func (s *Server) Suspend(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
}

// Resume continues a server stopped by Suspend; it answers what was sent meanwhile.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT)
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		t.Fatalf("redistest: %s to redis-server on %s: not running", sig, s.Addr)
	}
	if err := p.cmd.Process.Signal(sig); err != nil { // only the process this Server started
		t.Fatalf("redistest: %s to redis-server on %s: %v", sig, s.Addr, err)
	}
}

// Restart starts the server again on the same port, killing it first if it is running.
// Data is not kept: the server runs without persistence, as a flushed cache would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr, err)
	}
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	logPath := filepath.Join(s.dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--dir", s.dir,
	)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			s.mu.Lock()
			s.proc = nil
			s.mu.Unlock()
			return fmt.Errorf("redis-server on port %d exited (%v): %s", s.port, p.err, tail(logPath))
		default:
		}
		if ping(s.Addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within %s: %s", s.port, startTimeout, tail(logPath))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends one PING in the inline protocol, enough to know the server accepts commands.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		// e.g. "-LOADING" while a server starts up.
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func findBinary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// tail returns the end of the server's log, for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
