package sidecar

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

var promExt = labels.FromStrings("cluster", "eu1", "replica", "a")

// testNow is the sidecars' clock in tests.
var testNow = time.UnixMilli(1_800_000_000_000)

// testSeries are two series of 130 samples 15s apart (so three chunks of 50 in streamed answers, two of 120
// and 10 in encoded sample answers), values a function of series and time.
func testSeries() []fakeSeries {
	var out []fakeSeries
	for i, job := range []string{"api", "db"} {
		s := fakeSeries{lset: labels.FromStrings("__name__", "up", "job", job)}
		for k := range 130 {
			t := int64(k) * 15000
			s.samples = append(s.samples, sample{t: t, v: float64(i*1000) + float64(k)/4})
		}
		out = append(out, s)
	}
	return out
}

func newTestSidecar(t *testing.T, f *fakeProm, bkt objstore.Bucket, mod func(*Config)) *Sidecar {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PrometheusURL = f.srv.URL
	cfg.Tenant = "team-a"
	cfg.TSDBPath = t.TempDir()
	cfg.PrometheusReadyTimeout = 10 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	if bkt == nil {
		bkt = objstore.NewInMemBucket()
	}
	s, err := New(cfg, bkt, log.NewNopLogger(), prometheus.NewRegistry(), WithClock(func() time.Time { return testNow }))
	testutil.Ok(t, err)
	s.retryInterval = 10 * time.Millisecond
	return s
}

// runSidecar runs s until the test ends (or stop is called) and returns once it is ready, or with Run's error.
func runSidecar(t *testing.T, s *Sidecar) (stop func() error, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, errc := make(chan struct{}), make(chan error, 1)
	go func() { errc <- s.Run(ctx, func() { close(ready) }) }()
	var once bool
	stop = func() error {
		if once {
			return nil
		}
		once = true
		cancel()
		return <-errc
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case <-ready:
		return stop, nil
	case err := <-errc:
		once = true
		cancel()
		return stop, err
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar neither ready nor failed within 20s")
		return stop, nil
	}
}

func TestSidecar_ExternalLabelsAtStart(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ext        labels.Labels
		failConfig int // config requests answered 503 first
		timeout    time.Duration
		wantErr    string // empty: ready with ext as its labels
	}{
		{name: "labels", ext: promExt},
		{name: "Prometheus starting: retried until it answers", ext: promExt, failConfig: 3},
		{name: "no external labels: refused with Thanos's message", ext: labels.EmptyLabels(), wantErr: "no external labels configured on Prometheus server, uniquely identifying external labels must be configured; see https://thanos.io/tip/thanos/storage.md#external-labels"},
		{name: "tenant_id of the same tenant", ext: labels.FromStrings("cluster", "eu1", "tenant_id", "team-a")},
		{name: "tenant_id of another tenant: refused", ext: labels.FromStrings("cluster", "eu1", "tenant_id", "team-b"), wantErr: `external label tenant_id="team-b" names another tenant than --tenant=team-a`},
		{name: "Prometheus never answers: bounded wait", ext: promExt, failConfig: 1 << 30, timeout: 300 * time.Millisecond, wantErr: "did not answer with its external labels within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeProm(t, tc.ext, testSeries()...)
			f.failConfig = tc.failConfig
			s := newTestSidecar(t, f, nil, func(c *Config) {
				if tc.timeout > 0 {
					c.PrometheusReadyTimeout = tc.timeout
				}
			})
			_, err := runSidecar(t, s)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.ext, s.ExternalLabels())
			want := labels.NewBuilder(tc.ext)
			want.Set("tenant_id", "team-a")
			testutil.Equals(t, want.Labels(), s.blockLabels())
		})
	}
}

func TestSidecar_RefreshKeepsLabelsPrometheusDropped(t *testing.T) {
	f := newFakeProm(t, promExt)
	s := newTestSidecar(t, f, nil, nil)
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)

	f.mtx.Lock()
	f.configYAML = "global:\n  external_labels:\n    cluster: eu2\n    replica: b\n"
	f.mtx.Unlock()
	s.refresh(context.Background())
	testutil.Equals(t, labels.FromStrings("cluster", "eu2", "replica", "b"), s.ExternalLabels())

	f.mtx.Lock()
	f.configYAML = "global:\n  scrape_interval: 1m\n"
	f.mtx.Unlock()
	s.refresh(context.Background())
	testutil.Equals(t, labels.FromStrings("cluster", "eu2", "replica", "b"), s.ExternalLabels())
}

