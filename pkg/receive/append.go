package receive

import (
	"context"
	"math/rand/v2"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
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

// discardReasons indexes appendErrors.discarded.
var discardReasons = [...]string{reasonPerUserSeriesLimit, reasonPerMetricSeriesLimit, reasonSampleOutOfOrder, reasonSampleTooOld, reasonSampleDuplicate, reasonInvalid}

// appendErrors is what one appender of a push appended and refused: the first error of each kind, which metrics
// hit the series limit, and how many samples were discarded for each reason (counted once the push commits, so
// that a shared attempt redone alone counts nothing twice).
type appendErrors struct {
	first         map[string]error
	order         []string
	limitedMetric map[string]int
	discarded     [len(discardReasons)]int
	nAppended     int
	minT          int64 // oldest sample appended
	// instanceMaxSeries: a series was not created, the ingester holding instance_limits.max_series.
	instanceMaxSeries bool
}

func (a *appendErrors) add(reason string, err error) {
	for k, r := range discardReasons {
		if r == reason {
			a.discarded[k]++
		}
	}
	if a.first == nil {
		a.first = map[string]error{}
	}
	if _, ok := a.first[reason]; !ok {
		a.first[reason] = err
		a.order = append(a.order, reason)
	}
}

func (a *appendErrors) appended(t int64) {
	if a.nAppended == 0 || t < a.minT {
		a.minT = t
	}
	a.nAppended++
}

// Push appends a tenant's series. Samples that fail (limits, out of order, too old, duplicates) are skipped
// and counted; the rest are committed, and the first failure is returned as a 400 *tenancy.Error, as Mimir
// does. An error other than *tenancy.Error means nothing was committed. Metric metadata is stored best effort
// (ingesterMetadata.add): it never fails a push.
func (i *Ingester) Push(ctx context.Context, tenant string, req *storepb.WriteRequest) error {
	return i.push(ctx, tenant, req, nil)
}

// pushRuns is Push of a request whose series were validated unchanged (as the distributor does) and received as
// runs (runs[k] series k's labels as received, or nil: see seriesRefs), for an in-process distributor.
func (i *Ingester) pushRuns(ctx context.Context, tenant string, req *storepb.WriteRequest, runs [][]byte) error {
	if len(runs) != len(req.GetTimeseries()) {
		return i.push(ctx, tenant, req, nil)
	}
	limits := newSeriesValidator(i.overrides.ForTenant(tenant), i.now()).labelLimits()
	// The series as the distributor looked them up here before it validated them (knownValid): not again.
	if rs, ok := takeLookedUp(ctx).(*receivedSeries); ok && rs.from != nil && len(rs.keys) == len(runs) && rs.limits == limits {
		rs.runs = runs
		defer i.received.put(rs)
		return i.push(ctx, tenant, req, rs)
	}
	rs := i.received.get(runs, limits)
	defer i.received.put(rs)
	return i.push(ctx, tenant, req, rs)
}

// push is Push of a request whose series were received as rs (nil: none is known by its bytes; see seriesRefs).
func (i *Ingester) push(ctx context.Context, tenant string, req *storepb.WriteRequest, rs *receivedSeries) error {
	if i.stopped.Load() {
		return status.Error(codes.Unavailable, "ingester is shutting down")
	}
	if i.metadata.add(tenant, req.GetMetadata()); len(req.GetTimeseries()) == 0 {
		return nil // metadata only: no TSDB to open
	}
	if limit := i.cfg.InstanceLimits.MaxIngestionRate; limit > 0 && i.ingestionRate.perSecond(i.now()) >= limit {
		i.metrics.rejectedIngestionRate.Inc()
		return instanceMaxIngestionRateError(limit)
	}
	u, err := i.getOrOpen(tenant, i.cfg.InstanceLimits.MaxTenants)
	if err != nil {
		return err
	}
	u.closeMtx.RLock()
	if u.closed { // closed as idle between the lookup and now: open it again
		u.closeMtx.RUnlock()
		return i.push(ctx, tenant, req, rs)
	}
	defer u.closeMtx.RUnlock()
	if rs != nil && rs.from != u.refs {
		u.refs.lookup(rs) // references are of one TSDB: this one's
	}
	u.lastWrite.Store(i.now().UnixNano())
	// Pushes that only append to existing series run concurrently; a push that creates series runs alone.
	// Prometheus's head logs a new series to the WAL when the appender that created it commits, so a
	// concurrent appender that found the series could commit samples before that record, and a WAL replay
	// after a crash would drop those acknowledged samples as referring to an unknown series. A shared push
	// appends by labels and the TSDB finds each series in one lookup; the TSDB asks before it creates one
	// (PreCreation), and while shared pushes run it is refused: the push is rolled back and redone alone.
	u.appendMtx.RLock()
	u.sharedAppends.Add(1)
	exclusive, err := i.appendRequest(ctx, tenant, u, req, rs, true)
	u.sharedAppends.Add(-1)
	u.appendMtx.RUnlock()
	if exclusive {
		u.appendMtx.Lock()
		_, err = i.appendRequest(ctx, tenant, u, req, rs, false)
		u.appendMtx.Unlock()
	}
	return err
}

// errSeriesNeedsExclusive is PreCreation's answer while shared pushes run: the series is created by the same
// push redone alone.
var errSeriesNeedsExclusive = errors.New("new series: append alone")

// appendRequest appends a request in one appender and commits it. With shared, series are looked up by the
// TSDB as their samples are appended, and it rolls back and reports needExclusive as soon as one does not
// exist yet. Without, every series is looked up first and a new one gets labels of its own. A series known by
// its received labels (rs, looked up in u.refs) is appended by its reference alone, and the references of the
// others are recorded once the request is committed.
func (i *Ingester) appendRequest(ctx context.Context, tenant string, u *userTSDB, req *storepb.WriteRequest, rs *receivedSeries, shared bool) (needExclusive bool, err error) {
	var (
		app  = u.db.Appender(ctx)
		errs appendErrors
		b    = labels.NewScratchBuilder(16)
	)
	tss := req.GetTimeseries()
	sc := i.appendScratch.get(len(tss))
	defer i.appendScratch.put(sc)
	if shared {
		// The lookup label set is built into one reused buffer (Overwrite): the TSDB keeps no labels it is given
		// for a series that exists, and creates none here. The TSDB looks a series up by reference first, then
		// by labels: every series not known by reference is given one none has (the head numbers series from
		// 1), in a stripe of the head chosen per push, so that the first lookup misses in a map already in the
		// cache and concurrent pushes do not all take one stripe's lock (reference 0's).
		var (
			scratch labels.Labels
			miss    = storage.SeriesRef(1<<63 | rand.Uint64N(1<<32))
			lz      = lazyLabels{b: &b, lset: &scratch, miss: miss}
		)
		for k, ts := range tss {
			known := rs.knownRef(k)
			ref, lset, byRef := known, labels.EmptyLabels(), &lz
			lz.run = rs.run(k)
			if ref == 0 {
				buildLabels(&b, ts, rs.run(k), &scratch)
				ref, lset, byRef = miss, scratch, nil
			}
			needExclusive, got := i.appendSeries(app, tenant, ts, lset, ref, &errs, byRef)
			if needExclusive {
				if err := app.Rollback(); err != nil {
					return false, status.Errorf(codes.Internal, "roll back samples of tenant %s: %v", tenant, err)
				}
				return true, nil
			}
			sc.refs[k] = 0
			if got != known && got != miss {
				sc.refs[k] = got
			}
		}
		err := i.commit(tenant, u, app, &errs)
		u.refs.add(rs, sc.refs, u.refsLimit())
		return false, err
	}
	// Every series is looked up before anything is appended; one that exists is then appended with the TSDB's
	// own labels (GetRef returns them), and only a new one gets a copy of its own, which the TSDB keeps.
	getRef := app.(storage.GetRef)
	lsets, refs := sc.lsets, sc.refs
	var scratch labels.Labels
	for k, ts := range tss {
		buildLabels(&b, ts, rs.run(k), &scratch)
		ref, lset := getRef.GetRef(scratch, scratch.Hash())
		if ref == 0 {
			lset = scratch.Copy()
		}
		lsets[k], refs[k] = lset, ref
	}
	for k, ts := range tss {
		_, refs[k] = i.appendSeries(app, tenant, ts, lsets[k], refs[k], &errs, nil)
		if refs[k] == rs.knownRef(k) {
			refs[k] = 0 // recorded already
		}
	}
	err = i.commit(tenant, u, app, &errs)
	// A series created here is in the head whether the commit succeeded or not (as Prometheus's rollback
	// leaves it): its reference is good either way.
	u.refs.add(rs, refs, u.refsLimit())
	return false, err
}

// lazyLabels builds the label set of a series appended by reference when it is needed after all: an append
// failed (its error names the series), or the series is no longer in the head (appended again by labels,
// with reference miss).
type lazyLabels struct {
	b    *labels.ScratchBuilder
	lset *labels.Labels
	miss storage.SeriesRef
	run  []byte // the series' label run, if it was decoded without its labels
}

// buildLabels overwrites lset with the series' labels, sorted: those of ts, or, for a series decoded without
// them (ts.Labels nil: known by its label run, skipKnownLabels), those of run. The labels alias the request's
// bytes, as the decoded ones do.
func buildLabels(b *labels.ScratchBuilder, ts *prompb.TimeSeries, run []byte, lset *labels.Labels) {
	b.Reset()
	if ts.Labels == nil && len(run) > 0 {
		sorted, prev := true, ""
		err := remotewrite.RangeLabelRun(run, func(name, value string) {
			sorted = sorted && (prev == "" || prev < name)
			prev = name
			b.Add(name, value)
		})
		if err == nil {
			if !sorted { // never: a series is known by labels validated unchanged, sorted
				b.Sort()
			}
			b.Overwrite(lset)
			return
		}
		b.Reset()
	}
	sorted := true
	for j, l := range ts.GetLabels() {
		b.Add(l.GetName(), l.GetValue())
		sorted = sorted && (j == 0 || ts.Labels[j-1].GetName() < l.GetName())
	}
	if !sorted { // validation sorts them: only a caller of Push that did not validate gets here
		b.Sort()
	}
	b.Overwrite(lset)
}

// appendSeries appends a series' samples and histograms, recording what fails in errs, and returns the
// series' reference (ref when nothing was appended). It reports needExclusive, with the rest of the series not
// appended, when the TSDB refused to create the series (errSeriesNeedsExclusive).
//
// With lz, the series is appended by its reference ref alone, lset empty (seriesRefs): its labels are built by
// lz if an append fails, and when the head no longer has the series (an append by a reference it does not know and no labels
// is refused as an invalid sample, before anything else) the append is redone by labels.
func (i *Ingester) appendSeries(app storage.Appender, tenant string, ts *prompb.TimeSeries, lset labels.Labels, ref storage.SeriesRef, errs *appendErrors, lz *lazyLabels) (needExclusive bool, _ storage.SeriesRef) {
	// byLabels turns an append by reference into one by labels after its error err, and reports whether it
	// is to be redone.
	byLabels := func(err error) bool {
		if lz == nil {
			return false
		}
		buildLabels(lz.b, ts, lz.run, lz.lset)
		lset = *lz.lset
		miss := lz.miss
		lz = nil // once
		if errors.Is(err, tsdb.ErrInvalidSample) {
			ref = miss
			return true
		}
		return false
	}
	var err error
	samples := ts.GetSamples()
	for k := 0; k < len(samples); k++ {
		s := samples[k]
		var next storage.SeriesRef
		if err = checkNotAncient(s.GetTimestamp()); err == nil {
			next, err = app.Append(ref, lset, s.GetTimestamp(), s.GetValue())
		}
		if err == nil {
			ref = next
			errs.appended(s.GetTimestamp())
			continue
		}
		if byLabels(err) {
			k--
			continue
		}
		if errors.Is(err, errSeriesNeedsExclusive) {
			return true, ref
		}
		if i.handleAppendErr(tenant, lset, s.GetTimestamp(), err, errs) {
			return false, ref
		}
	}
	hs := ts.GetHistograms()
	for k := 0; k < len(hs); k++ {
		h := hs[k]
		var next storage.SeriesRef
		if err = checkNotAncient(h.GetTimestamp()); err == nil {
			ih, fh := HistogramFromPB(h)
			next, err = app.AppendHistogram(ref, lset, h.GetTimestamp(), ih, fh)
		}
		if err == nil {
			ref = next
			errs.appended(h.GetTimestamp())
			continue
		}
		if byLabels(err) {
			k--
			continue
		}
		if errors.Is(err, errSeriesNeedsExclusive) {
			return true, ref
		}
		if i.handleAppendErr(tenant, lset, h.GetTimestamp(), err, errs) {
			return false, ref
		}
	}
	return false, ref
}

// commit commits a push's appender and then counts what it appended and discarded.
func (i *Ingester) commit(tenant string, u *userTSDB, app storage.Appender, errs *appendErrors) error {
	// Commits of one tenant are serialized: Commit writes the WAL and then the head, so two concurrent commits to
	// one series (a replica write overtaken by the next push) could reach the WAL in one order and the head in
	// the other, and a replay would then drop a sample the head had accepted.
	u.commitMtx.Lock()
	err := app.Commit()
	u.commitMtx.Unlock()
	for r, n := range errs.discarded {
		if n > 0 {
			i.discard(tenant, discardReasons[r], n)
		}
	}
	if errs.nAppended > 0 {
		// After the commit, whether it failed or not (conservative): see lateWrites.record.
		i.lateWrites.record(tenant, errs.minT)
		if i.ingestionRate != nil {
			i.ingestionRate.add(i.now(), errs.nAppended)
		}
	}
	if err != nil {
		return status.Errorf(codes.Internal, "commit samples of tenant %s: %v", tenant, err)
	}
	i.metrics.appendedSamples.WithLabelValues(tenant).Add(float64(errs.nAppended))
	i.metrics.activeSeries.WithLabelValues(tenant).Set(float64(u.db.Head().NumSeries()))
	return i.pushError(tenant, u, errs)
}

// handleAppendErr records a failed append in errs and reports whether the rest of the series should be skipped.
func (i *Ingester) handleAppendErr(tenant string, lset labels.Labels, t int64, err error, errs *appendErrors) bool {
	series := lset.String()
	switch {
	case errors.Is(err, errInstanceMaxSeries):
		errs.instanceMaxSeries = true
		return true
	case errors.Is(err, errPerUserSeriesLimit):
		if errs.limitedMetric == nil {
			errs.limitedMetric = map[string]int{}
		}
		errs.limitedMetric[lset.Get(model.MetricNameLabel)]++
		errs.add(reasonPerUserSeriesLimit, nil)
		return true
	case errors.Is(err, errPerMetricSeriesLimit):
		errs.add(reasonPerMetricSeriesLimit, tenancy.NewMaxSeriesPerMetricError(i.overrides.MaxGlobalSeriesPerMetric(tenant), lset.Get(model.MetricNameLabel)))
		return true
	case errors.Is(err, storage.ErrOutOfOrderSample), errors.Is(err, storage.ErrTooOldSample):
		errs.add(reasonSampleOutOfOrder, tenancy.NewSampleOutOfOrderError(t, series))
	case errors.Is(err, storage.ErrOutOfBounds):
		errs.add(reasonSampleTooOld, tenancy.NewSampleTimestampTooOldError(t, series))
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		errs.add(reasonSampleDuplicate, tenancy.NewSampleDuplicateTimestampError(t, series))
	default:
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
	if errs.instanceMaxSeries {
		// This replica's failure, not the client's: before any 4xx of the same push, so that the client is not
		// told its samples of new series were refused for good.
		i.metrics.rejectedMaxSeries.Inc()
		return instanceMaxSeriesError(i.cfg.InstanceLimits.MaxSeries)
	}
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
