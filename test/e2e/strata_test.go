// Package e2e starts the real strata binary (and, as components land, real Prometheus) on loopback and checks
// what a user sees. Every wait is bounded; every process is stopped by the test that started it.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// strataBin is the binary built once by TestMain for every test of this package.
var strataBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create temp dir:", err)
		os.Exit(1)
	}
	strataBin = filepath.Join(dir, "strata")
	build := exec.Command("go", "build", "-o", strataBin, "./cmd/strata")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build strata:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is two levels above this package.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}

// freeAddr returns a loopback address with a port that was free a moment ago, below the kernel's ephemeral
// range: a port the kernel picked (":0") could be handed out again, as the local port of some process's outgoing
// connection (gossip dials while a cluster starts), before the process it is meant for binds it ("bind: address
// already in use", seen in TestShuffleShardingIsolatesTenants). Ports are taken in turn from
// [freeAddrFirst, freeAddrFirst+freeAddrSpan), below the local cluster's (freePortOffset), skipping busy ones.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range freeAddrSpan {
		p := freeAddrFirst + int(freeAddrNext.Add(1))%freeAddrSpan
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // in use
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr
	}
	t.Fatalf("no free port in 127.0.0.1:%d-%d", freeAddrFirst, freeAddrFirst+freeAddrSpan-1)
	return ""
}

const (
	freeAddrFirst = 12000
	freeAddrSpan  = 5000 // up to 16999: the local cluster's ports start at 17946 (freePortOffset)
)

// freeAddrNext is the last port handed out, less freeAddrFirst; it starts at a place of its own per process, so
// that two test binaries running at once rarely meet.
var freeAddrNext = func() *atomic.Int64 {
	var n atomic.Int64
	n.Store(int64(os.Getpid()*97) % freeAddrSpan)
	return &n
}()

// memberlist is the gossip of a test's processes: a loopback address per member, free (TCP) a moment ago.
type memberlist []string

func newMemberlist(t *testing.T, n int) memberlist {
	m := make(memberlist, n)
	for i := range m {
		m[i] = freeAddr(t)
	}
	return m
}

// flags are member i's: bind to its address, join every member.
func (m memberlist) flags(i int) []string {
	host, port, _ := net.SplitHostPort(m[i])
	out := []string{"--memberlist.bind-addr=" + host, "--memberlist.bind-port=" + port}
	for _, a := range m {
		out = append(out, "--memberlist.join="+a)
	}
	return out
}

// proc is a running strata process.
type proc struct {
	cmd      *exec.Cmd
	httpAddr string
	grpcAddr string
	dataDir  string
	out      *syncBuffer
	exited   chan struct{}
	err      error
}

// syncBuffer collects a process's output; the process writes while the test reads.
type syncBuffer struct {
	mtx sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.String()
}

// startStrata starts `strata <args>` in dir on free loopback ports with a data dir of its own, and kills it when
// the test ends if the test did not stop it.
func startStrata(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	httpAddr, grpcAddr, dataDir := freeAddr(t), freeAddr(t), filepath.Join(t.TempDir(), "data")
	p := startProc(t, dir, "strata", strataBin, append(args, "--http-address="+httpAddr, "--grpc-address="+grpcAddr, "--data-dir="+dataDir)...)
	p.httpAddr, p.grpcAddr, p.dataDir = httpAddr, grpcAddr, dataDir
	return p
}

// startProc starts `bin <args>` in dir (the test's when empty), collecting its output; when the test ends it kills
// the process unless it has exited, and logs the output, as name's, if the test failed.
func startProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	testutil.Ok(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) url(path string) string { return "http://" + p.httpAddr + path }

// waitReady polls /ready every 50ms until it answers 200, for at most timeout.
func (p *proc) waitReady(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		select {
		case <-p.exited:
			t.Fatalf("strata exited before it was ready: %v\n%s", p.err, p.out.String())
		default:
		}
		if code, _ := httpGet(p.url("/ready"), nil); code == 200 {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("strata not ready within %s\n%s", timeout, p.out.String())
	return 0
}

// stop sends SIGTERM and waits for the exit, at most 30s; it returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	testutil.Ok(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("strata did not exit within 30s of SIGTERM\n%s", p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// httpGet returns the status and body of a GET with headers, or 0 when the request failed.
func httpGet(url string, headers map[string]string) (int, string) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, err.Error()
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitUntil polls cond every 100ms for at most timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		testutil.Assert(t, strings.Contains(s, sub), "%q not found in:\n%s", sub, s)
	}
}