// seriesOf calls the sidecar's StoreAPI Series in process as tenant and returns "labels: t=v …" per series.
func seriesOf(t *testing.T, s *Sidecar, tenant string, req *storepb.SeriesRequest) ([]string, error) {
	t.Helper()
	ctx := context.Background()
	if tenant != "" {
		ctx = tenancy.WithTenants(ctx, []string{tenant})
	}
	srv := storetest.NewSeriesServer(ctx)
	if err := s.Store().Series(req, srv); err != nil {
		return nil, err
	}
	var out []string
	for _, series := range srv.Series {
		smp, err := storetest.SeriesSamples(series)
		testutil.Ok(t, err)
		out = append(out, store.LabelsFromPB(series.Labels).String()+" "+summarize(smp))
	}
	return out, nil
}

// summarize writes samples as count, first and last.
func summarize(smp []storetest.Sample) string {
	if len(smp) == 0 {
		return "no samples"
	}
	return strings.Join([]string{
		"n=" + itoa(len(smp)),
		"first=" + itoa(int(smp[0].T)) + ":" + ftoa(smp[0].V),
		"last=" + itoa(int(smp[len(smp)-1].T)) + ":" + ftoa(smp[len(smp)-1].V),
	}, " ")
}

func TestStore_Series(t *testing.T) {
	const (
		api = `{__name__="up", cluster="eu1", job="api", replica="a", tenant_id="team-a"}`
		db  = `{__name__="up", cluster="eu1", job="db", replica="a", tenant_id="team-a"}`
	)
	all := []string{api + " n=130 first=0:0 last=1935000:32.25", db + " n=130 first=0:1000 last=1935000:1032.25"}
	m := func(typ storepb.LabelMatcher_Type, name, value string) *storepb.LabelMatcher {
		return &storepb.LabelMatcher{Type: typ, Name: name, Value: value}
	}
	up := m(storepb.LabelMatcher_EQ, "__name__", "up")
	for _, tc := range []struct {
		name     string
		tenant   string
		matchers []*storepb.LabelMatcher
		minT     int64
		maxT     int64
		want     []string
		wantCode codes.Code
		// sent are the matchers Prometheus gets ("" when it must not be asked at all).
		sent string
	}{
		{name: "all", tenant: "team-a", matchers: []*storepb.LabelMatcher{up}, want: all, sent: `__name__="up"`},
		{name: "by a series label", tenant: "team-a", matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_EQ, "job", "db")}, want: all[1:], sent: `__name__="up",job="db"`},
		{name: "matching external labels: not sent to Prometheus", tenant: "team-a",
			matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_EQ, "cluster", "eu1"), m(storepb.LabelMatcher_RE, "replica", "a|b"), m(storepb.LabelMatcher_EQ, "tenant_id", "team-a")},
			want:     all, sent: `__name__="up"`},
		{name: "an external label that does not match: no series, Prometheus not asked", tenant: "team-a",
			matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_EQ, "cluster", "us1")}},
		{name: "external label ruled out by a negative matcher", tenant: "team-a",
			matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_NEQ, "replica", "a")}},
		{name: "another tenant's tenant_id", tenant: "team-a", matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_EQ, "tenant_id", "team-b")}},
		{name: "another tenant's request: no series, Prometheus not asked", tenant: "team-b", matchers: []*storepb.LabelMatcher{up}},
		{name: "no tenant: refused", matchers: []*storepb.LabelMatcher{up}, wantCode: codes.Unauthenticated},
		{name: "only external-label matchers: refused as Thanos does", tenant: "team-a", matchers: []*storepb.LabelMatcher{m(storepb.LabelMatcher_EQ, "cluster", "eu1")}, wantCode: codes.InvalidArgument},
		{name: "time range passed on", tenant: "team-a", matchers: []*storepb.LabelMatcher{up, m(storepb.LabelMatcher_EQ, "job", "api")}, minT: 15000, maxT: 60000,
			want: []string{api + " n=4 first=15000:0.25 last=60000:1"}, sent: `__name__="up",job="api"`},
	} {
		for _, samplesOnly := range []bool{false, true} {
			name := tc.name + "/streamed"
			if samplesOnly {
				name = tc.name + "/samples"
			}
			t.Run(name, func(t *testing.T) {
				f := newFakeProm(t, promExt, testSeries()...)
				f.samplesOnly = samplesOnly
				s := newTestSidecar(t, f, nil, nil)
				_, err := runSidecar(t, s)
				testutil.Ok(t, err)
				minT, maxT := tc.minT, tc.maxT
				if minT == 0 && maxT == 0 {
					minT, maxT = math.MinInt64, math.MaxInt64
				}
				got, err := seriesOf(t, s, tc.tenant, &storepb.SeriesRequest{MinTime: minT, MaxTime: maxT, Matchers: tc.matchers})
				if tc.wantCode != codes.OK {
					testutil.NotOk(t, err)
					testutil.Equals(t, tc.wantCode, status.Code(err))
					return
				}
				testutil.Ok(t, err)
				testutil.Equals(t, tc.want, got)
				reads := f.readRequests()
				if tc.sent == "" {
					testutil.Equals(t, 0, len(reads))
					return
				}
				testutil.Equals(t, 1, len(reads))
				var sent []string
				for _, pm := range reads[0].Matchers {
					sent = append(sent, labels.MustNewMatcher(labels.MatchType(pm.Type), pm.Name, pm.Value).String())
				}
				testutil.Equals(t, tc.sent, strings.Join(sent, ","))
				testutil.Equals(t, minT, reads[0].StartTimestampMs)
				testutil.Equals(t, maxT, reads[0].EndTimestampMs)
			})
		}
	}
}

