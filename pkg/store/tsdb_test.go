package store

import (
	"bytes"
	"context"
	"math"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// tenantMap is a TenantDBs over fixed databases.
type tenantMap map[string]*tsdb.DB

func (m tenantMap) DB(t string) TenantDB {
	if db, ok := m[t]; ok {
		return db
	}
	return nil
}

func (m tenantMap) Tenants() []string {
	out := make([]string, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	return out
}

func eq(name, value string) *storepb.LabelMatcher {
	return &storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: name, Value: value}
}

func re(name, value string) *storepb.LabelMatcher {
	return &storepb.LabelMatcher{Type: storepb.LabelMatcher_RE, Name: name, Value: value}
}

func lsetsOf(series []*storepb.Series) []string {
	out := make([]string, 0, len(series))
	for _, s := range series {
		out = append(out, LabelsFromPB(s.Labels).String())
	}
	return out
}

func TestTSDBStoreSeries(t *testing.T) {
	const n = 300 // > 120 samples per chunk: several chunks per series
	dbA := openDB(t, map[string][]sample{
		`m`:                    samplesN(n, 1000, func(i int) float64 { return float64(i) }),
		`m{a="1"}`:             samplesN(n, 1000, func(i int) float64 { return float64(2 * i) }),
		`m{zone="z",b="2"}`:    samplesN(n, 1000, func(i int) float64 { return 1 }),
		`other{a="1"}`:         samplesN(10, 1000, func(i int) float64 { return 5 }),
		`up{tenant_id="fake"}`: samplesN(10, 1000, func(i int) float64 { return 1 }),
	})
	dbB := openDB(t, map[string][]sample{`m{a="1"}`: samplesN(10, 1000, func(i int) float64 { return 100 })})
	st := NewTSDBStore(tenantMap{"a": dbA, "b": dbB}, log.NewNopLogger(), WithExternalLabels(labels.FromStrings("cluster", "eu")), WithComponentType(ComponentReceive))
	c := serve(t, st)

	for _, tc := range []struct {
		name     string
		tenants  []string
		req      *storepb.SeriesRequest
		want     []string
		wantCode codes.Code
	}{
		{
			name:    "sorted after external labels are added",
			tenants: []string{"a"},
			req:     &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}},
			// The TSDB's order is m < m{a} < m{b,zone}; with cluster and tenant_id inserted, m{a} comes first.
			want: []string{`{__name__="m", a="1", cluster="eu", tenant_id="a"}`, `{__name__="m", b="2", cluster="eu", tenant_id="a", zone="z"}`, `{__name__="m", cluster="eu", tenant_id="a"}`},
		},
		{
			name:    "a series' own tenant_id is replaced by the store's",
			tenants: []string{"a"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "up")}},
			want:    []string{`{__name__="up", cluster="eu", tenant_id="a"}`},
		},
		{
			name:    "tenant b sees only its own",
			tenants: []string{"b"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", ".+")}},
			want:    []string{`{__name__="m", a="1", cluster="eu", tenant_id="b"}`},
		},
		{
			name:    "matching another tenant's tenant_id gives nothing",
			tenants: []string{"b"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", ".+"), eq("tenant_id", "a")}},
			want:    []string{},
		},
		{
			name:    "regex on tenant_id matches the caller's only",
			tenants: []string{"b"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "m"), re("tenant_id", ".+")}},
			want:    []string{`{__name__="m", a="1", cluster="eu", tenant_id="b"}`},
		},
		{
			name:    "federated request sees both, apart",
			tenants: []string{"a", "b"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("a", "1"), eq("__name__", "m")}},
			want:    []string{`{__name__="m", a="1", cluster="eu", tenant_id="a"}`, `{__name__="m", a="1", cluster="eu", tenant_id="b"}`},
		},
		{
			name:    "unknown tenant sees nothing",
			tenants: []string{"c"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", ".+")}},
			want:    []string{},
		},
		{
			name:    "external label mismatch",
			tenants: []string{"a"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "m"), eq("cluster", "us")}},
			want:    []string{},
		},
		{
			name:    "time range outside the data",
			tenants: []string{"a"},
			req:     &storepb.SeriesRequest{MinTime: 1e9, MaxTime: 2e9, Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}},
			want:    []string{},
		},
		{
			name:     "only external-label matchers",
			tenants:  []string{"a"},
			req:      &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("cluster", "eu")}},
			wantCode: codes.InvalidArgument,
		},
		{
			name:     "bad regex",
			tenants:  []string{"a"},
			req:      &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", "(")}},
			wantCode: codes.InvalidArgument,
		},
		{
			name:     "no tenant",
			req:      &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", ".+")}},
			wantCode: codes.Unauthenticated,
		},
		{
			name:    "limit",
			tenants: []string{"a"},
			req:     &storepb.SeriesRequest{MaxTime: math.MaxInt64, Limit: 1, Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}},
			want:    []string{`{__name__="m", a="1", cluster="eu", tenant_id="a"}`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.tenants != nil {
				ctx = tenantCtx(tc.tenants...)
			}
			series, _, err := collect(ctx, c, tc.req)
			if tc.wantCode != codes.OK {
				testutil.Equals(t, tc.wantCode, status.Code(err), "err: %v", err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, append([]string{}, lsetsOf(series)...))
		})
	}
}

