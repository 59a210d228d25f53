package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
)

// Families written by promtoolBlocks. Each of the counter and gauge families has nSeries series labelled
// job="job-<i%3>", instance="host-<i>"; the histogram family (classic buckets) has max(nSeries/10, 1) series.
const (
	sgCounter   = "app_requests_total"      // OpenMetrics family app_requests (counter)
	sgGauge     = "app_temperature_celsius" // gauge
	sgHistogram = "app_latency_seconds"     // histogram: _bucket{le}, _sum, _count
)

var sgBuckets = []float64{0.005, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// promtoolBlocks writes OpenMetrics text for nSeries series (a counter family and a gauge family, labels
// job/instance, values spread over many magnitudes, a counter reset, series that stop or start mid-range) plus a
// small classic-histogram family, sampled every step over [start, end), runs `promtool tsdb
// create-blocks-from openmetrics` into a temp dir and returns the block directories (sorted). start should be
// a whole second; promtool cuts blocks at 2h boundaries.
func promtoolBlocks(t *testing.T, start, end time.Time, step time.Duration, nSeries int) []string {
	t.Helper()
	testutil.Assert(t, step > 0 && end.After(start) && nSeries > 0, "bad promtoolBlocks arguments")
	dir := t.TempDir()
	var sb strings.Builder
	var times []int64
	for ts := start; ts.Before(end); ts = ts.Add(step) {
		times = append(times, ts.UnixMilli())
	}
	omTS := func(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) }
	omF := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	lbl := func(i int) string { return fmt.Sprintf(`job="job-%d",instance="host-%03d"`, i%3, i) }

	sb.WriteString("# HELP app_requests Requests served.\n# TYPE app_requests counter\n")
	for i := range nSeries {
		v := 0.0
		for k, ts := range times {
			// Increments spread over magnitudes, fractional for some series; series 1 resets half-way.
			inc := float64((i*7+k*13)%17) * math.Pow(10, float64(i%5-1))
			if i%4 == 3 {
				inc += 0.25
			}
			v += inc
			if i == 1 && k == len(times)/2 {
				v = inc
			}
			fmt.Fprintf(&sb, "%s{%s} %s %s\n", sgCounter, lbl(i), omF(v), omTS(ts))
		}
	}
	sb.WriteString("# HELP app_temperature_celsius A gauge.\n# TYPE app_temperature_celsius gauge\n")
	for i := range nSeries {
		for k, ts := range times {
			// Series 2 stops at a third of the range, series 4 starts at two thirds (staleness via lookback).
			if (i == 2 && k > len(times)/3) || (i == 4 && k < 2*len(times)/3) {
				continue
			}
			v := math.Sin(float64(k)/37+float64(i))*math.Pow(10, float64(i%7-2)) - float64(i%3)*0.1
			fmt.Fprintf(&sb, "%s{%s} %s %s\n", sgGauge, lbl(i), omF(v), omTS(ts))
		}
	}
	sb.WriteString("# HELP app_latency_seconds Latency.\n# TYPE app_latency_seconds histogram\n")
	for i := range max(nSeries/10, 1) {
		counts := make([]float64, len(sgBuckets)+1)
		sum, count := 0.0, 0.0
		var lines [][]string // per time: bucket lines, then sum, count
		for k := range times {
			// Observations this step: a few per bucket, shifting with time.
			for b := range sgBuckets {
				counts[b] += float64((i + k*b + b*b) % 5)
			}
			counts[len(sgBuckets)] += float64(k % 2) // few above the last bound: quantiles fall in finite buckets
			cum := 0.0
			var ls []string
			for b, c := range counts {
				cum += c
				le := "+Inf"
				if b < len(sgBuckets) {
					le = omF(sgBuckets[b])
				}
				ls = append(ls, fmt.Sprintf(`%s_bucket{%s,le="%s"} %s %s`, sgHistogram, lbl(i), le, omF(cum), omTS(times[k])))
			}
			count = cum
			sum += float64(k%7) * 0.37
			ls = append(ls, fmt.Sprintf("%s_sum{%s} %s %s", sgHistogram, lbl(i), omF(sum), omTS(times[k])),
				fmt.Sprintf("%s_count{%s} %s %s", sgHistogram, lbl(i), omF(count), omTS(times[k])))
			lines = append(lines, ls)
		}
		// One series at a time, in time order (each OpenMetrics series' samples must be ordered).
		for b := 0; b < len(counts)+2; b++ {
			for k := range times {
				sb.WriteString(lines[k][b] + "\n")
			}
		}
	}
	sb.WriteString("# EOF\n")

	in := filepath.Join(dir, "input.om")
	testutil.Ok(t, os.WriteFile(in, []byte(sb.String()), 0o600))
	out := filepath.Join(dir, "blocks")
	cmd := exec.Command(promTool(t, "promtool"), "tsdb", "create-blocks-from", "openmetrics", "--quiet", in, out)
	began := time.Now()
	b, err := cmd.CombinedOutput()
	t.Logf("promtool tsdb create-blocks-from openmetrics: %d bytes in %s", sb.Len(), time.Since(began))
	testutil.Ok(t, err, "promtool tsdb create-blocks-from openmetrics: %s", b)
	entries, err := os.ReadDir(out)
	testutil.Ok(t, err)
	var dirs []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(out, e.Name(), block.MetaFilename)); e.IsDir() && err == nil {
			dirs = append(dirs, filepath.Join(out, e.Name()))
		}
	}
	sort.Strings(dirs)
	testutil.Assert(t, len(dirs) > 0, "promtool wrote no blocks: %s", b)
	return dirs
}

