package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

func seriesOf(name string, n int, t int64, extra ...prompb.Label) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, n)
	for i := range out {
		out[i].Labels = append([]prompb.Label{{Name: "__name__", Value: name}, {Name: "i", Value: fmt.Sprint(i)}}, extra...)
		out[i].Samples = []prompb.Sample{{Timestamp: t, Value: 1}}
	}
	return out
}

// TestLimits: per-tenant limits from the runtime file, at the process level: rate → 429, series limit → 400
// naming the metric with the most new series, label limits → 400, a changed override applies without a
// restart, and every rejection is counted by reason.
func TestLimits(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	write := func(s string) {
		testutil.Ok(t, os.WriteFile(rt+".tmp", []byte(s), 0o600))
		testutil.Ok(t, os.Rename(rt+".tmp", rt))
	}
	write(`overrides:
  rate:
    ingestion_rate: 10
    ingestion_burst_size: 20
  series:
    max_global_series_per_user: 5
  labels:
    max_label_names_per_series: 4
    max_label_value_length: 10
`)
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt, "--runtime-config.reload-period=100ms")
	s.waitReady(t, 30*time.Second)
	push := s.url("/api/v1/push")
	now := time.Now().UnixMilli()

	code, body := pushV1(t, push, "rate", seriesOf("m", 30, now))
	testutil.Equals(t, 429, code, body)
	mustContain(t, body, "(err-mimir-tenant-max-ingestion-rate)", "configure ingestion_rate and ingestion_burst_size")
	code, body = pushV1(t, push, "rate", seriesOf("m", 5, now))
	testutil.Assert(t, code/100 == 2, "a push within the burst: %d %s", code, body)

	code, body = pushV1(t, push, "series", append(seriesOf("small", 1, now), seriesOf("big", 8, now)...))
	testutil.Equals(t, 400, code, body)
	mustContain(t, body, "per-user series limit of 5 exceeded", "most new series in this request: big", "(err-mimir-max-series-per-user)", "configure max_global_series_per_user")

	code, body = pushV1(t, push, "labels", seriesOf("m", 1, now, prompb.Label{Name: "j", Value: "1"}, prompb.Label{Name: "k", Value: "1"}, prompb.Label{Name: "l", Value: "1"}))
	testutil.Equals(t, 400, code, body)
	mustContain(t, body, "(err-mimir-max-label-names-per-series)")
	code, body = pushV1(t, push, "labels", seriesOf("m", 1, now, prompb.Label{Name: "v", Value: "a-very-long-value"}))
	testutil.Equals(t, 400, code, body)
	mustContain(t, body, "(err-mimir-label-value-too-long)", "configure max_label_value_length")

	// Raise the series limit in the runtime file: it applies without a restart.
	write("overrides:\n  series:\n    max_global_series_per_user: 100\n")
	waitUntil(t, 10*time.Second, "override applied", func() bool {
		code, _ := pushV1(t, push, "series", seriesOf("big", 8, now+1000))
		return code/100 == 2
	})

	_, metrics := httpGet(s.url("/metrics"), nil)
	for _, want := range []string{
		`strata_discarded_samples_total{reason="rate_limited",tenant="rate"} 30`,
		`strata_discarded_samples_total{reason="per_user_series_limit",tenant="series"}`,
		`strata_discarded_samples_total{reason="max_label_names_per_series",tenant="labels"} 1`,
		`strata_discarded_samples_total{reason="label_value_too_long",tenant="labels"} 1`,
	} {
		mustContain(t, metrics, want)
	}
}

// TestBadInput: malformed requests get a clear 4xx, never a 5xx or a crash, and nothing stored before is lost.
func TestBadInput(t *testing.T) {
	s := startStrata(t, t.TempDir(), "all", "--distributor.max-recv-msg-size=100000")
	s.waitReady(t, 30*time.Second)
	push := s.url("/api/v1/push")
	now := time.Now().UnixMilli()
	code, body := pushV1(t, push, "t", genSeries(20, now))
	testutil.Assert(t, code/100 == 2, "good push: %d %s", code, body)

	raw := func(body []byte, headers map[string]string) (int, string) {
		req, err := http.NewRequest("POST", push, bytes.NewReader(body))
		testutil.Ok(t, err)
		req.Header.Set("X-Scope-OrgID", "t")
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		testutil.Ok(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	good, err := (&prompb.WriteRequest{Timeseries: genSeries(3, now+1000)}).Marshal()
	testutil.Ok(t, err)
	big := make([]byte, 200000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	lbl := func(kv ...string) []prompb.Label {
		var out []prompb.Label
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	encode := func(ls []prompb.Label) []byte {
		b, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Timestamp: now, Value: 1}}}}}).Marshal()
		testutil.Ok(t, err)
		return snappy.Encode(nil, b)
	}
	for _, tc := range []struct {
		name     string
		body     []byte
		headers  map[string]string
		wantCode int
		wantMsg  string
	}{
		{name: "garbage", body: []byte("this is not a remote write request"), wantCode: 400},
		{name: "bad snappy", body: []byte{0x05, 0xff, 0xff, 0xff, 0xff}, wantCode: 400},
		{name: "snappy claiming a huge length", body: []byte{0xff, 0xff, 0xff, 0x0f, 0x00}, wantCode: 413},
		{name: "truncated protobuf", body: snappy.Encode(nil, good[:len(good)-7]), wantCode: 400},
		{name: "not snappy at all", body: good, headers: map[string]string{"Content-Encoding": "gzip"}, wantCode: 415},
		{name: "oversized body", body: snappy.Encode(nil, big), wantCode: 413},
		{name: "empty labels", body: encode(nil), wantCode: 400, wantMsg: "err-mimir-missing-metric-name"},
		{name: "unsorted labels are sorted, as in Mimir", body: encode(lbl("__name__", "m", "z", "1", "a", "2")), wantCode: 204},
		{name: "duplicate labels", body: encode(lbl("__name__", "m", "a", "1", "a", "2")), wantCode: 400, wantMsg: "err-mimir-duplicate-label-names"},
		{name: "invalid label name", body: encode(lbl("__name__", "m", "1a", "x")), wantCode: 400, wantMsg: "err-mimir-label-invalid"},
		{name: "empty body", body: nil, wantCode: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := raw(tc.body, tc.headers)
			testutil.Equals(t, tc.wantCode, code, body)
			testutil.Assert(t, code < 400 || strings.TrimSpace(body) != "", "no message for %s", tc.name)
			if tc.wantMsg != "" {
				mustContain(t, body, tc.wantMsg)
			}
		})
	}
	code, _ = httpGet(s.url("/ready"), nil)
	testutil.Equals(t, 200, code)
	got := readStore(t, s.grpcAddr, "t")
	testutil.Equals(t, 21, len(got))
	testutil.Equals(t, map[int64]float64{now: 1}, got[`{__name__="m", a="2", tenant_id="t", z="1"}`])
	for _, samples := range got {
		_, ok := samples[now]
		testutil.Assert(t, ok, "a sample acknowledged before the bad requests is gone")
	}
}
