package sidecar

import (
	"context"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/stratametrics/strata/pkg/store"
)

// promDB is Prometheus seen as a store.TenantDB: series through remote read, label names and values and series
// without chunks through the HTTP API, the start time from its lowest-timestamp gauge.
type promDB struct {
	client    *Client
	startTime func() (int64, error)
	limits    func() ReadLimits
}

var _ store.TenantDB = (*promDB)(nil)

// ChunkQuerier returns a querier of [mint, maxt]; nothing is asked of Prometheus until it is used.
func (d *promDB) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return &promQuerier{client: d.client, mint: mint, maxt: maxt, limits: d.limits()}, nil
}

// StartTime is the oldest timestamp Prometheus holds (math.MaxInt64 while it holds nothing).
func (d *promDB) StartTime() (int64, error) { return d.startTime() }

type promQuerier struct {
	client     *Client
	mint, maxt int64
	limits     ReadLimits
}

// Select reads the matching series of [mint, maxt] through remote read (sorted by labels, whatever sortSeries
// says); with hints.Func "series" (a request that skips chunks) only their label sets, from /api/v1/series.
// The matchers are sent as they are: the caller has already removed those of external labels.
func (q *promQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	if hints != nil && hints.Func == "series" {
		sets, warns, err := q.client.Series(ctx, q.mint, q.maxt, 0, ms...)
		if err != nil {
			return storage.ErrChunkSeriesSet(err)
		}
		series := make([]storage.ChunkSeries, 0, len(sets))
		for _, l := range sets {
			series = append(series, &chunkSeries{lset: l})
		}
		return newSeriesSet(series, warningsToAnnotations(warns))
	}
	res, err := q.client.Read(ctx, q.mint, q.maxt, hints, q.limits, ms...)
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	return newSeriesSet(res.Series, res.Warnings)
}

func (q *promQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	names, warns, err := q.client.LabelNames(ctx, q.mint, q.maxt, limitOf(hints), ms...)
	return names, warningsToAnnotations(warns), err
}

func (q *promQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	values, warns, err := q.client.LabelValues(ctx, name, q.mint, q.maxt, limitOf(hints), ms...)
	return values, warningsToAnnotations(warns), err
}

func (q *promQuerier) Close() error { return nil }

func limitOf(h *storage.LabelHints) int {
	if h == nil {
		return 0
	}
	return h.Limit
}

func warningsToAnnotations(ws []string) annotations.Annotations {
	var a annotations.Annotations
	for _, w := range ws {
		a.Add(promWarning(w))
	}
	return a
}

// promWarning is a warning of Prometheus's HTTP API.
type promWarning string

func (w promWarning) Error() string { return "prometheus: " + string(w) }

// seriesSet is a storage.ChunkSeriesSet over series held in memory.
type seriesSet struct {
	series   []storage.ChunkSeries
	i        int
	warnings annotations.Annotations
}

func newSeriesSet(series []storage.ChunkSeries, warnings annotations.Annotations) *seriesSet {
	return &seriesSet{series: series, i: -1, warnings: warnings}
}

func (s *seriesSet) Next() bool {
	if s.i+1 >= len(s.series) {
		return false
	}
	s.i++
	return true
}
func (s *seriesSet) At() storage.ChunkSeries           { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return s.warnings }