// TestTSDBStoreChunksPassThrough checks that the bytes sent are the TSDB's own chunk bytes, for XOR and native
// histogram chunks, from the head and from a persisted block, and that skip_chunks sends none.
func TestTSDBStoreChunksPassThrough(t *testing.T) {
	hists := make([]sample, 200)
	for i, h := range tsdbutil.GenerateTestHistograms(200) {
		hists[i] = sample{t: int64(i) * 1000, h: h}
	}
	db := openDB(t, map[string][]sample{
		`floats{k="v"}`: samplesN(500, 15000, func(i int) float64 { return float64(i) * 1.5 }),
		`hist{k="v"}`:   hists,
	})
	// Persist part of the head so both a block and the head are read.
	testutil.Ok(t, db.CompactHead(tsdb.NewRangeHead(db.Head(), 0, 3_000_000)))
	testutil.Assert(t, len(db.Blocks()) == 1, "want one block, got %d", len(db.Blocks()))

	c := serve(t, NewTSDBStore(SingleTenant("t", db), log.NewNopLogger()))
	series, _, err := collect(tenantCtx("t"), c, &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("k", "v")}})
	testutil.Ok(t, err)
	testutil.Equals(t, 2, len(series))

	// The reference: the same chunks read directly from the TSDB.
	q, err := db.ChunkQuerier(0, math.MaxInt64)
	testutil.Ok(t, err)
	defer q.Close()
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "k", "v"))
	i := 0
	for ; set.Next(); i++ {
		want := set.At()
		got := series[i]
		testutil.Equals(t, labels.NewBuilder(want.Labels()).Set("tenant_id", "t").Labels(), LabelsFromPB(got.Labels))
		it := want.Iterator(nil)
		j := 0
		for ; it.Next(); j++ {
			m := it.At()
			testutil.Assert(t, j < len(got.Chunks), "fewer chunks sent than stored")
			gc := got.Chunks[j]
			testutil.Equals(t, m.MinTime, gc.MinTime)
			testutil.Equals(t, m.MaxTime, gc.MaxTime)
			enc, _ := EncodingToPB(m.Chunk.Encoding())
			testutil.Equals(t, enc, gc.Raw.Type)
			testutil.Assert(t, bytes.Equal(m.Chunk.Bytes(), gc.Raw.Data), "chunk %d of %s re-encoded", j, want.Labels())
		}
		testutil.Ok(t, it.Err())
		testutil.Equals(t, j, len(got.Chunks))
		testutil.Assert(t, j > 1, "want several chunks per series, got %d", j)
	}
	testutil.Ok(t, set.Err())
	testutil.Equals(t, 2, i)
	testutil.Equals(t, storepb.Chunk_HISTOGRAM, series[1].Chunks[0].Raw.Type)

	series, _, err = collect(tenantCtx("t"), c, &storepb.SeriesRequest{MaxTime: math.MaxInt64, SkipChunks: true, Matchers: []*storepb.LabelMatcher{eq("k", "v")}})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{`{__name__="floats", k="v", tenant_id="t"}`, `{__name__="hist", k="v", tenant_id="t"}`}, lsetsOf(series))
	for _, s := range series {
		testutil.Equals(t, 0, len(s.Chunks))
	}
}