func TestStore_SeriesChunks(t *testing.T) {
	// Streamed chunks are passed on as Prometheus cut them (a series over several frames joined into one);
	// samples are encoded into chunks of up to 120.
	for _, tc := range []struct {
		name        string
		samplesOnly bool
		want        [][2]int64 // min and max time of each chunk
	}{
		{name: "streamed", want: [][2]int64{{0, 735000}, {750000, 1485000}, {1500000, 1935000}}},
		{name: "samples", samplesOnly: true, want: [][2]int64{{0, 1785000}, {1800000, 1935000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeProm(t, promExt, testSeries()...)
			f.samplesOnly = tc.samplesOnly
			s := newTestSidecar(t, f, nil, nil)
			_, err := runSidecar(t, s)
			testutil.Ok(t, err)
			srv := storetest.NewSeriesServer(tenancy.WithTenants(context.Background(), []string{"team-a"}))
			testutil.Ok(t, s.Store().Series(&storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
				Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "job", Value: "api"}}}, srv))
			testutil.Equals(t, 1, len(srv.Series))
			var got [][2]int64
			for _, c := range srv.Series[0].Chunks {
				testutil.Equals(t, storepb.Chunk_XOR, c.Raw.Type)
				got = append(got, [2]int64{c.MinTime, c.MaxTime})
			}
			testutil.Equals(t, tc.want, got)
		})
	}
}

func TestStore_SkipChunks(t *testing.T) {
	f := newFakeProm(t, promExt, testSeries()...)
	s := newTestSidecar(t, f, nil, nil)
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)
	srv := storetest.NewSeriesServer(tenancy.WithTenants(context.Background(), []string{"team-a"}))
	testutil.Ok(t, s.Store().Series(&storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, SkipChunks: true,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}, srv))
	var got []string
	for _, series := range srv.Series {
		testutil.Equals(t, 0, len(series.Chunks))
		got = append(got, store.LabelsFromPB(series.Labels).String())
	}
	testutil.Equals(t, []string{
		`{__name__="up", cluster="eu1", job="api", replica="a", tenant_id="team-a"}`,
		`{__name__="up", cluster="eu1", job="db", replica="a", tenant_id="team-a"}`,
	}, got)
	testutil.Equals(t, 0, len(f.readRequests())) // label sets from /api/v1/series, no data read
}

