package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	storeprompb "github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// metricsLines returns the lines of /metrics that start with prefix and contain every one of with.
func metricsLines(t *testing.T, p *proc, prefix string, with ...string) []string {
	t.Helper()
	code, body := httpGet(p.url("/metrics"), nil)
	testutil.Equals(t, 200, code, "/metrics")
	var out []string
lines:
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		for _, w := range with {
			if !strings.Contains(l, w) {
				continue lines
			}
		}
		out = append(out, l)
	}
	return out
}

func (p *proc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("strata exited: %v\n%s", p.err, tail(p.out.String(), 40))
	default:
	}
}

// TestIngesterIdleTenantCloseAndReopen: with the real shipper, a tenant whose TSDB is closed as idle (flushed,
// shipped, no write for close_idle_tsdb_timeout) writes again, three times: the process stays up (registering the
// tenant's shipper metrics again used to panic and kill it), while the tenant is closed /metrics has no series of
// it from the ingester or its shipper and its directory is gone, and every sample written is read back once
// through the querier (the earlier rounds from the bucket).
func TestIngesterIdleTenantCloseAndReopen(t *testing.T) {
	const (
		tenant = "idle-tenant"
		metric = "idle_metric"
		rounds = 3
	)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "strata.yaml")
	testutil.Ok(t, os.WriteFile(cfgFile, []byte(`
ingester:
  block_duration: 1m
  retention: 1m
  ship_interval: 2s
  close_idle_tsdb_timeout: 3s
`), 0o600))
	p := startStrata(t, dir, "all", "--config.file="+cfgFile, "--auth.multitenancy-enabled",
		"--sync-interval=1s", "--querier.blocks-refresh-interval=1s", "--querier.blocks-upload-grace-period=1ms")
	p.waitReady(t, 60*time.Second)

	// Each round writes a minute of its own, in the past, so that each is cut into a block of its own.
	t0 := time.Now().Truncate(time.Minute).Add(-10 * time.Minute).UnixMilli()
	var written []int64
	push := func(round int) {
		t.Helper()
		s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "idle"}}}
		for k := 0; k < 4; k++ {
			ts := t0 + int64(round)*2*time.Minute.Milliseconds() + int64(k)*15_000
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts, Value: float64(ts / 1000)})
			written = append(written, ts)
		}
		code, body := pushV1(t, p.url("/api/v1/push"), tenant, []prompb.TimeSeries{s})
		testutil.Assert(t, code/100 == 2, "round %d: push: %d %s\n%s", round, code, body, tail(p.out.String(), 40))
	}
	tsdbsOpen := func() string {
		lines := metricsLines(t, p, "strata_ingester_tsdbs ")
		testutil.Equals(t, 1, len(lines), "strata_ingester_tsdbs")
		return strings.TrimPrefix(lines[0], "strata_ingester_tsdbs ")
	}
	tenantLabel := fmt.Sprintf(`tenant=%q`, tenant)

	for r := 0; r < rounds; r++ {
		push(r)
		testutil.Equals(t, "1", tsdbsOpen(), "round %d: the tenant's TSDB is open", r)
		testutil.Assert(t, len(metricsLines(t, p, "strata_shipper_", tenantLabel)) > 0, "round %d: no shipper series of the open tenant", r)
		resp, err := http.Post(p.url("/ingester/flush"), "", nil)
		testutil.Ok(t, err)
		_ = resp.Body.Close()
		testutil.Equals(t, http.StatusNoContent, resp.StatusCode, "round %d: flush", r)

		waitUntil(t, 20*time.Second, fmt.Sprintf("round %d: the idle tenant's TSDB to close", r), func() bool {
			p.alive(t)
			return tsdbsOpen() == "0"
		})
		for _, prefix := range []string{"strata_ingester_", "strata_shipper_"} {
			testutil.Equals(t, []string(nil), metricsLines(t, p, prefix, tenantLabel), "round %d: series of the closed tenant", r)
		}
		_, err = os.Stat(filepath.Join(p.dataDir, "tsdb", tenant))
		testutil.Assert(t, os.IsNotExist(err), "round %d: the closed tenant's directory is still there (%v)", r, err)
	}
	push(rounds) // opens it a fourth time
	p.alive(t)
	testutil.Equals(t, "1", tsdbsOpen())

	// Every sample, once: rounds 0-2 from the bucket (store-gateway), the last from the ingester.
	last := written[len(written)-1]
	var got []int64
	waitUntil(t, 30*time.Second, "every sample to be readable through the querier", func() bool {
		code, r := promAPI(t, p.url("/prometheus"), tenant, "/api/v1/query", url.Values{"query": {metric + "[20m]"},
			"time": {fmt.Sprintf("%.3f", float64(last)/1000)}, "partial_response": {"false"}})
		if code != 200 {
			return false
		}
		var raw struct {
			Result []promSample `json:"result"`
		}
		testutil.Ok(t, json.Unmarshal(r.Data, &raw))
		got = got[:0]
		for _, s := range raw.Result {
			for _, v := range s.Values {
				ms := int64(v[0].(float64)*1000 + 0.5)
				testutil.Equals(t, float64(ms/1000), sampleFloat(t, v), "value at %d", ms)
				got = append(got, ms)
			}
		}
		return len(raw.Result) == 1 && len(got) == len(written)
	})
	testutil.Equals(t, written, got, "samples read back")
	p.alive(t)
}

