package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

var (
	toolsOnce sync.Once
	toolsDir  string
	toolsErr  error
)

// promTool builds (once per test run, cached by Go afterwards) a Prometheus binary of the version in go.mod:
// "prometheus" or "promtool".
func promTool(t *testing.T, name string) string {
	t.Helper()
	toolsOnce.Do(func() {
		toolsDir, toolsErr = os.MkdirTemp("", "strata-e2e-tools")
		if toolsErr != nil {
			return
		}
		for _, tool := range []string{"prometheus", "promtool"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(toolsDir, tool), "github.com/prometheus/prometheus/cmd/"+tool)
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				toolsErr = errors.Wrapf(err, "build %s: %s", tool, out)
				return
			}
		}
	})
	testutil.Ok(t, toolsErr)
	return filepath.Join(toolsDir, name)
}

// pushV1 sends one remote-write 1.0 request and returns the status and body.
func pushV1(t *testing.T, url, tenant string, series []prompb.TimeSeries) (int, string) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	testutil.Ok(t, err)
	headers := map[string]string{"Content-Type": "application/x-protobuf", "X-Prometheus-Remote-Write-Version": "0.1.0"}
	if tenant != "" {
		headers["X-Scope-OrgID"] = tenant
	}
	return postSnappy(t, url, headers, raw)
}

// postSnappy POSTs a snappy-compressed body with the given headers and returns the status and body.
func postSnappy(t *testing.T, url string, headers map[string]string, raw []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(snappy.Encode(nil, raw)))
	testutil.Ok(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	testutil.Ok(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// genSeries returns n series with samples at the given timestamps; values are a function of series and time.
func genSeries(n int, ts ...int64) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, n)
	for i := range out {
		out[i].Labels = []prompb.Label{{Name: "__name__", Value: "e2e_metric"}, {Name: "instance", Value: fmt.Sprintf("host-%03d", i)}, {Name: "job", Value: "e2e"}}
		for _, t := range ts {
			out[i].Samples = append(out[i].Samples, prompb.Sample{Timestamp: t, Value: sampleValue(i, t)})
		}
	}
	return out
}

func sampleValue(series int, t int64) float64 { return float64(series*1000) + float64(t%100000)/10 }

// readStore returns every series of a tenant on a StoreAPI endpoint, with its (t, v) samples. With
// store.IngesterDialOptions, the gRPC port of `strata all` answers with its ingester's data only.
func readStore(t *testing.T, addr, tenant string, opts ...grpc.DialOption) map[string]map[int64]float64 {
	t.Helper()
	c, conn, err := store.Dial(addr, opts...)
	testutil.Ok(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(tenancy.OutgoingContext(context.Background(), tenant), 30*time.Second)
	defer cancel()
	got, err := storetest.Series(ctx, c, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}}})
	testutil.Ok(t, err)
	out := map[string]map[int64]float64{}
	for _, s := range got.Series {
		samples, err := storetest.SeriesSamples(s)
		testutil.Ok(t, err)
		m := map[int64]float64{}
		for _, smp := range samples {
			m[smp.T] = smp.V
		}
		out[store.LabelsFromPB(s.Labels).String()] = m
	}
	return out
}

// freePortOffset finds an offset for the local cluster's ports (gossip 7946-7953, HTTP 8080-8087 and 8090, gRPC
// 9084-9086, 9090, 9091 and 9095-9098) at which all twenty-six are free.
func freePortOffset(t *testing.T) int {
	t.Helper()
	ports := []int{7946, 7947, 7948, 7949, 7950, 7951, 7952, 7953, 8080, 8081, 8082, 8083, 8084, 8085, 8086, 8087, 8090,
		9084, 9085, 9086, 9090, 9091, 9095, 9096, 9097, 9098}
	// Below the kernel's ephemeral range (32768-60999 by default): a port of the cluster left free while its process
	// restarts must not be handed out as the local port of some outgoing connection (a rolling-restart test failed
	// with "bind: address already in use" that way).
	lo, _ := ephemeralPortRange()
	for off := 10000; off+9098 < lo; off += 1000 {
		ok := true
		for _, p := range ports {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+off))
			if err != nil {
				ok = false
				break
			}
			_ = l.Close()
		}
		if ok {
			return off
		}
	}
	t.Fatal("no free port range for the local cluster")
	return 0
}

// ephemeralPortRange returns the kernel's range of local ports for outgoing connections (Linux's default when
// it cannot be read).
func ephemeralPortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if _, err := fmt.Sscan(string(b), &lo, &hi); err == nil {
			return lo, hi
		}
	}
	return 32768, 60999
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
