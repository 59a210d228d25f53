package query

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestCutOverContinuity is one Prometheus (external labels cluster, replica) moving from a sidecar to remote
// write, as the querier sees it: the sidecar's uploaded blocks carry the external labels in thanos.labels (its
// series do not have them), the sidecar's live store adds them to the head's series, and the remote-written
// series carry them as series labels (Prometheus adds them), with tenant_id added by every store. The stores
// overlap around the switch (the sidecar uploads and serves what Prometheus keeps scraping after it; the block
// holding the switch is uploaded after it). Every query over the whole period must answer exactly as
// Prometheus's engine over one TSDB holding each sample once, with and without replica deduplication: each
// series once, no sample missing or doubled at the cut-over.
func TestCutOverContinuity(t *testing.T) {
	data := eqDataset()
	ext := labels.FromStrings("cluster", "eu1", "replica", "prom-0")
	at := func(d time.Duration) int64 { return eqBase.Add(d).UnixMilli() }
	var (
		switchT  = at(3*time.Hour + 7*time.Second) // remote write sends samples after this
		uploaded = at(4 * time.Hour)               // the sidecar uploaded every block before this
		headMin  = at(2 * time.Hour)               // the head the sidecar serves starts here
	)
	before := func(ts int64) bool { return ts < uploaded }
	sidecarHead := func(ts int64) bool { return ts >= headMin }
	remoteWritten := func(ts int64) bool { return ts > switchT }

	// withExt is the dataset as Prometheus's remote write sends it: its external labels added to every series.
	withExt := func(series []harnessSeries, ext labels.Labels) []harnessSeries {
		out := make([]harnessSeries, len(series))
		for i, s := range series {
			b := labels.NewBuilder(s.lset)
			ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
			out[i] = harnessSeries{lset: b.Labels(), samples: s.samples}
		}
		return out
	}
	full := withExt(data, ext)

	sidecarBlocks := harnessServeBucketExt(t, harnessOpenDB(t, data, before), ext, block.SidecarSource)
	sidecarLive := harnessServe(t, harnessOpenDB(t, data, sidecarHead), store.WithExternalLabels(ext))
	ingester := harnessServe(t, harnessOpenDB(t, full, remoteWritten))
	ingesterBlocks := harnessServeBucket(t, harnessOpenDB(t, full, remoteWritten))

	phases := []struct {
		name   string
		stores []store.StoreClient
	}{
		// Right after the switch: the sidecar still runs, everything overlaps.
		{"sidecar-running", []store.StoreClient{sidecarBlocks, sidecarLive, ingester}},
		// The sidecar stopped after uploading the block that holds the switch.
		{"sidecar-stopped", []store.StoreClient{sidecarBlocks, ingester}},
		// Later: the ingesters shipped their blocks too; sidecar and ingester blocks overlap in the bucket.
		{"ingester-shipped", []store.StoreClient{sidecarBlocks, ingesterBlocks}},
	}
	queries := continuityQueries(t)
	evals := append(eqEvals(),
		harnessEval{name: "range-around-switch-15s", start: eqBase.Add(2*time.Hour + 50*time.Minute), end: eqBase.Add(3*time.Hour + 10*time.Minute), step: eqInterval},
		harnessEval{name: "instant-at-switch", instant: true, start: time.UnixMilli(switchT)},
	)
	logger := log.NewNopLogger()
	for _, dedup := range []struct {
		name          string
		replicaLabels []string
		refLabels     labels.Labels // the labels the answer keeps
	}{
		{"dedup-replica", []string{"replica"}, labels.FromStrings("cluster", "eu1")},
		{"no-replica-labels", nil, ext},
	} {
		ref := harnessOpenDB(t, withExt(data, dedup.refLabels), func(int64) bool { return true })
		for _, phase := range phases {
			t.Run(dedup.name+"/"+phase.name, func(t *testing.T) {
				proxy := store.NewProxy(func() []store.StoreClient { return phase.stores }, 0, logger, nil)
				h := &promqlHarness{
					ctx:          tenancy.WithTenants(context.Background(), []string{harnessTenant}),
					refDB:        ref,
					refEngine:    promql.NewEngine(refEngineOpts(logger)),
					strata:       NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), dedup.replicaLabels, nil),
					strataEngine: promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)),
				}
				points := 0
				for _, q := range queries {
					keepOrder := strings.HasPrefix(q.query, "sort(")
					for _, ev := range evals {
						if !ev.instant && strings.HasSuffix(q.query, "]") {
							continue // a range vector: instant queries only
						}
						c := h.compare(q.query, ev, keepOrder)
						testutil.Ok(t, c.refErr, "%s: the reference failed on %s", ev.name, q.query)
						if c.diff != "" {
							t.Errorf("%s (%s): %s\n  query: %s", ev.name, evalString(ev), c.diff, q.query)
						}
						points += c.refPoints
					}
				}
				testutil.Assert(t, points > 10000, "the queries returned only %d points", points)
			})
		}
	}
}

