package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/block"
)

// promProc is a running Prometheus (the real binary of go.mod's version).
type promProc struct {
	*proc
	addr    string // host:port of its HTTP API
	tsdbDir string // its --storage.tsdb.path
}

func (p *promProc) baseURL() string { return "http://" + p.addr }

// startPrometheus starts Prometheus scraping targets every second with the given external labels, its blocks cut
// every blockDuration (min = max block duration, as a sidecar wants: no compaction), and waits until it is ready.
func startPrometheus(t *testing.T, dir string, extLabels map[string]string, blockDuration time.Duration, targets ...string) *promProc {
	t.Helper()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	writePrometheusConfig(t, cfgFile, extLabels, "", targets...)
	return startPrometheusWithConfig(t, dir, cfgFile, blockDuration)
}

// writePrometheusConfig writes a Prometheus config: a 1s scrape of targets (job "e2e") with the given external
// labels, and extraYAML (top-level sections, e.g. remote_write) at its end. Rewrite it and POST /-/reload
// (Prometheus runs with --web.enable-lifecycle) to change a running Prometheus's configuration.
func writePrometheusConfig(t *testing.T, path string, extLabels map[string]string, extraYAML string, targets ...string) {
	t.Helper()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n")
	if len(extLabels) > 0 {
		cfg.WriteString("  external_labels:\n")
	}
	for _, k := range sortedKeys(extLabels) {
		fmt.Fprintf(&cfg, "    %s: %q\n", k, extLabels[k])
	}
	cfg.WriteString("scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: [")
	for i, tg := range targets {
		if i > 0 {
			cfg.WriteString(", ")
		}
		fmt.Fprintf(&cfg, "%q", tg)
	}
	cfg.WriteString("]\n")
	cfg.WriteString(extraYAML)
	testutil.Ok(t, os.WriteFile(path, []byte(cfg.String()), 0o600))
}

// startPrometheusWithConfig starts Prometheus with a config file, its blocks cut every blockDuration, its data
// under <dir>/prometheus-data, and waits until it is ready.
func startPrometheusWithConfig(t *testing.T, dir, cfgFile string, blockDuration time.Duration) *promProc {
	t.Helper()
	p := &promProc{addr: freeAddr(t), tsdbDir: filepath.Join(dir, "prometheus-data")}
	p.proc = startProc(t, dir, "prometheus", promTool(t, "prometheus"),
		"--config.file="+cfgFile, "--storage.tsdb.path="+p.tsdbDir, "--web.listen-address="+p.addr,
		"--storage.tsdb.min-block-duration="+blockDuration.String(), "--storage.tsdb.max-block-duration="+blockDuration.String(),
		"--storage.tsdb.retention.time=1d", "--web.enable-lifecycle")
	waitUntil(t, 30*time.Second, "Prometheus ready", func() bool {
		code, _ := httpGet(p.baseURL()+"/-/ready", nil)
		return code == 200
	})
	return p
}

// startMetricsTarget serves /metrics on 127.0.0.1 with values that are a function of the number of scrapes so far:
// e2e_requests_total{path="/a"|"/b"} counters and an e2e_temperature gauge. It returns host:port.
func startMetricsTarget(t *testing.T) string {
	t.Helper()
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE e2e_requests_total counter\ne2e_requests_total{path=\"/a\"} %d\ne2e_requests_total{path=\"/b\"} %d\n", 3*n, 5*n+n/7)
		fmt.Fprintf(w, "# TYPE e2e_temperature gauge\ne2e_temperature{room=\"lab\"} %g\n", float64(n%13)+0.25)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// writeFilesystemBucketConfig writes a Thanos objstore config of a filesystem bucket in bucketDir and returns its path.
func writeFilesystemBucketConfig(t *testing.T, dir, bucketDir string) string {
	t.Helper()
	p := filepath.Join(dir, "bucket.yml")
	testutil.Ok(t, os.WriteFile(p, []byte("type: FILESYSTEM\nconfig:\n  directory: "+bucketDir+"\n"), 0o600))
	return p
}

// startStrataAt is startStrata at given addresses and data dir (a process restarted where it ran before).
func startStrataAt(t *testing.T, dir, httpAddr, grpcAddr, dataDir string, args ...string) *proc {
	t.Helper()
	p := startProc(t, dir, "strata", strataBin, append(args, "--http-address="+httpAddr, "--grpc-address="+grpcAddr, "--data-dir="+dataDir)...)
	p.httpAddr, p.grpcAddr, p.dataDir = httpAddr, grpcAddr, dataDir
	return p
}

// sidecarArgs are the flags of `strata sidecar` next to prom for tenant, shipping every second into the bucket of
// bucketCfg.
func sidecarArgs(prom *promProc, tenant, bucketCfg string) []string {
	return []string{"sidecar", "--prometheus.url=" + prom.baseURL(), "--tsdb.path=" + prom.tsdbDir, "--tenant=" + tenant,
		"--objstore.config-file=" + bucketCfg, "--shipper.sync-interval=1s"}
}

// bucketBlocks reads the meta.json of every complete block under <bucketDir>/<tenant>/, oldest first.
func bucketBlocks(t *testing.T, bucketDir, tenant string) []*block.Meta {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(bucketDir, tenant))
	if os.IsNotExist(err) {
		return nil
	}
	testutil.Ok(t, err)
	var out []*block.Meta
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		m, err := block.ReadMetaFromDir(filepath.Join(bucketDir, tenant, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // being uploaded: meta.json comes last
		}
		testutil.Ok(t, err)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MinTime < out[j].MinTime })
	return out
}

var shippedBlockRe = regexp.MustCompile(`msg="shipped block" block=([0-9A-Z]{26})`)

// shippedBlocks returns the blocks a sidecar's (or ingester's) log says it uploaded, in order.
func shippedBlocks(log string) []string {
	var out []string
	for _, m := range shippedBlockRe.FindAllStringSubmatch(log, -1) {
		out = append(out, m[1])
	}
	return out
}