func TestStore_Labels(t *testing.T) {
	f := newFakeProm(t, promExt, testSeries()...)
	s := newTestSidecar(t, f, nil, nil)
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)
	ctx := tenancy.WithTenants(context.Background(), []string{"team-a"})
	eq := func(n, v string) *storepb.LabelMatcher {
		return &storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: n, Value: v}
	}

	for _, tc := range []struct {
		name     string
		ctx      context.Context
		label    string // "": label names
		matchers []*storepb.LabelMatcher
		want     []string
	}{
		{name: "names, external ones included", ctx: ctx, want: []string{"__name__", "cluster", "job", "replica", "tenant_id"}},
		{name: "names, external label ruled out", ctx: ctx, matchers: []*storepb.LabelMatcher{eq("cluster", "us1")}, want: []string{}},
		{name: "values of a series label", ctx: ctx, label: "job", want: []string{"api", "db"}},
		{name: "values of a series label, by matcher", ctx: ctx, label: "job", matchers: []*storepb.LabelMatcher{eq("job", "db"), eq("replica", "a")}, want: []string{"db"}},
		{name: "values of an external label", ctx: ctx, label: "cluster", want: []string{"eu1"}},
		{name: "values of tenant_id", ctx: ctx, label: "tenant_id", want: []string{"team-a"}},
		{name: "values of an external label, no series matches", ctx: ctx, label: "cluster", matchers: []*storepb.LabelMatcher{eq("job", "nope")}, want: []string{}},
		{name: "another tenant", ctx: tenancy.WithTenants(context.Background(), []string{"team-b"}), label: "job", want: []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.label == "" {
				resp, err := s.Store().LabelNames(tc.ctx, &storepb.LabelNamesRequest{Start: math.MinInt64, End: math.MaxInt64, Matchers: tc.matchers})
				testutil.Ok(t, err)
				testutil.Equals(t, tc.want, resp.Names)
				return
			}
			resp, err := s.Store().LabelValues(tc.ctx, &storepb.LabelValuesRequest{Label: tc.label, Start: math.MinInt64, End: math.MaxInt64, Matchers: tc.matchers})
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, resp.Values)
		})
	}
}

func TestStore_Info(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lowest  string // prometheus_tsdb_lowest_timestamp_seconds; "": /metrics fails
		wantMin int64
	}{
		{name: "data since", lowest: "1.796592018e+09", wantMin: 1796592018000},
		{name: "empty TSDB (MaxInt64/1000 s): now, not the future", lowest: "9.223372036854776e+15", wantMin: testNow.UnixMilli()},
		{name: "lowest timestamp in the future: now", lowest: "1.9e+09", wantMin: testNow.UnixMilli()},
		{name: "unknown: unbounded", lowest: "", wantMin: math.MinInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeProm(t, promExt, testSeries()...)
			f.lowest = tc.lowest
			s := newTestSidecar(t, f, nil, nil)
			_, err := runSidecar(t, s)
			testutil.Ok(t, err)
			resp, err := s.Store().Info(context.Background(), &infopb.InfoRequest{})
			testutil.Ok(t, err)
			testutil.Equals(t, store.ComponentSidecar, resp.ComponentType)
			testutil.Equals(t, 1, len(resp.LabelSets))
			testutil.Equals(t, `{cluster="eu1", replica="a", tenant_id="team-a"}`, store.LabelsFromPB(resp.LabelSets[0].Labels).String())
			testutil.Equals(t, tc.wantMin, resp.Store.MinTime)
			testutil.Equals(t, int64(math.MaxInt64), resp.Store.MaxTime)
		})
	}
}

func TestSidecar_StartTimeReadAgainWhileUnknown(t *testing.T) {
	// A Prometheus that held nothing when the sidecar started: the next Info asks again, no refresh interval wait.
	f := newFakeProm(t, promExt)
	f.lowest = "9.223372036854776e+15"
	s := newTestSidecar(t, f, nil, nil)
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)
	minT, err := s.startTime()
	testutil.Ok(t, err)
	testutil.Equals(t, testNow.UnixMilli(), minT)
	f.mtx.Lock()
	f.lowest = "1.5e+09"
	f.mtx.Unlock()
	minT, err = s.startTime()
	testutil.Ok(t, err)
	testutil.Equals(t, int64(1_500_000_000_000), minT)
}