// uploadBlocks copies block dirs into the filesystem bucket directory bucketDir under <tenant>/ with the Thanos
// meta section (labels: tenant_id=<tenant> plus extLabels, source "promtool", resolution 0), with
// block.Upload (meta.json last). Returns the block IDs, in the order of dirs.
func uploadBlocks(t *testing.T, bucketDir, tenant string, extLabels map[string]string, dirs []string) []string {
	t.Helper()
	testutil.Ok(t, os.MkdirAll(bucketDir, 0o750))
	fs, err := filesystem.NewBucket(bucketDir)
	testutil.Ok(t, err)
	bkt := objstore.NewPrefixedBucket(fs, tenant)
	var ids []string
	for _, dir := range dirs {
		meta, err := block.ReadMetaFromDir(dir)
		testutil.Ok(t, err)
		lset := map[string]string{"tenant_id": tenant}
		for k, v := range extLabels {
			lset[k] = v
		}
		meta.Thanos.Labels = lset
		meta.Thanos.Source = "promtool"
		meta.Thanos.Downsample.Resolution = 0
		testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), bkt, dir, meta))
		ids = append(ids, meta.ULID.String())
	}
	return ids
}

// refQuery evaluates query with a plain Prometheus engine (lookback 5m, Strata's default max samples and
// subquery step of 1m, @ and negative offsets on) over the block directories, copied to a temp dir and opened
// read-only: an instant query at start when step is 0, else a range query [start, end] by step. The result is
// in the shape the HTTP API decodes to (see promQuery), sorted by labels, so the two compare with
// testutil.Equals bit for bit: values are formatted as Prometheus's API formats them.
func refQuery(t *testing.T, dirs []string, query string, start, end time.Time, step time.Duration) []promSample {
	t.Helper()
	return refQueryExt(t, dirs, nil, query, start, end, step)
}

// refQueryExt is refQuery over blocks whose series all carry extLabels, as a Thanos-style store presents a
// block with external labels: the labels are added to every series (overriding a series' own), and a matcher
// on an external label is evaluated against its value (a mismatch selects nothing) instead of being passed on.
func refQueryExt(t *testing.T, dirs []string, extLabels map[string]string, query string, start, end time.Time, step time.Duration) []promSample {
	t.Helper()
	r := openRef(t, dirs, extLabels)
	defer r.close()
	return r.query(t, query, start, end, step)
}