// continuityQueries are the rows of the equality table that read raw samples (range selectors show every
// sample, so a doubled or missing one shows), counters across the switch, histograms and aggregations over
// series.
func continuityQueries(t *testing.T) []eqQuery {
	names := []string{"rate", "increase", "resets", "changes", "sum-by-rate", "classic-quantile-sum-by-le",
		"native-raw", "native-quantile-sum", "native-increase"}
	var out []eqQuery
	for _, q := range eqQueries() {
		if slices.Contains(names, q.name) {
			out = append(out, q)
		}
	}
	testutil.Equals(t, len(names), len(out), "rows of the equality table not found")
	return append(out,
		eqQuery{name: "raw", query: `{__name__=~".+"}`},
		eqQuery{name: "raw-range", query: `http_requests_total[20m]`},
		eqQuery{name: "raw-everything", query: `{__name__=~".+"}[8h]`},
		eqQuery{name: "count-over-time", query: `count_over_time(http_requests_total[7h])`},
		eqQuery{name: "count-over-time-native", query: `count_over_time(rpc_latency_seconds[7h])`},
		eqQuery{name: "timestamps", query: `timestamp(node_memory_bytes)`},
		eqQuery{name: "sum-by-cluster", query: `sum by (cluster) (rate(http_requests_total[5m]))`},
		eqQuery{name: "cluster-matcher", query: `node_memory_bytes{cluster="eu1"}`},
		eqQuery{name: "count-series", query: `count by (__name__) ({__name__=~".+"})`},
	)
}