func TestStore_UnavailableUntilReady(t *testing.T) {
	// Before Prometheus's external labels are read, the StoreAPI answers Unavailable: its series would lack them.
	f := newFakeProm(t, promExt, testSeries()...)
	s := newTestSidecar(t, f, nil, nil)
	ctx := tenancy.WithTenants(context.Background(), []string{"team-a"})
	_, err := s.Store().Info(ctx, &infopb.InfoRequest{})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	_, err = seriesOf(t, s, "team-a", &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	_, err = s.Store().LabelNames(ctx, &storepb.LabelNamesRequest{})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	_, err = s.Store().LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job"})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	testutil.Equals(t, 0, len(f.readRequests()))

	_, err = runSidecar(t, s)
	testutil.Ok(t, err)
	_, err = s.Store().Info(ctx, &infopb.InfoRequest{})
	testutil.Ok(t, err)
}

func TestSamplesToChunks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ts      []int64
		want    [][3]int64 // min time, max time, samples of each chunk
		wantErr bool
	}{
		{name: "none", ts: nil, want: nil},
		{name: "one", ts: []int64{5}, want: [][3]int64{{5, 5, 1}}},
		{name: "cut at 120", ts: seq(250), want: [][3]int64{{0, 119, 120}, {120, 239, 120}, {240, 249, 10}}},
		{name: "exactly 120", ts: seq(120), want: [][3]int64{{0, 119, 120}}},
		{name: "out of order", ts: []int64{1, 3, 2}, wantErr: true},
		{name: "duplicate timestamp", ts: []int64{1, 1}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []*promSample
			for _, ts := range tc.ts {
				in = append(in, &promSample{Timestamp: ts, Value: float64(ts) * 1.5})
			}
			metas, err := samplesToChunks(in)
			if tc.wantErr {
				testutil.NotOk(t, err)
				return
			}
			testutil.Ok(t, err)
			var got [][3]int64
			var all []int64
			for _, m := range metas {
				got = append(got, [3]int64{m.MinTime, m.MaxTime, int64(m.Chunk.NumSamples())})
				it := m.Chunk.Iterator(nil)
				for it.Next() != 0 {
					ts, v := it.At()
					testutil.Equals(t, float64(ts)*1.5, v)
					all = append(all, ts)
				}
			}
			testutil.Equals(t, tc.want, got)
			testutil.Equals(t, len(tc.ts), len(all))
		})
	}
}

func seq(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func TestParseLowestTimestamp(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "prometheus_tsdb_lowest_timestamp_seconds 1.7e+09\n", want: 1_700_000_000_000},
		{in: "# HELP x\nprometheus_tsdb_lowest_timestamp_seconds_other 5\nprometheus_tsdb_lowest_timestamp_seconds 12\n", want: 12000},
		{in: "prometheus_tsdb_lowest_timestamp_seconds{} 12\n", want: 12000},
		{in: "prometheus_tsdb_lowest_timestamp_seconds 9.223372036854776e+15\n", want: math.MaxInt64},
		{in: "up 1\n", wantErr: true},
		{in: "prometheus_tsdb_lowest_timestamp_seconds abc\n", wantErr: true},
	} {
		got, err := parseLowestTimestamp(strings.NewReader(tc.in))
		if tc.wantErr {
			testutil.NotOk(t, err, tc.in)
			continue
		}
		testutil.Ok(t, err, tc.in)
		testutil.Equals(t, tc.want, got, tc.in)
	}
}

func TestParseExternalLabels(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		want    labels.Labels
		wantErr bool
	}{
		{yaml: "global:\n  external_labels:\n    replica: a\n    cluster: eu1\n", want: promExt},
		{yaml: "global:\n  scrape_interval: 15s\n", want: labels.EmptyLabels()},
		{yaml: "", want: labels.EmptyLabels()},
		{yaml: "global:\n  external_labels:\n    \"\": x\n", wantErr: true},
		{yaml: "global: [", wantErr: true},
	} {
		got, err := parseExternalLabels(tc.yaml)
		if tc.wantErr {
			testutil.NotOk(t, err, tc.yaml)
			continue
		}
		testutil.Ok(t, err, tc.yaml)
		testutil.Equals(t, tc.want, got, tc.yaml)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Tenant, ok.TSDBPath = "team-a", "/prometheus"
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "ok", mod: func(*Config) {}},
		{name: "no tenant", mod: func(c *Config) { c.Tenant = "" }, wantErr: "--tenant must be set"},
		{name: "invalid tenant", mod: func(c *Config) { c.Tenant = "a/b" }, wantErr: "--tenant"},
		{name: "reserved tenant", mod: func(c *Config) { c.Tenant = ".." }, wantErr: "--tenant"},
		{name: "no TSDB path", mod: func(c *Config) { c.TSDBPath = "" }, wantErr: "--tsdb.path must be set"},
		{name: "bad URL", mod: func(c *Config) { c.PrometheusURL = "localhost:9090" }, wantErr: "--prometheus.url"},
		{name: "no ship interval", mod: func(c *Config) { c.ShipInterval = 0 }, wantErr: "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
		})
	}
}