// refStore is the reference of refQueryExt kept open, for many queries over the same blocks.
type refStore struct {
	blocks    []*tsdb.Block
	queryable storage.Queryable
	eng       *promql.Engine
}

// openRef copies the block directories to a temp dir and opens them for refStore.query; close it (it is also
// closed when the test ends).
func openRef(t *testing.T, dirs []string, extLabels map[string]string) *refStore {
	t.Helper()
	tmp := t.TempDir()
	r := &refStore{}
	t.Cleanup(r.close)
	for _, d := range dirs {
		dst := filepath.Join(tmp, filepath.Base(d))
		testutil.Ok(t, os.CopyFS(dst, os.DirFS(d)))
		b, err := tsdb.OpenBlock(nil, dst, nil, nil)
		testutil.Ok(t, err)
		r.blocks = append(r.blocks, b)
	}
	ext := labels.FromMap(extLabels)
	blocks := r.blocks
	r.queryable = storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		var qs []storage.Querier
		for _, b := range blocks {
			q, err := tsdb.NewBlockQuerier(b, mint, maxt)
			if err != nil {
				return nil, err
			}
			qs = append(qs, q)
		}
		q := storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge)
		if ext.Len() > 0 {
			q = extQuerier{Querier: q, ext: ext}
		}
		return q, nil
	})
	r.eng = promql.NewEngine(promql.EngineOpts{
		MaxSamples:               50_000_000,
		Timeout:                  time.Minute,
		LookbackDelta:            5 * time.Minute,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	})
	return r
}

func (r *refStore) close() {
	for _, b := range r.blocks {
		_ = b.Close()
	}
	r.blocks = nil
	if r.eng != nil {
		_ = r.eng.Close()
		r.eng = nil
	}
}

// query is refQuery's evaluation: instant at start when step is 0, else range [start, end] by step.
func (r *refStore) query(t *testing.T, query string, start, end time.Time, step time.Duration) []promSample {
	t.Helper()
	var (
		qry promql.Query
		err error
	)
	ctx := context.Background()
	if step == 0 {
		qry, err = r.eng.NewInstantQuery(ctx, r.queryable, nil, query, start)
	} else {
		qry, err = r.eng.NewRangeQuery(ctx, r.queryable, nil, query, start, end, step)
	}
	testutil.Ok(t, err, "reference query %s", query)
	defer qry.Close()
	res := qry.Exec(ctx)
	testutil.Ok(t, res.Err, "reference query %s", query)
	return promValueSamples(t, res.Value)
}

// extQuerier adds external labels to every series of its querier (see refQueryExt).
type extQuerier struct {
	storage.Querier
	ext labels.Labels
}

