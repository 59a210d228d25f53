package store

import (
	"context"
	"net"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type sample struct {
	t int64
	v float64
	h *histogram.Histogram
}

// openDB opens a real Prometheus TSDB in a temp dir and appends the given series.
func openDB(t testing.TB, series map[string][]sample) *tsdb.DB {
	t.Helper()
	opts := tsdb.DefaultOptions()
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = db.Close() })
	app := db.Appender(context.Background())
	for ls, samples := range series {
		lset, err := parseLabels(ls)
		testutil.Ok(t, err)
		for _, s := range samples {
			if s.h != nil {
				_, err = app.AppendHistogram(0, lset, s.t, s.h, nil)
			} else {
				_, err = app.Append(0, lset, s.t, s.v)
			}
			testutil.Ok(t, err)
		}
	}
	testutil.Ok(t, app.Commit())
	return db
}

// parseLabels parses PromQL series notation: `up{job="x"}`.
func parseLabels(s string) (labels.Labels, error) {
	return parser.NewParser(parser.Options{}).ParseMetric(s)
}

// samplesN returns n float samples at 0, step, 2*step…
func samplesN(n int, step int64, f func(i int) float64) []sample {
	out := make([]sample, n)
	for i := range out {
		out[i] = sample{t: int64(i) * step, v: f(i)}
	}
	return out
}

// serve serves srv (a store and info server) on a loopback gRPC server behind tenancy's interceptors.
func serve(t testing.TB, srv interface {
	storepb.StoreServer
	infopb.InfoServer
}) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	cfg := tenancy.DefaultConfig()
	exempt := tenancy.GRPCExempt{"/thanos.info.Info/"}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(cfg.UnaryServerInterceptor(exempt)), grpc.ChainStreamInterceptor(cfg.StreamServerInterceptor(exempt)))
	storepb.RegisterStoreServer(s, srv)
	infopb.RegisterInfoServer(s, srv)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	c, conn, err := Dial(l.Addr().String())
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// collect runs a Series call and returns its series and warnings.
func collect(ctx context.Context, c storepb.StoreClient, r *storepb.SeriesRequest) ([]*storepb.Series, []string, error) {
	got, err := storetest.Series(ctx, c, r)
	return got.Series, got.Warnings, err
}

// decodeSamples decodes a wire series' XOR chunks into (t, v) pairs within [minT, maxT].
func decodeSamples(t testing.TB, s *storepb.Series, minT, maxT int64) []sample {
	t.Helper()
	cs, err := seriesFromPB(s)
	testutil.Ok(t, err)
	var out []sample
	it := cs.Iterator(nil)
	for it.Next() {
		ci := it.At().Chunk.Iterator(nil)
		for vt := ci.Next(); vt != 0; vt = ci.Next() {
			ts, v := ci.At()
			if ts >= minT && ts <= maxT {
				out = append(out, sample{t: ts, v: v})
			}
		}
		testutil.Ok(t, ci.Err())
	}
	testutil.Ok(t, it.Err())
	return out
}

func tenantCtx(tenants ...string) context.Context {
	return tenancy.OutgoingContext(context.Background(), tenants...)
}

// storetest decodes chunks without importing this package: its encodings must stay those of EncodingFromPB.
func TestChunkFromPBEncodings(t *testing.T) {
	for _, e := range []storepb.Chunk_Encoding{storepb.Chunk_XOR, storepb.Chunk_HISTOGRAM, storepb.Chunk_FLOAT_HISTOGRAM, 99} {
		want, ok := EncodingFromPB(e)
		data := []byte{0, 0}
		if ok {
			chk, err := chunkenc.NewEmptyChunk(want)
			testutil.Ok(t, err)
			data = chk.Bytes()
		}
		got, err := storetest.ChunkFromPB(&storepb.AggrChunk{Raw: &storepb.Chunk{Type: e, Data: data}})
		if !ok {
			testutil.NotOk(t, err, "encoding %d", e)
			continue
		}
		testutil.Ok(t, err, "encoding %d", e)
		testutil.Equals(t, want, got.Encoding(), "encoding %d", e)
	}
	_, err := storetest.ChunkFromPB(&storepb.AggrChunk{MinTime: 1, MaxTime: 2})
	testutil.NotOk(t, err, "a chunk without raw data")
}
