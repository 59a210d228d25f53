package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stratametrics/strata/pkg/store/infopb"
)

// metaJSON is one entry of /api/v1/metadata.
type metaJSON struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// postWrite sends a snappy-compressed remote write body with the Content-Type of its protocol.
func postWrite(t *testing.T, url, tenant, contentType string, raw []byte) (int, string) {
	t.Helper()
	return postSnappy(t, url, map[string]string{"Content-Type": contentType, "X-Scope-OrgID": tenant}, raw)
}

func getMetadata(t *testing.T, base, path, tenant string, params url.Values) map[string][]metaJSON {
	t.Helper()
	code, r := promAPI(t, base, tenant, path, params)
	testutil.Equals(t, 200, code, "%s: %+v", path, r)
	testutil.Equals(t, "success", r.Status)
	var md map[string][]metaJSON
	testutil.Ok(t, json.Unmarshal(r.Data, &md))
	return md
}

// TestRemoteWriteMetadata: metric metadata remote-written by a tenant, in 1.0 (WriteRequest.metadata, as
// Prometheus sends it: in requests of its own) and 2.0 (per-series type, help and unit), is served back by
// /api/v1/metadata and /prometheus/api/v1/metadata to that tenant only, with Prometheus's parameters; invalid
// metadata is a 400 naming the limit.
func TestRemoteWriteMetadata(t *testing.T) {
	p := startStrata(t, t.TempDir(), "all")
	p.waitReady(t, 20*time.Second)
	push := p.url("/api/v1/push")
	now := time.Now().UnixMilli()

	// 1.0: metadata alone (as Prometheus sends it), then series with metadata.
	raw, err := (&prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests served."},
		{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "request_duration_seconds", Help: "Request latency.", Unit: "seconds"},
	}}).Marshal()
	testutil.Ok(t, err)
	code, body := postWrite(t, push, "team-a", "application/x-protobuf", raw)
	testutil.Equals(t, http.StatusNoContent, code, body)

	raw, err = (&prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "temperature_celsius"}},
			Samples: []prompb.Sample{{Value: 21, Timestamp: now}},
		}},
		Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temperature_celsius", Help: "Room temperature.", Unit: "celsius"},
			// The same family with another help: both are kept, as Prometheus does for differing targets.
			{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests handled."},
		},
	}).Marshal()
	testutil.Ok(t, err)
	code, body = postWrite(t, push, "team-a", "application/x-protobuf", raw)
	testutil.Equals(t, http.StatusNoContent, code, body)

	// 2.0: per-series metadata; a classic histogram's series belong to their family.
	syms := []string{"", "__name__", "bytes_sent_total", "Bytes sent.", "bytes", "queue_wait_seconds_bucket", "le", "+Inf", "Queue wait.", "seconds"}
	v2 := &writev2.Request{Symbols: syms, Timeseries: []writev2.TimeSeries{
		{
			LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: now}},
			Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: 3, UnitRef: 4},
		},
		{
			LabelsRefs: []uint32{1, 5, 6, 7}, Samples: []writev2.Sample{{Value: 3, Timestamp: now}},
			Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: 8, UnitRef: 9},
		},
	}}
	raw, err = v2.Marshal()
	testutil.Ok(t, err)
	code, body = postWrite(t, push, "team-a", "application/x-protobuf;proto=io.prometheus.write.v2.Request", raw)
	testutil.Equals(t, http.StatusNoContent, code, body)

	want := map[string][]metaJSON{
		"http_requests_total": {
			{Type: "counter", Help: "Requests handled."},
			{Type: "counter", Help: "Requests served."},
		},
		"request_duration_seconds": {{Type: "histogram", Help: "Request latency.", Unit: "seconds"}},
		"temperature_celsius":      {{Type: "gauge", Help: "Room temperature.", Unit: "celsius"}},
		"bytes_sent_total":         {{Type: "counter", Help: "Bytes sent.", Unit: "bytes"}},
		"queue_wait_seconds":       {{Type: "histogram", Help: "Queue wait.", Unit: "seconds"}},
	}
	for _, path := range []string{"/prometheus/api/v1/metadata", "/api/v1/metadata"} {
		testutil.Equals(t, want, getMetadata(t, p.url(""), path, "team-a", nil), path)
		testutil.Equals(t, map[string][]metaJSON{}, getMetadata(t, p.url(""), path, "team-b", nil), path+" as another tenant")
	}

	t.Run("parameters", func(t *testing.T) {
		base, path := p.url(""), "/prometheus/api/v1/metadata"
		testutil.Equals(t, map[string][]metaJSON{"temperature_celsius": want["temperature_celsius"]},
			getMetadata(t, base, path, "team-a", url.Values{"metric": {"temperature_celsius"}}))
		testutil.Equals(t, map[string][]metaJSON{"bytes_sent_total": want["bytes_sent_total"], "http_requests_total": want["http_requests_total"]},
			getMetadata(t, base, path, "team-a", url.Values{"limit": {"2"}}))
		testutil.Equals(t, map[string][]metaJSON{"http_requests_total": want["http_requests_total"][:1]},
			getMetadata(t, base, path, "team-a", url.Values{"metric": {"http_requests_total"}, "limit_per_metric": {"1"}}))
		code, r := promAPI(t, base, "team-a", path, url.Values{"limit": {"x"}})
		testutil.Equals(t, http.StatusBadRequest, code)
		testutil.Equals(t, "limit must be a number", r.Error)
		code, _ = httpGet(base+path, nil)
		testutil.Equals(t, http.StatusUnauthorized, code)
	})

	t.Run("invalid metadata is a 400 naming the limit, valid data of the request is kept", func(t *testing.T) {
		raw, err := (&prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "with_long_unit", Unit: strings.Repeat("u", 1025)},
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "kept_gauge", Help: "Kept."},
		}}).Marshal()
		testutil.Ok(t, err)
		code, body := postWrite(t, push, "team-c", "application/x-protobuf", raw)
		testutil.Equals(t, http.StatusBadRequest, code, body)
		mustContain(t, body, "err-mimir-unit-too-long", "max_metadata_length")
		testutil.Equals(t, map[string][]metaJSON{"kept_gauge": {{Type: "gauge", Help: "Kept."}}},
			getMetadata(t, p.url(""), "/api/v1/metadata", "team-c", nil))
	})
}