func TestStore_Limits(t *testing.T) {
	// The tenant's max_fetched_series_per_query and max_fetched_chunk_bytes_per_query bound one read, as in the
	// store-gateway: ResourceExhausted with the limit's message, whichever answer type Prometheus sends.
	for _, tc := range []struct {
		name      string
		maxSeries int
		maxBytes  int
		wantErr   string
	}{
		{name: "no limits"},
		{name: "within the limits", maxSeries: 2, maxBytes: 1 << 20},
		{name: "series over the limit", maxSeries: 1, wantErr: "the query exceeded the maximum number of series (limit: 1 series)"},
		{name: "chunk bytes over the limit", maxBytes: 100, wantErr: "the query exceeded the aggregated chunks size limit (limit: 100 bytes)"},
	} {
		for _, samplesOnly := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "/streamed", true: "/samples"}[samplesOnly], func(t *testing.T) {
				f := newFakeProm(t, promExt, testSeries()...)
				f.samplesOnly = samplesOnly
				limits := tenancy.DefaultLimits()
				limits.MaxFetchedSeriesPerQuery, limits.MaxFetchedChunkBytesPerQuery = tc.maxSeries, tc.maxBytes
				cfg := DefaultConfig()
				cfg.PrometheusURL, cfg.Tenant, cfg.TSDBPath = f.srv.URL, "team-a", t.TempDir()
				s, err := New(cfg, objstore.NewInMemBucket(), log.NewNopLogger(), prometheus.NewRegistry(),
					WithOverrides(tenancy.NewOverrides(limits, nil)), WithClock(func() time.Time { return testNow }))
				testutil.Ok(t, err)
				_, err = runSidecar(t, s)
				testutil.Ok(t, err)
				got, err := seriesOf(t, s, "team-a", &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
					Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}})
				if tc.wantErr == "" {
					testutil.Ok(t, err)
					testutil.Equals(t, 2, len(got))
					return
				}
				testutil.NotOk(t, err)
				testutil.Equals(t, codes.ResourceExhausted, status.Code(err))
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
			})
		}
	}
}

func TestStore_PrometheusDown(t *testing.T) {
	// Prometheus restarting (503) or killed (connection closed) while the sidecar runs: every StoreAPI read
	// answers Unavailable (a querier with partial responses goes on without the sidecar), Info still answers
	// from what was read, and the reads work again once Prometheus is back.
	ctx := tenancy.WithTenants(context.Background(), []string{"team-a"})
	upReq := &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}
	for _, down := range []string{"503", "reset"} {
		t.Run(down, func(t *testing.T) {
			f := newFakeProm(t, promExt, testSeries()...)
			s := newTestSidecar(t, f, nil, nil)
			_, err := runSidecar(t, s)
			testutil.Ok(t, err)

			f.mtx.Lock()
			f.down = down
			f.mtx.Unlock()
			_, err = seriesOf(t, s, "team-a", upReq)
			testutil.Equals(t, codes.Unavailable, status.Code(err), "series: %v", err)
			skip := &storepb.SeriesRequest{MinTime: upReq.MinTime, MaxTime: upReq.MaxTime, Matchers: upReq.Matchers, SkipChunks: true}
			_, err = seriesOf(t, s, "team-a", skip)
			testutil.Equals(t, codes.Unavailable, status.Code(err), "series without chunks: %v", err)
			_, err = s.Store().LabelNames(ctx, &storepb.LabelNamesRequest{Start: math.MinInt64, End: math.MaxInt64})
			testutil.Equals(t, codes.Unavailable, status.Code(err), "label names: %v", err)
			_, err = s.Store().LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job", Start: math.MinInt64, End: math.MaxInt64})
			testutil.Equals(t, codes.Unavailable, status.Code(err), "label values: %v", err)
			_, err = s.Store().LabelValues(ctx, &storepb.LabelValuesRequest{Label: "cluster", Start: math.MinInt64, End: math.MaxInt64})
			testutil.Equals(t, codes.Unavailable, status.Code(err), "external label values: %v", err)
			_, err = s.Store().Info(ctx, &infopb.InfoRequest{})
			testutil.Ok(t, err)

			f.mtx.Lock()
			f.down = ""
			f.mtx.Unlock()
			got, err := seriesOf(t, s, "team-a", upReq)
			testutil.Ok(t, err)
			testutil.Equals(t, 2, len(got))
		})
	}
}

