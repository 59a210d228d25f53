package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"go.yaml.in/yaml/v3"
)

func TestHelpListsSubcommands(t *testing.T) {
	out, err := exec.Command(strataBin, "--help").CombinedOutput()
	testutil.Ok(t, err, string(out))
	mustContain(t, string(out), "Commands:", "all*", "--http-address", "--grpc-address", "--data-dir", "--config.file")

	out, err = exec.Command(strataBin, "--no-such-flag").CombinedOutput()
	var exitErr *exec.ExitError
	testutil.Assert(t, errors.As(err, &exitErr), "want an exit error, got %v", err)
	testutil.Equals(t, 2, exitErr.ExitCode())
	mustContain(t, string(out), "unknown long flag '--no-such-flag'")
}

// TestAllLifecycle is the "must show": strata all becomes ready within seconds, serves strata_ metrics,
// its config as YAML and the tenant-scoped limits page, and exits 0 within 30s of SIGTERM.
func TestAllLifecycle(t *testing.T) {
	dir := t.TempDir()
	p := startStrata(t, dir, "all")
	took := p.waitReady(t, 10*time.Second)
	t.Logf("ready after %s", took)

	code, body := httpGet(p.url("/metrics"), nil)
	testutil.Equals(t, 200, code)
	mustContain(t, body, "strata_build_info{", "strata_http_requests_total", "strata_objstore_bucket_operations_total", "process_resident_memory_bytes", "go_goroutines")

	code, body = httpGet(p.url("/config"), nil)
	testutil.Equals(t, 200, code)
	var cfg struct {
		Server struct {
			HTTPAddress string `yaml:"http_address"`
		} `yaml:"server"`
		DataDir string `yaml:"data_dir"`
		Limits  map[string]any
	}
	testutil.Ok(t, yaml.Unmarshal([]byte(body), &cfg), body)
	testutil.Equals(t, p.httpAddr, cfg.Server.HTTPAddress)
	testutil.Equals(t, p.dataDir, cfg.DataDir)
	testutil.Equals(t, 150000, cfg.Limits["max_global_series_per_user"])

	code, body = httpGet(p.url("/"), nil)
	testutil.Equals(t, 200, code)
	mustContain(t, body, `<a href="/config">`, `<a href="/runtime_config">`, `<a href="/metrics">`)

	// Tenancy at the edge: 401 without a tenant, 400 for an invalid one, 200 with the tenant's limits.
	code, body = httpGet(p.url("/api/v1/user_limits"), nil)
	testutil.Equals(t, 401, code)
	mustContain(t, body, "no org id")
	code, _ = httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": "__mimir_cluster"})
	testutil.Equals(t, 400, code)
	code, _ = httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": "a|b"})
	testutil.Equals(t, 400, code)
	code, body = httpGet(p.url("/api/v1/user_limits"), map[string]string{"THANOS-TENANT": "team-a"})
	testutil.Equals(t, 200, code)
	mustContain(t, body, `"ingestion_rate":10000`)

	_, err := os.Stat(filepath.Join(p.dataDir, "bucket"))
	testutil.Ok(t, err, "filesystem bucket under the data dir")

	start := time.Now()
	testutil.Equals(t, 0, p.stop(t))
	t.Logf("exited after SIGTERM in %s", time.Since(start))
	mustContain(t, p.out.String(), "received signal, shutting down")
}

// TestRuntimeOverridesReloadProcess changes the runtime file under a running process.
func TestRuntimeOverridesReloadProcess(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	write := func(s string) {
		testutil.Ok(t, os.WriteFile(rt+".tmp", []byte(s), 0o600))
		testutil.Ok(t, os.Rename(rt+".tmp", rt))
	}
	write("overrides:\n  team-a:\n    ingestion_rate: 5\n")
	p := startStrata(t, dir, "all", "--runtime-config.file="+rt, "--runtime-config.reload-period=100ms")
	p.waitReady(t, 10*time.Second)

	limits := func(tenant string) string {
		_, body := httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": tenant})
		return body
	}
	mustContain(t, limits("team-a"), `"ingestion_rate":5,`)
	mustContain(t, limits("team-b"), `"ingestion_rate":10000,`)

	write("overrides:\n  team-b:\n    ingestion_rate: 7\n")
	waitUntil(t, 10*time.Second, "override applied", func() bool { return strings.Contains(limits("team-b"), `"ingestion_rate":7,`) })
	mustContain(t, limits("team-a"), `"ingestion_rate":10000,`)
	_, body := httpGet(p.url("/runtime_config"), nil)
	mustContain(t, body, "team-b:", "ingestion_rate: 7")

	write("overrides:\n  team-b:\n    ingestion_rate: [\n")
	waitUntil(t, 10*time.Second, "failed reload exported", func() bool {
		_, m := httpGet(p.url("/metrics"), nil)
		return strings.Contains(m, `strata_runtime_config_last_reload_successful{config="overrides"} 0`)
	})
	mustContain(t, limits("team-b"), `"ingestion_rate":7,`) // last good file still in force
	testutil.Equals(t, 0, p.stop(t))
}

func TestBadConfigFailsFast(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "strata.yaml")
	testutil.Ok(t, os.WriteFile(cfg, []byte("limits:\n  ingestion_rat: 1\n"), 0o600))
	out, err := exec.Command(strataBin, "all", "--config.file="+cfg).CombinedOutput()
	testutil.NotOk(t, err)
	mustContain(t, string(out), "field ingestion_rat not found")

	// A port in use is a clear error, not a hang.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	defer l.Close()
	out, err = exec.Command(strataBin, "all", "--http-address="+l.Addr().String(), "--grpc-address=127.0.0.1:0", "--data-dir="+filepath.Join(dir, "d")).CombinedOutput()
	testutil.NotOk(t, err)
	mustContain(t, string(out), "listen for HTTP on "+l.Addr().String())
}
