package receive

import (
	"context"
	"math"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Reasons the ingester discards samples for, counted in strata_discarded_samples_total.
const (
	reasonPerUserSeriesLimit   = "per_user_series_limit"
	reasonPerMetricSeriesLimit = "per_metric_series_limit"
	reasonSampleOutOfOrder     = "sample_out_of_order"
	reasonSampleTooOld         = "sample_too_old"
	reasonSampleDuplicate      = "sample_duplicate_timestamp"
	reasonInvalid              = "invalid_sample"
)

// appendErrors keeps the first error of each kind in a push, and which metrics hit the series limit.
type appendErrors struct {
	first         map[string]error
	order         []string
	limitedMetric map[string]int
}

func (a *appendErrors) add(reason string, err error) {
	if a.first == nil {
		a.first = map[string]error{}
	}
	if _, ok := a.first[reason]; !ok {
		a.first[reason] = err
		a.order = append(a.order, reason)
	}
}

// Push appends a tenant's series. Samples that fail (limits, out of order, too old, duplicates) are skipped
// and counted; the rest are committed, and the first failure is returned as a 400 *tenancy.Error, as Mimir
// does. An error other than *tenancy.Error means nothing was committed. Metric metadata is stored best effort
// (ingesterMetadata.add): it never fails a push.
func (i *Ingester) Push(ctx context.Context, tenant string, req *storepb.WriteRequest) error {
	if i.stopped.Load() {
		return status.Error(codes.Unavailable, "ingester is shutting down")
	}
	if i.metadata.add(tenant, req.GetMetadata()); len(req.GetTimeseries()) == 0 {
		return nil // metadata only: no TSDB to open
	}
	u, err := i.getOrOpen(tenant)
	if err != nil {
		return err
	}
	u.closeMtx.RLock()
	if u.closed { // closed as idle between the lookup and now: open it again
		u.closeMtx.RUnlock()
		return i.Push(ctx, tenant, req)
	}
	defer u.closeMtx.RUnlock()
	u.lastWrite.Store(i.now().UnixNano())
	// Pushes that only append to existing series run concurrently; a push that creates series runs alone.
	// Prometheus's head logs a new series to the WAL when the appender that created it commits, so a
	// concurrent appender that found the series could commit samples before that record, and a WAL replay
	// after a crash would drop those acknowledged samples as referring to an unknown series.
	u.appendMtx.RLock()
	exclusive, err := i.appendRequest(ctx, tenant, u, req, true)
	u.appendMtx.RUnlock()
	if exclusive {
		u.appendMtx.Lock()
		_, err = i.appendRequest(ctx, tenant, u, req, false)
		u.appendMtx.Unlock()
	}
	return err
}

// appendRequest appends a request in one appender and commits it. With onlyExisting it rolls back and reports
// needExclusive as soon as a series does not exist yet.
func (i *Ingester) appendRequest(ctx context.Context, tenant string, u *userTSDB, req *storepb.WriteRequest, onlyExisting bool) (needExclusive bool, err error) {
	var (
		app      = u.db.Appender(ctx)
		getRef   = app.(storage.GetRef)
		errs     appendErrors
		appended int
		minT     = int64(math.MaxInt64) // oldest sample appended
		b        = labels.NewScratchBuilder(16)
	)
	tss := req.GetTimeseries()
	sc := i.appendScratch.get(len(tss))
	defer i.appendScratch.put(sc)
	lsets, refs := sc.lsets, sc.refs
	// Every series is looked up before anything is appended: a push that finds a new series with onlyExisting
	// is then redone exclusively with nothing counted twice. The lookup label set is built into one reused
	// buffer (Overwrite); a series that exists is then appended with the TSDB's own labels (GetRef returns
	// them), and only a new one gets a copy of its own, which the TSDB keeps: no allocation per known series.
	var scratch labels.Labels
	for k, ts := range tss {
		b.Reset()
		sorted := true
		for j, l := range ts.GetLabels() {
			b.Add(l.GetName(), l.GetValue())
			sorted = sorted && (j == 0 || ts.Labels[j-1].GetName() < l.GetName())
		}
		if !sorted { // validation sorts them: only a caller of Push that did not validate gets here
			b.Sort()
		}
		b.Overwrite(&scratch)
		ref, lset := getRef.GetRef(scratch, scratch.Hash())
		if ref == 0 {
			if onlyExisting {
				if err := app.Rollback(); err != nil {
					return false, status.Errorf(codes.Internal, "roll back samples of tenant %s: %v", tenant, err)
				}
				return true, nil
			}
			lset = scratch.Copy()
		}
		lsets[k], refs[k] = lset, ref
	}
	for k, ts := range tss {
		lset, ref := lsets[k], refs[k]
		skipSeries := false
		for _, s := range ts.GetSamples() {
			if err = checkNotAncient(s.GetTimestamp()); err == nil {
				ref, err = app.Append(ref, lset, s.GetTimestamp(), s.GetValue())
			}
			if err == nil {
				appended++
				minT = min(minT, s.GetTimestamp())
				continue
			}
			if skipSeries = i.handleAppendErr(tenant, lset, s.GetTimestamp(), err, &errs); skipSeries {
				break
			}
		}
		if skipSeries {
			continue
		}
		for _, h := range ts.GetHistograms() {
			if err = checkNotAncient(h.GetTimestamp()); err == nil {
				ih, fh := HistogramFromPB(h)
				ref, err = app.AppendHistogram(ref, lset, h.GetTimestamp(), ih, fh)
			}
			if err == nil {
				appended++
				minT = min(minT, h.GetTimestamp())
				continue
			}
			if i.handleAppendErr(tenant, lset, h.GetTimestamp(), err, &errs) {
				break
			}
		}
	}
	// Commits of one tenant are serialized: Commit writes the WAL and then the head, so two concurrent commits to
	// one series (a replica write overtaken by the next push) could reach the WAL in one order and the head in
	// the other, and a replay would then drop a sample the head had accepted.
	u.commitMtx.Lock()
	err = app.Commit()
	u.commitMtx.Unlock()
	if appended > 0 {
		// After the commit, whether it failed or not (conservative): see lateWrites.record.
		i.lateWrites.record(tenant, minT)
	}
	if err != nil {
		return false, status.Errorf(codes.Internal, "commit samples of tenant %s: %v", tenant, err)
	}
	i.metrics.appendedSamples.WithLabelValues(tenant).Add(float64(appended))
	i.metrics.activeSeries.WithLabelValues(tenant).Set(float64(u.db.Head().NumSeries()))
	return false, i.pushError(tenant, u, &errs)
}

// handleAppendErr counts a failed append and reports whether the rest of the series should be skipped.
func (i *Ingester) handleAppendErr(tenant string, lset labels.Labels, t int64, err error, errs *appendErrors) bool {
	series := lset.String()
	switch {
	case errors.Is(err, errPerUserSeriesLimit):
		i.discard(tenant, reasonPerUserSeriesLimit, 1)
		if errs.limitedMetric == nil {
			errs.limitedMetric = map[string]int{}
		}
		errs.limitedMetric[lset.Get(model.MetricNameLabel)]++
		errs.add(reasonPerUserSeriesLimit, nil)
		return true
	case errors.Is(err, errPerMetricSeriesLimit):
		i.discard(tenant, reasonPerMetricSeriesLimit, 1)
		errs.add(reasonPerMetricSeriesLimit, tenancy.NewMaxSeriesPerMetricError(i.overrides.MaxGlobalSeriesPerMetric(tenant), lset.Get(model.MetricNameLabel)))
		return true
	case errors.Is(err, storage.ErrOutOfOrderSample), errors.Is(err, storage.ErrTooOldSample):
		i.discard(tenant, reasonSampleOutOfOrder, 1)
		errs.add(reasonSampleOutOfOrder, tenancy.NewSampleOutOfOrderError(t, series))
	case errors.Is(err, storage.ErrOutOfBounds):
		i.discard(tenant, reasonSampleTooOld, 1)
		errs.add(reasonSampleTooOld, tenancy.NewSampleTimestampTooOldError(t, series))
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		i.discard(tenant, reasonSampleDuplicate, 1)
		errs.add(reasonSampleDuplicate, tenancy.NewSampleDuplicateTimestampError(t, series))
	default:
		i.discard(tenant, reasonInvalid, 1)
		errs.add(reasonInvalid, &tenancy.Error{ID: tenancy.IDLabelInvalid, Status: 400, Msg: errors.Wrapf(err, "append sample of series %.200s", series).Error()})
	}
	return false
}

func (i *Ingester) discard(tenant, reason string, n int) {
	if i.discarded != nil {
		i.discarded.Add(tenant, reason, n)
	}
}

// pushError returns the first error of the push; a series-limit error names the metric that had the most
// series refused, so the user knows where their new series come from, and the tenant's metric with the most
// series.
func (i *Ingester) pushError(tenant string, u *userTSDB, errs *appendErrors) error {
	if len(errs.order) == 0 {
		return nil
	}
	reason := errs.order[0]
	if reason == reasonPerUserSeriesLimit {
		top, topN := "", 0
		for m, n := range errs.limitedMetric {
			if n > topN || (n == topN && m < top) {
				top, topN = m, n
			}
		}
		u.mtx.Lock()
		most := u.top.name
		u.mtx.Unlock()
		return tenancy.NewMaxSeriesPerUserError(i.overrides.MaxGlobalSeriesPerUser(tenant), top, most)
	}
	return errs.first[reason]
}

// appendScratch is one push's per-series lookup results, pooled.
type appendScratch struct {
	lsets []labels.Labels
	refs  []storage.SeriesRef
}

// appendScratchPool pools appendScratch; slices longer than maxPooledScratch series are not kept.
type appendScratchPool struct{ p sync.Pool }

const maxPooledScratch = 100_000

func (p *appendScratchPool) get(n int) *appendScratch {
	sc, ok := p.p.Get().(*appendScratch)
	if !ok {
		sc = &appendScratch{}
	}
	if cap(sc.lsets) < n {
		sc.lsets, sc.refs = make([]labels.Labels, n), make([]storage.SeriesRef, n)
	}
	sc.lsets, sc.refs = sc.lsets[:n], sc.refs[:n]
	return sc
}

func (p *appendScratchPool) put(sc *appendScratch) {
	if cap(sc.lsets) > maxPooledScratch {
		return
	}
	clear(sc.lsets) // the TSDB's labels: not kept alive by the pool
	p.p.Put(sc)
}
