package query

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// Federated reads (X-Scope-OrgID "a|b"), Mimir's tenant federation: each tenant is read on its own, exactly as a
// request naming only it would be (its stores, its replica labels, its per-query limits), and every series of
// the answer carries the tenant it came from in FederationTenantLabel. A request naming one tenant is not
// federated: its series get no such label.
const (
	// FederationTenantLabel is the label a federated read adds to each series: its tenant. Matchers on it choose
	// the tenants read.
	FederationTenantLabel = "__tenant_id__"
	// FederationOriginalTenantLabel holds the value of a series' own FederationTenantLabel, which the tenant's
	// label replaces; matchers on it select on that original label.
	FederationOriginalTenantLabel = "original_" + FederationTenantLabel

	// maxFederationConcurrency bounds the tenants of one federated read that are read at once.
	maxFederationConcurrency = 16
)

// tenantQueriers returns the querier of each tenant of a federated read, created on first use: each counts its
// tenant's per-query limits (max_fetched_series_per_query, …) over all the Selects of the query.
func (q *querier) tenantQueriers(tenants []string) []*querier {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if q.byTenant == nil {
		q.byTenant = map[string]*querier{}
	}
	out := make([]*querier, len(tenants))
	for i, t := range tenants {
		sub, ok := q.byTenant[t]
		if !ok {
			sub = &querier{q: q.q, mint: q.mint, maxt: q.maxt}
			q.byTenant[t] = sub
		}
		out[i] = sub
	}
	return out
}

// federatedMatchers splits a federated read's matchers: those on FederationTenantLabel choose the tenants (kept,
// in their order); those on FederationOriginalTenantLabel are rewritten onto the series' own
// FederationTenantLabel; the others are passed on as they are.
func federatedMatchers(tenants []string, ms []*labels.Matcher) (kept []string, rest []*labels.Matcher, err error) {
	kept = slices.Clone(tenants)
	rest = make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		switch m.Name {
		case FederationTenantLabel:
			kept = slices.DeleteFunc(kept, func(t string) bool { return !m.Matches(t) })
		case FederationOriginalTenantLabel:
			rm, err := labels.NewMatcher(m.Type, FederationTenantLabel, m.Value)
			if err != nil {
				return nil, nil, errors.Wrapf(err, "matcher on %s", FederationOriginalTenantLabel)
			}
			rest = append(rest, rm)
		default:
			rest = append(rest, m)
		}
	}
	return kept, rest, nil
}

// withTenantLabel returns lset with FederationTenantLabel set to tenant; a FederationTenantLabel the series had
// is kept as FederationOriginalTenantLabel.
func withTenantLabel(b *labels.Builder, lset labels.Labels, tenant string) labels.Labels {
	b.Reset(lset)
	if v := lset.Get(FederationTenantLabel); v != "" {
		b.Set(FederationOriginalTenantLabel, v)
	}
	b.Set(FederationTenantLabel, tenant)
	return b.Labels()
}

// forEachTenant runs f for each tenant with its querier and a context naming that tenant only, at most
// maxFederationConcurrency at once, and returns the first error in the tenants' order.
func (q *querier) forEachTenant(ctx context.Context, tenants []string, f func(ctx context.Context, i int, sub *querier) error) error {
	subs := q.tenantQueriers(tenants)
	errs := make([]error, len(tenants))
	sem := make(chan struct{}, maxFederationConcurrency)
	var wg sync.WaitGroup
	for i, t := range tenants {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(tenancy.WithTenants(ctx, []string{t}), i, subs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return errors.Wrapf(err, "tenant %s", tenants[i])
		}
	}
	return nil
}

