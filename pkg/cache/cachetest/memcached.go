// Package cachetest has test helpers for code using pkg/cache: a real memcached server per test.
package cachetest

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"go.uber.org/goleak"
)

// SkipEnv is the environment variable that, set to 1, makes the memcached helpers skip the test when the memcached
// binary is missing. Without it, a missing memcached binary fails the test. An installed memcached is always used.
const SkipEnv = "STRATA_SKIP_MEMCACHED"

const startTimeout = 10 * time.Second

// GoleakOptions are the goleak options for tests that create memcached caches: dskit's memcached client leaves a
// DNS resolver goroutine (re-reading resolv.conf) running after it is stopped, one per cache.
func GoleakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/grafana/dskit/dns/miekgdns.(*Resolver).loop")}
}

// Memcached is a memcached process started by RunMemcached for one test.
type Memcached struct {
	// Addr is the server's address, 127.0.0.1:port.
	Addr string

	cmd    *exec.Cmd
	done   chan struct{} // Closed when the process has exited.
	stderr *bytes.Buffer // Read only after done is closed.
	once   sync.Once
}

// StartMemcached starts a memcached server (64MiB, TCP only) on a free loopback port, waits until it serves
// requests, stops it when the test ends, and returns its address.
// If memcached is not installed the test fails (apt-get install memcached), or is skipped with
// STRATA_SKIP_MEMCACHED=1.
func StartMemcached(t testing.TB) string {
	t.Helper()
	return RunMemcached(t).Addr
}

// RunMemcached is StartMemcached returning the process, so that a test can stop the server early.
func RunMemcached(t testing.TB) *Memcached {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
			if _, lookErr := exec.LookPath(p); lookErr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil && os.Getenv(SkipEnv) == "1" {
		t.Skipf("memcached binary not found and %s=1: skipping a test that needs memcached", SkipEnv)
	}
	if err != nil {
		t.Fatalf("memcached binary not found (%v): install it with `apt-get install memcached`, or set %s=1 to skip the tests that need it", err, SkipEnv)
	}

	// The free port may be taken by someone else before memcached binds it: then try another one.
	var lastErr error
	for range 3 {
		m, err := start(bin)
		if err == nil {
			t.Cleanup(m.Stop)
			return m
		}
		lastErr = err
	}
	t.Fatalf("starting memcached: %v", lastErr)
	return nil
}

func start(bin string) (*Memcached, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-p", strconv.Itoa(port), "-l", "127.0.0.1", "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise.
	}
	m := &Memcached{
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		cmd:    exec.Command(bin, args...),
		done:   make(chan struct{}),
		stderr: &bytes.Buffer{},
	}
	m.cmd.Stdout = m.stderr
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		return nil, errors.Wrapf(err, "running %s %s", bin, strings.Join(args, " "))
	}
	go func() {
		_ = m.cmd.Wait()
		close(m.done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-m.done:
			return nil, errors.Newf("memcached %s exited before serving: %s: %s", strings.Join(args, " "), m.cmd.ProcessState, m.stderr.String())
		default:
		}
		pid, err := serverPID(m.Addr)
		if err == nil {
			if pid == m.cmd.Process.Pid {
				return m, nil
			}
			m.Stop()
			return nil, errors.Newf("port %d is served by another memcached (pid %d)", port, pid)
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, errors.Wrapf(err, "memcached on %s not serving after %v; output: %s", m.Addr, startTimeout, m.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. It may be called more than once.
func (m *Memcached) Stop() {
	m.once.Do(func() {
		_ = m.cmd.Process.Kill()
		select {
		case <-m.done:
		case <-time.After(startTimeout):
		}
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, errors.Wrap(err, "finding a free port")
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serverPID asks the memcached server at addr for its pid ("stats").
func serverPID(addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return 0, err
	}
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		return 0, err
	}
	pid := -1
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "END" {
			if pid < 0 {
				return 0, errors.Newf("no pid in the stats of %s", addr)
			}
			return pid, nil
		}
		if v, ok := strings.CutPrefix(line, "STAT pid "); ok {
			if pid, err = strconv.Atoi(v); err != nil {
				return 0, errors.Wrapf(err, "parsing the pid in the stats of %s", addr)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.Newf("connection to %s closed before the end of the stats", addr)
}