func TestTSDBStoreLabels(t *testing.T) {
	dbA := openDB(t, map[string][]sample{
		`m{a="1",b="x"}`: samplesN(5, 1000, func(int) float64 { return 1 }),
		`m{a="2"}`:       samplesN(5, 1000, func(int) float64 { return 1 }),
		`n{c="3"}`:       samplesN(5, 1000, func(int) float64 { return 1 }),
	})
	dbB := openDB(t, map[string][]sample{`secret{s="1"}`: samplesN(5, 1000, func(int) float64 { return 1 })})
	c := serve(t, NewTSDBStore(tenantMap{"a": dbA, "b": dbB}, log.NewNopLogger()))
	ctx := tenantCtx("a")

	names, err := c.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "a", "b", "c", "tenant_id"}, names.Names)

	names, err = c.LabelNames(ctx, &storepb.LabelNamesRequest{End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "n")}})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "c", "tenant_id"}, names.Names)

	names, err = c.LabelNames(ctx, &storepb.LabelNamesRequest{End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("tenant_id", "b")}})
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(names.Names))

	vals, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "a", End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"1", "2"}, vals.Values)

	vals, err = c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "__name__", End: math.MaxInt64, Limit: 1})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"m"}, vals.Values)

	vals, err = c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "tenant_id", End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"a"}, vals.Values)

	vals, err = c.LabelValues(tenantCtx("a", "b"), &storepb.LabelValuesRequest{Label: "tenant_id", End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"a", "b"}, vals.Values)

	vals, err = c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "s", End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(vals.Values))

	_, err = c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "", End: math.MaxInt64})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
	_, err = c.LabelNames(context.Background(), &storepb.LabelNamesRequest{End: math.MaxInt64})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
}

func TestTSDBStoreInfo(t *testing.T) {
	dbA := openDB(t, map[string][]sample{`m`: {{t: 5000, v: 1}, {t: 9000, v: 1}}})
	dbB := openDB(t, map[string][]sample{`m`: {{t: 7000, v: 1}}})
	c := serve(t, NewTSDBStore(tenantMap{"a": dbA, "b": dbB}, log.NewNopLogger(), WithExternalLabels(labels.FromStrings("replica", "r1"))))

	testutil.Ok(t, c.RefreshInfo(context.Background(), 5e9))
	testutil.Equals(t, []labels.Labels{labels.FromStrings("replica", "r1", "tenant_id", "a"), labels.FromStrings("replica", "r1", "tenant_id", "b")}, c.LabelSets())
	minT, maxT := c.TimeRange()
	testutil.Equals(t, int64(5000), minT)
	testutil.Equals(t, int64(math.MaxInt64), maxT)

	// A caller naming a tenant learns only about that tenant.
	_, conn, err := Dial(c.String())
	testutil.Ok(t, err)
	defer conn.Close()
	resp, err := infopb.NewInfoClient(conn).Info(tenantCtx("b"), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(resp.LabelSets))
	testutil.Equals(t, int64(7000), resp.Store.MinTime)
	testutil.Equals(t, "store", resp.ComponentType)
}

var _ storage.ChunkQueryable = (*tsdb.DB)(nil)