// selectFederated is Select for a request naming several tenants.
func (q *querier) selectFederated(ctx context.Context, tenants []string, hints *storage.SelectHints, ms []*labels.Matcher) storage.SeriesSet {
	kept, rest, err := federatedMatchers(tenants, ms)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if len(kept) == 0 {
		return storage.EmptySeriesSet()
	}
	if len(rest) == 0 {
		// The stores refuse a Select without matchers; {__tenant_id__="a"} means every series of a.
		rest = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")}
	}
	perTenant := make([][]storage.Series, len(kept))
	warnings := make([]annotations.Annotations, len(kept))
	err = q.forEachTenant(ctx, kept, func(ctx context.Context, i int, sub *querier) error {
		set := sub.Select(ctx, true, hints, rest...)
		b := labels.NewBuilder(labels.EmptyLabels())
		for set.Next() {
			s := set.At()
			perTenant[i] = append(perTenant[i], &tenantSeries{Series: s, lset: withTenantLabel(b, s.Labels(), kept[i])})
		}
		warnings[i] = set.Warnings()
		return set.Err()
	})
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	var (
		all []storage.Series
		ws  annotations.Annotations
	)
	for i := range kept {
		all = append(all, perTenant[i]...)
		ws.Merge(warnings[i])
	}
	// Adding a label can change the order of label sets: sorted again.
	sort.Slice(all, func(i, j int) bool { return labels.Compare(all[i].Labels(), all[j].Labels()) < 0 })
	return &seriesSlice{series: all, warnings: ws}
}

// labelNamesFederated is LabelNames for a request naming several tenants: the union of the tenants' names (a
// series' own FederationTenantLabel as FederationOriginalTenantLabel) and FederationTenantLabel.
func (q *querier) labelNamesFederated(ctx context.Context, tenants []string, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	kept, rest, err := federatedMatchers(tenants, ms)
	if err != nil || len(kept) == 0 {
		return nil, nil, err
	}
	perTenant := make([][]string, len(kept))
	warnings := make([]annotations.Annotations, len(kept))
	err = q.forEachTenant(ctx, kept, func(ctx context.Context, i int, sub *querier) error {
		var err error
		perTenant[i], warnings[i], err = sub.LabelNames(ctx, hints, rest...)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	names := []string{FederationTenantLabel}
	var ws annotations.Annotations
	for i := range kept {
		for _, n := range perTenant[i] {
			if n == FederationTenantLabel {
				n = FederationOriginalTenantLabel
			}
			names = append(names, n)
		}
		ws.Merge(warnings[i])
	}
	return limitedUnion(names, hints), ws, nil
}

// labelValuesFederated is LabelValues for a request naming several tenants: FederationTenantLabel's values are
// the tenants its matchers keep (Mimir's answer); any other label's are the union of the tenants' values.
func (q *querier) labelValuesFederated(ctx context.Context, tenants []string, name string, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	kept, rest, err := federatedMatchers(tenants, ms)
	if err != nil || len(kept) == 0 {
		return nil, nil, err
	}
	switch name {
	case FederationTenantLabel:
		return limitedUnion(kept, hints), nil, nil
	case FederationOriginalTenantLabel:
		name = FederationTenantLabel
	}
	perTenant := make([][]string, len(kept))
	warnings := make([]annotations.Annotations, len(kept))
	err = q.forEachTenant(ctx, kept, func(ctx context.Context, i int, sub *querier) error {
		var err error
		perTenant[i], warnings[i], err = sub.LabelValues(ctx, name, hints, rest...)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	var (
		values []string
		ws     annotations.Annotations
	)
	for i := range kept {
		values = append(values, perTenant[i]...)
		ws.Merge(warnings[i])
	}
	return limitedUnion(values, hints), ws, nil
}

// limitedUnion sorts and de-duplicates ss, then keeps the hints' limit of them.
func limitedUnion(ss []string, hints *storage.LabelHints) []string {
	ss = slices.Compact(slices.Sorted(slices.Values(ss)))
	if hints != nil && hints.Limit > 0 && len(ss) > hints.Limit {
		ss = ss[:hints.Limit]
	}
	return ss
}

// tenantSeries is a tenant's series with FederationTenantLabel added.
type tenantSeries struct {
	storage.Series
	lset labels.Labels
}

func (s *tenantSeries) Labels() labels.Labels { return s.lset }

// seriesSlice is a storage.SeriesSet over series already sorted.
type seriesSlice struct {
	series   []storage.Series
	cur      storage.Series
	warnings annotations.Annotations
}

func (s *seriesSlice) Next() bool {
	if len(s.series) == 0 {
		return false
	}
	s.cur, s.series = s.series[0], s.series[1:]
	return true
}

func (s *seriesSlice) At() storage.Series                { return s.cur }
func (s *seriesSlice) Err() error                        { return nil }
func (s *seriesSlice) Warnings() annotations.Annotations { return s.warnings }