// TestLocalClusterMetadata: in the local cluster (distributor, 3 ingesters in zones a, b, c with RF 3, querier)
// metadata crosses the forward RPC to the ingesters and the querier reads it back from them over gRPC, per
// tenant; with one ingester killed (-9) the answer is still complete (a quorum read), and new metadata is still
// written and read.
func TestLocalClusterMetadata(t *testing.T) {
	c := &cluster{dir: t.TempDir(), off: freePortOffset(t)}
	c.env = append(os.Environ(), "STRATA_BIN="+strataBin, fmt.Sprintf("STRATA_PORT_OFFSET=%d", c.off))
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"distributor", "ingester-a", "ingester-b", "ingester-c", "querier", "query-frontend"} {
				b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
				t.Logf("%s.log (tail):\n%s", n, tail(string(b), 30))
			}
		}
		_ = exec.Command("bash", filepath.Join(repoRoot(), "examples/local-cluster/stop.sh"), c.dir).Run()
	})
	c.run(t, "start.sh", "ingester-a", "ingester-b", "ingester-c", "distributor", "querier", "query-frontend")

	pushMeta := func(families ...string) {
		t.Helper()
		req := &prompb.WriteRequest{}
		for _, f := range families {
			req.Metadata = append(req.Metadata, prompb.MetricMetadata{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: f, Help: "Help of " + f + "."})
		}
		raw, err := req.Marshal()
		testutil.Ok(t, err)
		code, body := postWrite(t, c.url(8080, "/api/v1/push"), "team-a", "application/x-protobuf", raw)
		testutil.Equals(t, http.StatusNoContent, code, body)
	}
	wantFamilies := func(families []string) map[string][]metaJSON {
		want := map[string][]metaJSON{}
		for _, f := range families {
			want[f] = []metaJSON{{Type: "gauge", Help: "Help of " + f + "."}}
		}
		return want
	}
	var first []string
	for i := 0; i < 30; i++ {
		first = append(first, fmt.Sprintf("family_%02d", i))
	}
	pushMeta(first...)
	base := c.url(8090, "")
	testutil.Equals(t, wantFamilies(first), getMetadata(t, base, "/prometheus/api/v1/metadata", "team-a", nil))
	testutil.Equals(t, map[string][]metaJSON{}, getMetadata(t, base, "/prometheus/api/v1/metadata", "team-b", nil))

	// The ingesters announce the Metadata API in their Info, so that a Thanos querier asks them too.
	conn, err := grpc.NewClient(c.grpc(9096), grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Ok(t, err)
	defer func() { _ = conn.Close() }()
	info, err := infopb.NewInfoClient(conn).Info(context.Background(), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Assert(t, info.GetMetricMetadata() != nil, "ingester Info does not announce the Metadata API: %v", info)

	testutil.Ok(t, syscall.Kill(c.pid(t, "ingester-b"), syscall.SIGKILL))
	testutil.Equals(t, wantFamilies(first), getMetadata(t, base, "/prometheus/api/v1/metadata", "team-a", nil))
	pushMeta("after_kill")
	testutil.Equals(t, wantFamilies([]string{"after_kill"}), getMetadata(t, base, "/prometheus/api/v1/metadata", "team-a", url.Values{"metric": {"after_kill"}}))
}
