package store

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// benchDB holds 10k series (10 labels each) × 720 samples (2h at a 10s interval), compacted into a block, as
// an ingester's or a store-gateway's data would be.
func benchDB(b *testing.B) (*tsdb.DB, int) {
	b.Helper()
	const (
		nSeries  = 10_000
		nSamples = 720
	)
	db, err := tsdb.Open(b.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(b, err)
	b.Cleanup(func() { _ = db.Close() })
	lsets := make([]labels.Labels, nSeries)
	for s := range lsets {
		lsets[s] = labels.FromStrings("__name__", fmt.Sprintf("metric_%d", s%50), "job", "bench", "instance", fmt.Sprintf("host-%d:9100", s%500),
			"pod", fmt.Sprintf("pod-%d", s), "namespace", fmt.Sprintf("ns-%d", s%20), "cluster", "eu-1", "team", fmt.Sprintf("team-%d", s%7),
			"env", "prod", "region", "eu", "series", fmt.Sprint(s))
	}
	// Time-major, as scrapes arrive: the head only accepts samples near its newest one.
	for i := 0; i < nSamples; i++ {
		app := db.Appender(context.Background())
		for s, lset := range lsets {
			_, err := app.Append(0, lset, int64(i)*10_000, float64(s+i))
			testutil.Ok(b, err)
		}
		testutil.Ok(b, app.Commit())
	}
	testutil.Ok(b, db.CompactHead(tsdb.NewRangeHead(db.Head(), 0, nSamples*10_000)))
	return db, nSeries * nSamples
}

// BenchmarkSeries reads every series with its chunks, directly from the TSDB (the baseline) and through
// TSDBStore over gRPC on loopback; series/s and samples/s are reported per op.
func BenchmarkSeries(b *testing.B) {
	db, nSamples := benchDB(b)
	ms := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "job", "bench")}

	b.Run("direct-tsdb", func(b *testing.B) {
		b.ReportAllocs()
		cpu := cpuSeconds()
		for b.Loop() {
			q, err := db.ChunkQuerier(0, math.MaxInt64)
			testutil.Ok(b, err)
			set := q.Select(context.Background(), true, nil, ms...)
			series, chunkBytes := 0, 0
			for set.Next() {
				it := set.At().Iterator(nil)
				for it.Next() {
					chunkBytes += len(it.At().Chunk.Bytes())
				}
				series++
			}
			testutil.Ok(b, set.Err())
			testutil.Ok(b, q.Close())
			testutil.Equals(b, 10_000, series)
		}
		report(b, 10_000, nSamples, cpuSeconds()-cpu)
	})

	c := serve(b, NewTSDBStore(SingleTenant("t", db), log.NewNopLogger()))
	for _, batch := range []int64{0, DefaultResponseBatchSize} {
		b.Run(fmt.Sprintf("storeapi-grpc-loopback-batch-%d", batch), func(b *testing.B) {
			req := &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: MatchersToPB(ms...), ResponseBatchSize: batch}
			b.ReportAllocs()
			cpu := cpuSeconds()
			for b.Loop() {
				series, _, err := collect(tenantCtx("t"), c, req)
				testutil.Ok(b, err)
				testutil.Equals(b, 10_000, len(series))
			}
			report(b, 10_000, nSamples, cpuSeconds()-cpu)
		})
	}
}

// report adds throughput per wall second and per CPU second of the whole process (for the gRPC case that is
// server and client together, so per-core figures are conservative for either side alone).
func report(b *testing.B, series, samples int, cpu float64) {
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(series)/sec, "series/s")
	b.ReportMetric(float64(samples)/sec, "samples/s")
	if cpu > 0 {
		perOp := cpu / float64(b.N)
		b.ReportMetric(float64(series)/perOp, "series/cpu-s")
		b.ReportMetric(float64(samples)/perOp, "samples/cpu-s")
	}
}

// cpuSeconds is the CPU time (user + system) this process has used so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