// TestCutOverContinuityHAPair is an HA pair of Prometheus servers (external label replica 0 and 1, scraping the
// same targets 400ms apart, each with a stretch it missed) moving from sidecars to remote write at different
// times. Deduplicated on replica, the querier must answer over the cut-over layouts exactly as it does over the
// two replicas' data held once each (no migration): the cut-over changes neither replica's samples, so the
// penalty algorithm picks the same samples.
func TestCutOverContinuityHAPair(t *testing.T) {
	at := func(d time.Duration) int64 { return eqBase.Add(d).UnixMilli() }
	type replica struct {
		ext                      labels.Labels
		shift                    int64 // ms added to every timestamp
		holeFrom, holeTo         int64 // samples missed (a restart)
		switchT, uploaded, head0 int64
	}
	replicas := []replica{
		{ext: labels.FromStrings("cluster", "eu1", "replica", "0"), holeFrom: at(3 * time.Hour), holeTo: at(3*time.Hour + 10*time.Minute),
			switchT: at(3*time.Hour + 7*time.Second), uploaded: at(4 * time.Hour), head0: at(2 * time.Hour)},
		{ext: labels.FromStrings("cluster", "eu1", "replica", "1"), shift: 400, holeFrom: at(time.Hour), holeTo: at(time.Hour + 20*time.Minute),
			switchT: at(3*time.Hour + 40*time.Minute), uploaded: at(4 * time.Hour), head0: at(2 * time.Hour)},
	}
	var (
		reference, running, stopped []store.StoreClient
		remoteWritten               []harnessSeries // both replicas' series as remote write sends them, one ingester
	)
	for _, r := range replicas {
		var data, full []harnessSeries
		for _, s := range eqDataset() {
			var samples []harnessSample
			for _, smp := range s.samples {
				smp.t += r.shift
				if smp.t < r.holeFrom || smp.t >= r.holeTo {
					samples = append(samples, smp)
				}
			}
			b := labels.NewBuilder(s.lset)
			r.ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
			data = append(data, harnessSeries{lset: s.lset, samples: samples})
			full = append(full, harnessSeries{lset: b.Labels(), samples: samples})
		}
		all := func(int64) bool { return true }
		reference = append(reference, harnessServe(t, harnessOpenDB(t, full, all)))
		blocks := harnessServeBucketExt(t, harnessOpenDB(t, data, func(ts int64) bool { return ts < r.uploaded }), r.ext, block.SidecarSource)
		live := harnessServe(t, harnessOpenDB(t, data, func(ts int64) bool { return ts >= r.head0 }), store.WithExternalLabels(r.ext))
		running = append(running, blocks, live)
		stopped = append(stopped, blocks)
		for _, s := range full {
			var samples []harnessSample
			for _, smp := range s.samples {
				if smp.t > r.switchT {
					samples = append(samples, smp)
				}
			}
			remoteWritten = append(remoteWritten, harnessSeries{lset: s.lset, samples: samples})
		}
	}
	ingester := harnessServe(t, harnessOpenDB(t, remoteWritten, func(int64) bool { return true }))
	running, stopped = append(running, ingester), append(stopped, ingester)

	logger := log.NewNopLogger()
	queryable := func(stores []store.StoreClient) *Queryable {
		proxy := store.NewProxy(func() []store.StoreClient { return stores }, 0, logger, nil)
		return NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), []string{"replica"}, nil)
	}
	ctx := tenancy.WithTenants(context.Background(), []string{harnessTenant})
	eng := promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil))
	h := &promqlHarness{ctx: ctx}
	ref := queryable(reference)
	queries := continuityQueries(t)
	evals := append(eqEvals(), harnessEval{name: "range-around-switches-15s", start: eqBase.Add(2*time.Hour + 50*time.Minute), end: eqBase.Add(3*time.Hour + 50*time.Minute), step: eqInterval})
	for _, phase := range []struct {
		name   string
		stores []store.StoreClient
	}{{"sidecars-running", running}, {"sidecars-stopped", stopped}} {
		t.Run(phase.name, func(t *testing.T) {
			got := queryable(phase.stores)
			points := 0
			for _, q := range queries {
				for _, ev := range evals {
					if !ev.instant && strings.HasSuffix(q.query, "]") {
						continue
					}
					refQ, refRes := h.run(eng, ref, q.query, ev)
					gotQ, gotRes := h.run(eng, got, q.query, ev)
					testutil.Ok(t, refRes.Err, "%s: the reference failed on %s", ev.name, q.query)
					if d := diffResults(refRes, gotRes, strings.HasPrefix(q.query, "sort("), &histogramCompare{}); d != "" {
						t.Errorf("%s (%s): %s\n  query: %s", ev.name, evalString(ev), d, q.query)
					}
					points += resultPoints(refRes)
					refQ.Close()
					gotQ.Close()
				}
			}
			testutil.Assert(t, points > 10000, "the queries returned only %d points", points)

			// Deduplicated: in replica 0's hole (and at replica 1's switch) the up series are there, once each, with no
			// replica label left.
			ups := 0
			for _, s := range eqDataset() {
				if s.lset.Get("__name__") == "up" {
					ups++
				}
			}
			for _, ts := range []time.Duration{3*time.Hour + 5*time.Minute, 3*time.Hour + 40*time.Minute} {
				q, res := h.run(eng, got, `count(up) by (replica)`, harnessEval{instant: true, start: eqBase.Add(ts)})
				testutil.Ok(t, res.Err)
				v := res.Value.(promql.Vector)
				testutil.Equals(t, 1, len(v), "one group: no replica label left")
				testutil.Assert(t, v[0].F > float64(ups)/2 && v[0].F <= float64(ups), "%v up series at %s, of %d", v[0].F, ts, ups)
				q.Close()
			}
		})
	}
}
