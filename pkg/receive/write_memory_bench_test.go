package receive

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// BenchmarkIngesterMemory: where issue 17's memory goal (≤ 2.5 KB RSS per series per replica after 10 minutes of
// `make bench-write`'s load) stands against the TSDB it is built on. One ingester (the default config, the
// ingester's GOGC of 20) is given, in one process and without the network, what each ingester of that soak
// stores: 100k series of 11 labels, BENCH_MEMORY_ROUNDS samples per series (default 1,800: ten minutes at the
// ~300k samples/s the soak reaches on a 2-vCPU host), one per series per round, rounds spread evenly over ten
// minutes of timestamps, counters as pkg/loadgen's:
//   - head: appended to the tenant's TSDB directly (Prometheus's appender, by reference after the first round):
//     Prometheus's head alone, the floor of any ingester built on it;
//   - grpc: the requests as a distributor forwards them, over loopback gRPC to the ingester's RemoteWrite: the
//     same plus what Strata keeps per series (seriesRefs, the limiter, pooled requests and decoder slabs).
//
// Both end as the TSDB does every minute (full head chunks written out and referenced), then measure.
//
// Reported per series, after a collection: live-KB (the heap the data keeps: live heap after the load minus
// before it, the load's own requests excluded), gogc-KB (live-KB × 1.2: the heap GOGC 20 lets it reach between
// collections) and rss-KB (this process's resident set after minus before, with the free pages returned to the
// system at both: the least the data needs resident). A strata process adds its fixed cost (binary pages and
// runtime: ~84 MB RSS idle, 0.84 KB per series at 100k) and what its runtime has not returned yet.
// BENCH_MEMORY_PROFILE=DIR writes the heap profile at the end of each layer into DIR. Run with
// `make bench-write-memory`.
func BenchmarkIngesterMemory(b *testing.B) {
	rounds := 1800
	if s := os.Getenv("BENCH_MEMORY_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_MEMORY_ROUNDS=%q: want a positive integer", s)
		}
		rounds = n
	}
	pool := benchPoolN(benchLayersSeries)
	for _, layer := range []string{"head", "grpc"} {
		b.Run("layer="+layer, func(b *testing.B) {
			for range b.N {
				benchmarkIngesterMemory(b, pool, layer, rounds)
			}
		})
	}
}

func benchmarkIngesterMemory(b *testing.B, pool [][]*labelpb.Label, layer string, rounds int) {
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	ing := benchIngester(b)
	ctx := context.Background()
	batches := len(pool) / benchSeriesPerRequest
	step := int64(10*time.Minute/time.Millisecond) / int64(rounds)
	first := time.Now().UnixMilli() - int64(rounds)*step
	value := func(series, round int) float64 { return float64(round+1) * (1 + float64(series%16)/4) }

	// What the load itself keeps (requests, references) is built before the first measurement.
	var write func(k, round int, t int64)
	switch layer {
	case "head":
		u, err := ing.getOrOpen(benchTenant, 0)
		if err != nil {
			b.Fatal(err)
		}
		refs := make([]storage.SeriesRef, len(pool))
		// The head keeps the label sets it creates series with (as the ingester's copies): they are the head's,
		// built inside the measurement, in the first round.
		lsets := make([]labels.Labels, len(pool))
		write = func(k, round int, t int64) {
			if round == 0 {
				for s := k * benchSeriesPerRequest; s < (k+1)*benchSeriesPerRequest; s++ {
					lb := labels.NewScratchBuilder(len(pool[s]))
					for _, l := range pool[s] {
						lb.Add(l.Name, l.Value)
					}
					lsets[s] = lb.Labels()
				}
			}
			app := u.db.Appender(ctx)
			for s := k * benchSeriesPerRequest; s < (k+1)*benchSeriesPerRequest; s++ {
				ref, err := app.Append(refs[s], lsets[s], t, value(s, round))
				if err != nil {
					b.Fatal(err)
				}
				refs[s] = ref
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	case "grpc":
		conn := serveIngester(b, ing)
		octx := tenancy.OutgoingContext(ctx, benchTenant)
		reqs := make([]*storepb.WriteRequest, batches)
		for k := range reqs {
			reqs[k] = benchRequest(pool, k, first)
			reqs[k].Tenant = benchTenant
		}
		raw := &rawMessage{}
		write = func(k, round int, t int64) {
			req := reqs[k]
			for j, ts := range req.Timeseries {
				ts.Samples[0].Timestamp, ts.Samples[0].Value = t, value(k*benchSeriesPerRequest+j, round)
			}
			var err error
			if raw.b, err = req.MarshalVT(); err != nil {
				b.Fatal(err)
			}
			if err := conn.Invoke(octx, "/thanos.WriteableStore/RemoteWrite", raw, &storepb.WriteResponse{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	before := settledMemory()
	b.ResetTimer()
	for round := range rounds {
		t := first + int64(round)*step
		for k := range batches {
			write(k, round, t)
		}
	}
	b.StopTimer()
	// As the TSDB does every minute: full head chunks are written out and referenced (their bytes leave the heap).
	u, err := ing.getOrOpen(benchTenant, 0)
	if err != nil {
		b.Fatal(err)
	}
	u.db.ForceHeadMMap()
	after := settledMemory()
	if dir := os.Getenv("BENCH_MEMORY_PROFILE"); dir != "" {
		writeHeapProfile(b, filepath.Join(dir, "ingester-memory-"+layer+".heap.pb.gz"))
	}
	perSeries := func(before, after uint64) float64 {
		return (float64(after) - float64(before)) / 1024 / float64(len(pool))
	}
	live := perSeries(before.live, after.live)
	b.ReportMetric(live, "live-KB/series")
	b.ReportMetric(live*1.2, "gogc-KB/series")
	if after.rss > 0 {
		b.ReportMetric(perSeries(before.rss, after.rss), "rss-KB/series")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rounds*len(pool)), "ns/sample")
	runtime.KeepAlive(write)
}

// writeHeapProfile writes the heap profile (what is live at the last collection) to path.
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// memoryFigures are a process's live heap and resident set.
type memoryFigures struct{ live, rss uint64 }

// settledMemory returns the live heap (as the last collection marked it, /gc/heap/live:bytes) and VmRSS once
// the free pages are returned to the system (debug.FreeOSMemory, which collects first: the least RSS that heap
// needs; a server's runtime returns them gradually, and its RSS is higher).
func settledMemory() memoryFigures {
	debug.FreeOSMemory()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	f := memoryFigures{live: sample[0].Value.Uint64()}
	// /proc/self/statm: size, resident, … in pages.
	if s, err := os.ReadFile("/proc/self/statm"); err == nil {
		if fields := strings.Fields(string(s)); len(fields) > 1 {
			if pages, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
				f.rss = pages * uint64(os.Getpagesize())
			}
		}
	}
	return f
}