func (q extQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var rest []*labels.Matcher
	for _, m := range ms {
		if q.ext.Has(m.Name) {
			if !m.Matches(q.ext.Get(m.Name)) {
				return storage.EmptySeriesSet()
			}
			continue
		}
		rest = append(rest, m)
	}
	ss := q.Querier.Select(ctx, true, hints, rest...)
	var out []storage.Series
	for ss.Next() {
		s := ss.At()
		lb := labels.NewBuilder(s.Labels())
		q.ext.Range(func(l labels.Label) { lb.Set(l.Name, l.Value) })
		out = append(out, &storage.SeriesEntry{Lset: lb.Labels(), SampleIteratorFn: s.Iterator})
	}
	if err := ss.Err(); err != nil {
		return storage.ErrSeriesSet(err)
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &sliceSeriesSet{series: out, i: -1}
}

// sliceSeriesSet is a storage.SeriesSet over a sorted slice.
type sliceSeriesSet struct {
	series []storage.Series
	i      int
}

func (s *sliceSeriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *sliceSeriesSet) At() storage.Series                { return s.series[s.i] }
func (s *sliceSeriesSet) Err() error                        { return nil }
func (s *sliceSeriesSet) Warnings() annotations.Annotations { return nil }

func (q extQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if q.ext.Has(name) {
		return []string{q.ext.Get(name)}, nil, nil
	}
	return q.Querier.LabelValues(ctx, name, hints, ms...)
}

// promValueSamples converts an engine result to what the HTTP API's JSON decodes to, sorted by labels.
func promValueSamples(t *testing.T, v parser.Value) []promSample {
	t.Helper()
	ts := func(ms int64) any { return float64(ms) / 1000 }
	out := []promSample{}
	switch r := v.(type) {
	case promql.Vector:
		for _, s := range r {
			testutil.Assert(t, s.H == nil, "native histogram results are not compared")
			out = append(out, promSample{Metric: s.Metric.Map(), Value: [2]any{ts(s.T), promFloat(s.F)}})
		}
	case promql.Matrix:
		for _, s := range r {
			testutil.Assert(t, len(s.Histograms) == 0, "native histogram results are not compared")
			ps := promSample{Metric: s.Metric.Map()}
			for _, p := range s.Floats {
				ps.Values = append(ps.Values, [2]any{ts(p.T), promFloat(p.F)})
			}
			out = append(out, ps)
		}
	case promql.Scalar:
		out = append(out, promSample{Metric: map[string]string{}, Value: [2]any{ts(r.T), promFloat(r.V)}})
	default:
		t.Fatalf("unexpected result type %T", v)
	}
	sortSamples(out)
	return out
}

// promFloat formats a value as Prometheus's HTTP API does (util/jsonutil.MarshalFloat): shortest
// representation, in exponent form below 1e-6 and from 1e21 on in magnitude; +Inf, -Inf, NaN.
func promFloat(f float64) string {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.FormatFloat(f, format, -1, 64)
}

// sgMetric sums the values of the series of a Prometheus text metric family on a /metrics page whose labels
// include all of the given label pairs (e.g. `name="chunks"`).
func sgMetric(t *testing.T, metricsURL, name string, with ...string) float64 {
	t.Helper()
	code, body := httpGet(metricsURL, nil)
	testutil.Equals(t, 200, code, "GET %s", metricsURL)
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range with {
			if !strings.Contains(line, w) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		testutil.Ok(t, err, line)
		sum += v
	}
	return sum
}

// sgDiff describes the first difference between two results in refQuery's shape ("" when equal).
func sgDiff(want, got []promSample) string {
	if len(want) != len(got) {
		var w, g []string
		for _, s := range want {
			w = append(w, labels.FromMap(s.Metric).String())
		}
		for _, s := range got {
			g = append(g, labels.FromMap(s.Metric).String())
		}
		return fmt.Sprintf("%d series, want %d:\n got  %v\n want %v", len(got), len(want), g, w)
	}
	for i := range want {
		w, g := want[i], got[i]
		ls := labels.FromMap(w.Metric).String()
		if lg := labels.FromMap(g.Metric).String(); ls != lg {
			return fmt.Sprintf("series %d: %s, want %s", i, lg, ls)
		}
		if fmt.Sprint(w.Value) != fmt.Sprint(g.Value) {
			return fmt.Sprintf("%s: value %v, want %v", ls, g.Value, w.Value)
		}
		if len(w.Values) != len(g.Values) {
			return fmt.Sprintf("%s: %d points, want %d; got %v..%v, want %v..%v", ls, len(g.Values), len(w.Values), first(g.Values), last(g.Values), first(w.Values), last(w.Values))
		}
		for j := range w.Values {
			if fmt.Sprint(w.Values[j]) != fmt.Sprint(g.Values[j]) {
				return fmt.Sprintf("%s: point %d %v, want %v", ls, j, g.Values[j], w.Values[j])
			}
		}
	}
	return ""
}

func first(v [][2]any) any {
	if len(v) == 0 {
		return nil
	}
	return v[0]
}

func last(v [][2]any) any {
	if len(v) == 0 {
		return nil
	}
	return v[len(v)-1]
}
