package receive

import (
	"context"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// benchLayersSeries is the write benchmark's (make bench-write) number of series: enough that the head's maps and
// series do not fit in the CPU's caches, as in a real ingester.
const benchLayersSeries = 100_000

// BenchmarkIngesterLayers: what a sample costs at each layer of the ingester's write path, in one process, over
// the write benchmark's 100k series (one sample per series per request of 2,000, cycling through them):
//   - head: Prometheus's head alone, the ingester's own TSDB (same options), appended by ready-made label sets
//     (Appender.Append by labels, one Commit per request): the floor of any ingester built on this TSDB;
//   - push: Ingester.Push of decoded requests: the labels built from the request, looked up, appended and
//     committed under the tenant's locks;
//   - grpc: the forwarded write as a distributor sends it, over loopback gRPC: the message received, decoded and
//     validated, then Push.
//
// ns/sample of each against head's, from the same run, is the overhead of each layer. Run with
// `make bench-write-layers`.
func BenchmarkIngesterLayers(b *testing.B) {
	pool := benchPoolN(benchLayersSeries)
	for _, layer := range []string{"head", "push", "grpc"} {
		b.Run("layer="+layer, func(b *testing.B) { benchmarkIngesterLayer(b, pool, layer) })
	}
}

func benchmarkIngesterLayer(b *testing.B, pool [][]*labelpb.Label, layer string) {
	ing := benchIngester(b)
	ctx := context.Background()

	batches := len(pool) / benchSeriesPerRequest
	// Iteration i writes batch i%batches at round i/batches's time; the warm-up writes every batch at first.
	first, step := benchTimes(b.N/batches + 1)

	var write func(k int, t int64) // writes batch k at t, timed
	prepare := func(int, int64) {}
	// The requests are built once (garbage made between the timed parts would be collected in them) and given
	// each iteration's time in place.
	// They are decoded as the ingester decodes a forwarded write (strings aliasing the received bytes): the pool's
	// strings are scattered in memory, and reading them would cost more than the code does.
	reqs := make([]*storepb.WriteRequest, batches)
	for k := range reqs {
		req := benchRequest(pool, k, first)
		buf, err := req.MarshalVT()
		if err != nil {
			b.Fatal(err)
		}
		w := &forwardedWrite{}
		if err := w.UnmarshalInPlace(buf, func() {}); err != nil {
			b.Fatal(err)
		}
		if err := w.decodeRaw(); err != nil {
			b.Fatal(err)
		}
		reqs[k] = &storepb.WriteRequest{Timeseries: w.series}
	}
	request := func(k int, t int64) *storepb.WriteRequest {
		for _, ts := range reqs[k].Timeseries {
			ts.Samples[0].Timestamp, ts.Samples[0].Value = t, float64(t)/1000
		}
		return reqs[k]
	}
	switch layer {
	case "head":
		u, err := ing.getOrOpen(benchTenant, 0)
		if err != nil {
			b.Fatal(err)
		}
		// The series are created with label sets of their own (as the ingester's are: copies), so that looking one
		// up compares two strings, not one with itself.
		build := func() []labels.Labels {
			lsets := make([]labels.Labels, len(pool))
			for k, ls := range pool {
				lb := labels.NewScratchBuilder(len(ls))
				for _, l := range ls {
					lb.Add(l.Name, l.Value)
				}
				lsets[k] = lb.Labels()
			}
			return lsets
		}
		lsets, created := build(), build()
		cur := created
		prepare = func(int, int64) { cur = lsets }
		write = func(k int, t int64) {
			app := u.db.Appender(ctx)
			for _, lset := range cur[k*benchSeriesPerRequest:][:benchSeriesPerRequest] {
				if _, err := app.Append(0, lset, t, float64(t)/1000); err != nil {
					b.Fatal(err)
				}
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	case "push":
		var req *storepb.WriteRequest
		prepare = func(k int, t int64) { req = request(k, t) }
		write = func(int, int64) {
			if err := ing.Push(ctx, benchTenant, req); err != nil {
				b.Fatal(err)
			}
		}
	case "grpc":
		conn := serveIngester(b, ing)
		octx := tenancy.OutgoingContext(ctx, benchTenant)
		raw := &rawMessage{}
		prepare = func(k int, t int64) {
			req := request(k, t)
			req.Tenant = benchTenant
			if n := req.SizeVT(); cap(raw.b) < n {
				raw.b = make([]byte, n, n+n/4)
			} else {
				raw.b = raw.b[:n]
			}
			if _, err := req.MarshalToSizedBufferVT(raw.b); err != nil {
				b.Fatal(err)
			}
		}
		write = func(int, int64) {
			if err := conn.Invoke(octx, "/thanos.WriteableStore/RemoteWrite", raw, &storepb.WriteResponse{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for k := range batches { // every series into the head, at first
		if layer != "head" {
			prepare(k, first)
		}
		write(k, first)
	}
	// Iteration i writes batch i%batches at round i/batches's time.
	at := func(i int) (int, int64) { return i % batches, first + int64(i/batches+1)*step }
	timeWrites(b, func(i int) { prepare(at(i)) }, func(i int) { write(at(i)) })
}