// TestIngesterGRPCWriteBounds: the ingester's gRPC write of the real binary refuses what the distributor would
// (no tenant, a sample 100 years ahead) and messages over --server.grpc-max-recv-msg-size-bytes
// (ResourceExhausted), and goes on serving: a valid write afterwards is accepted and readable.
func TestIngesterGRPCWriteBounds(t *testing.T) {
	const tenant = "grpc-tenant"
	p := startStrata(t, t.TempDir(), "ingester", "--auth.multitenancy-enabled", "--server.grpc-max-recv-msg-size-bytes=1048576")
	p.waitReady(t, 60*time.Second)
	_, conn, err := store.Dial(p.grpcAddr)
	testutil.Ok(t, err)
	defer conn.Close()
	w := storepb.NewWriteableStoreClient(conn)
	now := time.Now().UnixMilli()
	series := func(value string, ts int64) []*storeprompb.TimeSeries {
		return []*storeprompb.TimeSeries{{
			Labels:  []*labelpb.Label{{Name: "__name__", Value: "grpc_metric"}, {Name: "job", Value: value}},
			Samples: []*storeprompb.Sample{{Timestamp: ts, Value: 1}},
		}}
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *storepb.WriteRequest
		want codes.Code
	}{
		{"2 MiB message over the 1 MiB bound", tenancy.OutgoingContext(context.Background(), tenant),
			&storepb.WriteRequest{Tenant: tenant, Timeseries: series(strings.Repeat("v", 2<<20), now)}, codes.ResourceExhausted},
		{"no tenant", context.Background(), &storepb.WriteRequest{Timeseries: series("a", now)}, codes.Unauthenticated},
		{"sample 100 years ahead", tenancy.OutgoingContext(context.Background(), tenant),
			&storepb.WriteRequest{Tenant: tenant, Timeseries: series("a", time.Now().AddDate(100, 0, 0).UnixMilli())}, codes.InvalidArgument},
		{"valid", tenancy.OutgoingContext(context.Background(), tenant), &storepb.WriteRequest{Tenant: tenant, Timeseries: series("a", now)}, codes.OK},
	} {
		ctx, cancel := context.WithTimeout(tc.ctx, 30*time.Second)
		_, err := w.RemoteWrite(ctx, tc.req)
		cancel()
		testutil.Equals(t, tc.want, status.Code(err), "%s: %v", tc.name, err)
		p.alive(t)
	}
	got := readStore(t, p.grpcAddr, tenant)
	testutil.Equals(t, map[string]map[int64]float64{`{__name__="grpc_metric", job="a", tenant_id="grpc-tenant"}`: {now: 1}}, got)
}