func TestStore_HostileRequests(t *testing.T) {
	// Requests a client may send on purpose or by mistake get an answer or a clear status, never a panic nor
	// an opaque Internal error. Many or long matchers: Prometheus's server refuses a GET over 1 MiB (431), so
	// label names and series go as POST forms; label values (GET only) is refused as InvalidArgument.
	f := newFakeProm(t, promExt, testSeries()...)
	s := newTestSidecar(t, f, nil, nil)
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)
	ctx := tenancy.WithTenants(context.Background(), []string{"team-a"})
	m := func(typ storepb.LabelMatcher_Type, n, v string) *storepb.LabelMatcher {
		return &storepb.LabelMatcher{Type: typ, Name: n, Value: v}
	}
	many := []*storepb.LabelMatcher{m(storepb.LabelMatcher_EQ, "__name__", "up")}
	for i := range 100_000 {
		many = append(many, m(storepb.LabelMatcher_NEQ, "job", "not-"+itoa(i)))
	}
	longRegex := []*storepb.LabelMatcher{m(storepb.LabelMatcher_RE, "job", strings.Repeat("nope|", 300_000)+"api")}
	up := []*storepb.LabelMatcher{m(storepb.LabelMatcher_EQ, "__name__", "up")}
	for _, tc := range []struct {
		name       string
		tenant     string
		req        *storepb.SeriesRequest
		wantSeries int
		wantCode   codes.Code
	}{
		{name: "many matchers", tenant: "team-a", req: &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: many}, wantSeries: 2},
		{name: "many matchers, no chunks", tenant: "team-a", req: &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: many, SkipChunks: true}, wantSeries: 2},
		{name: "long regex, no chunks", tenant: "team-a", req: &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: longRegex, SkipChunks: true}, wantSeries: 1},
		{name: "invalid regex", tenant: "team-a", req: &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{m(storepb.LabelMatcher_RE, "job", "(")}}, wantCode: codes.InvalidArgument},
		{name: "unknown matcher type", tenant: "team-a", req: &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{m(17, "job", "api")}}, wantCode: codes.InvalidArgument},
		{name: "no matchers", tenant: "team-a", req: &storepb.SeriesRequest{MaxTime: math.MaxInt64}, wantCode: codes.InvalidArgument},
		{name: "min time after max time", tenant: "team-a", req: &storepb.SeriesRequest{MinTime: 1000, MaxTime: 10, Matchers: up}},
		{name: "no tenant", req: &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: up}, wantCode: codes.Unauthenticated},
		{name: "another tenant", tenant: "team-b", req: &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: up}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := seriesOf(t, s, tc.tenant, tc.req)
			testutil.Equals(t, tc.wantCode, status.Code(err), "%v", err)
			testutil.Equals(t, tc.wantSeries, len(got))
		})
	}

	names, err := s.Store().LabelNames(ctx, &storepb.LabelNamesRequest{Start: math.MinInt64, End: math.MaxInt64, Matchers: many})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "cluster", "job", "replica", "tenant_id"}, names.Names)
	_, err = s.Store().LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job", Start: math.MinInt64, End: math.MaxInt64, Matchers: many})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err), "%v", err)
	testutil.Assert(t, strings.Contains(err.Error(), "too many or too long matchers"), "%v", err)
}

func TestStore_ReadBoundedWithoutLimits(t *testing.T) {
	// With no per-tenant fetch limits, one read still holds at most maxReadChunkBytes of chunks (1 GiB; lowered
	// here): a giant answer of Prometheus is ResourceExhausted, whichever answer type, not an unbounded allocation.
	for _, samplesOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "streamed", true: "samples"}[samplesOnly], func(t *testing.T) {
			f := newFakeProm(t, promExt, testSeries()...)
			f.samplesOnly = samplesOnly
			s := newTestSidecar(t, f, nil, nil)
			_, err := runSidecar(t, s)
			testutil.Ok(t, err)
			req := &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
				Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}
			got, err := seriesOf(t, s, "team-a", req)
			testutil.Ok(t, err)
			testutil.Equals(t, 2, len(got))

			s.client.maxReadChunkBytes = 100
			_, err = seriesOf(t, s, "team-a", req)
			testutil.Equals(t, codes.ResourceExhausted, status.Code(err), "%v", err)
			testutil.Assert(t, strings.Contains(err.Error(), "more than 100 bytes of chunks"), "%v", err)
		})
	}
}
